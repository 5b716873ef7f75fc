"""Building a registered network from a :class:`~trustseg.models.config.NetConfig`, and what callers may ask
of a configuration before building it (its size multiple, its model's capabilities)."""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from trustseg.models.config import NetConfig
from trustseg.models.protocol import EXTRA_HEADS, require
from trustseg.models.registry import MODELS


def model_capabilities(name: str) -> frozenset[str]:
    """The optional capabilities (:mod:`trustseg.models.protocol`) the registered model ``name`` can offer."""
    return frozenset(MODELS.meta(name).get("capabilities", ()))


def require_capabilities(net: NetConfig, needed: Iterable[str], who: str) -> None:
    """Raise :class:`~trustseg.core.errors.ConfigError` unless the model ``net.name`` can offer ``needed``.

    ``who`` names the asker in the message, e.g. ``"method layer-ensemble"``.
    """
    require(net.name, model_capabilities(net.name), needed, who)


def size_multiple(net: NetConfig) -> int:
    """The size multiple of the network ``net`` describes (every spatial input size must be a multiple of it).

    Example:
        >>> size_multiple(NetConfig("unet", {"channels": [8, 16, 32]}))
        4
    """
    return int(net.typed_params.size_multiple)


def build_network(
    net: NetConfig,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    extra_outputs: dict[str, int] | None = None,
) -> nn.Module:
    """Build the network ``net.name`` from the registry (unknown names get a "did you mean" error).

    Args:
        net: Network configuration.
        spatial_dims: 2 or 3.
        in_channels: Image channels C.
        num_classes: K (background included).
        extra_outputs: name -> channels of additional output heads (needs the ``extra_heads`` capability).

    Returns:
        A freshly initialised module following :mod:`trustseg.models.protocol`: ``forward(x)`` gives logits
        ``(B, K, *spatial)`` for sizes that are multiples of its ``size_multiple``.
    """
    factory = MODELS.get(net.name)
    if extra_outputs:
        require_capabilities(net, {EXTRA_HEADS}, f"extra outputs {sorted(extra_outputs)}")
    return factory(net.typed_params, spatial_dims, in_channels, num_classes, extra_outputs)
