"""Uncertainty methods behind one interface (see :mod:`trustseg.methods.base`), registered by name in
:data:`METHODS`. Importing this package imports every module in it, so every method is registered."""

from trustseg.core.discover import import_submodules
from trustseg.methods.base import METHODS, Batch, Method, TrainContext, build_method

import_submodules(__name__, __path__)

__all__ = ["METHODS", "Batch", "Method", "TrainContext", "build_method"]
