"""Registries of uncertainty measures (per-pixel maps) and of aggregations (map -> one score per image)."""

from trustseg.core.registry import Registry

#: name -> fn(pred: Predictive, **kw) -> Tensor (B, *spatial)
MEASURES: Registry = Registry("measure")
#: name -> fn(umap: Tensor (B, *spatial), **kw) -> Tensor (B,)
AGGREGATORS: Registry = Registry("aggregator")
