"""Uncertainty methods behind one interface (see :mod:`trustseg.methods.base`); registered in ``METHODS``."""
