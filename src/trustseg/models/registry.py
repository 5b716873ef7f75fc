"""Registry of network factories: name -> fn(net: NetConfig, spatial_dims, in_channels, num_classes,
extra_outputs: dict[str, int]) -> nn.Module."""

from trustseg.core.registry import Registry

MODELS: Registry = Registry("model")
