"""Metrics: pure tensor functions (and fixed-size, sum-mergeable accumulators wrapping them), registered in
:data:`METRICS`. Importing this package imports every module in it."""

from trustseg.core.discover import import_submodules
from trustseg.metrics.registry import METRICS

import_submodules(__name__, __path__)

__all__ = ["METRICS"]
