"""Registry of network factories, with each model's metadata.

``MODELS.register(name, doc=..., params=ParamsClass, capabilities=frozenset(...))`` registers a factory
``fn(params, spatial_dims, in_channels, num_classes, extra_outputs: dict[str, int] | None) -> nn.Module``:

* ``params``: the model's frozen parameter dataclass (``net.params`` of a run config is checked against it); it
  exposes ``size_multiple`` (and ``num_heads`` for models with the ``deep_heads`` capability);
* ``capabilities``: the optional features of :mod:`trustseg.models.protocol` the model can offer.
"""

from trustseg.core.registry import Registry

MODELS: Registry = Registry("model")
