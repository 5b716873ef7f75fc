"""Network factories registered in :data:`trustseg.models.registry.MODELS`, and :func:`build_network`.

Import this module (``import trustseg.models.factory``) before looking names up in ``MODELS``;
:func:`build_network` does so itself.
"""

from __future__ import annotations

from torch import nn

from trustseg.models.config import NetConfig
from trustseg.models.registry import MODELS
from trustseg.models.unet import UNet


@MODELS.register("unet", doc="2D/3D U-Net (strided-conv encoder, transposed-conv decoder, deep and extra heads)")
def unet(
    net: NetConfig,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    extra_outputs: dict[str, int] | None = None,
) -> nn.Module:
    """Our :class:`~trustseg.models.unet.UNet`."""
    return UNet(spatial_dims, in_channels, num_classes, net, extra_outputs=extra_outputs)


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
        extra_outputs: name -> channels of additional 1x1 output heads (see :class:`UNet`).

    Returns:
        A freshly initialised module whose ``forward(x)`` gives logits ``(B, K, *spatial)``.
    """
    return MODELS.get(net.name)(net, spatial_dims, in_channels, num_classes, extra_outputs)
