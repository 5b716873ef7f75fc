"""Uncertainty measures: pure functions of a :class:`~trustseg.core.predictive.Predictive`, registered in
:data:`MEASURES`; aggregations to one score per image in :data:`AGGREGATORS`."""

from trustseg.core.discover import import_submodules
from trustseg.measures.registry import AGGREGATORS, MEASURES

import_submodules(__name__, __path__)

__all__ = ["AGGREGATORS", "MEASURES"]
