"""Building blocks of :class:`~trustseg.models.unet.UNet`: normalisation, the convolution block, and the state of a
forward pass stopped part-way (:class:`ForwardState`)."""

from __future__ import annotations

from torch import Tensor, nn

from trustseg.core.errors import ConfigError


def conv_class(dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return nn.Conv2d if dims == 2 else nn.Conv3d


def norm_layer(kind: str, dims: int, channels: int) -> nn.Module:
    """The normalisation layer ``kind`` for ``channels`` features.

    ``instance`` (affine, no running statistics), ``batch``, ``group`` (8 groups, or the largest divisor of the
    channel count below 8) or ``none`` (identity).
    """
    if kind == "instance":
        return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if kind == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "group":
        groups = max(g for g in range(1, min(8, channels) + 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"net.params.norm must be instance, batch, group or none, got {kind!r}")


class ConvBlock(nn.Sequential):
    """``conv3 -> norm -> LeakyReLU`` twice, then optional element-wise dropout.

    Args:
        dims: 2 or 3.
        cin: Input channels.
        cout: Output channels.
        norm: Normalisation kind.
        stride: Stride of the first convolution (2 downsamples).
        dropout: Dropout probability at the end of the block (0: none).
    """

    def __init__(self, dims: int, cin: int, cout: int, norm: str, stride: int = 1, dropout: float = 0.0):
        conv = conv_class(dims)
        bias = norm == "none"
        layers: list[nn.Module] = [
            conv(cin, cout, 3, stride=stride, padding=1, bias=bias),
            norm_layer(norm, dims, cout),
            nn.LeakyReLU(0.01, inplace=True),
            conv(cout, cout, 3, padding=1, bias=bias),
            norm_layer(norm, dims, cout),
            nn.LeakyReLU(0.01, inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class ForwardState:
    """A U-Net forward pass stopped part-way, e.g. by :meth:`UNet.deterministic_prefix`.

    :meth:`UNet.stochastic_suffix` finishes it, any number of times: finishing never modifies the state.

    Attributes:
        h: The current activation ``(B, c, *sp)``: the output of layers ``0 .. layer-1`` of block ``block`` (or,
            when ``layer`` is 0, the output of block ``block - 1``; the input for block 0).
        feats: The encoder features ``[f_0, ...]`` computed so far.
        heads: Deep-head logits ``(B, K, *sp)`` computed so far (deep heads only), coarse -> fine.
        block: Index of the block the pass stopped in (encoder ``0 .. L-2``, bottleneck ``L-1``, decoder
            ``L .. 2L-2``; ``2L-1`` once every block ran).
        layer: Number of layers of block ``block`` already run.
    """

    def __init__(self, h: Tensor, feats: list[Tensor], heads: list[Tensor], block: int, layer: int):
        self.h = h
        self.feats = feats
        self.heads = heads
        self.block = block
        self.layer = layer

    @property
    def position(self) -> tuple[int, int]:
        """``(block, layer)``: where the pass stopped."""
        return self.block, self.layer

    def repeat(self, n: int) -> ForwardState:
        """The state of ``n`` copies of the batch, copy-major along the batch axis (``(B, ...)`` -> ``(n·B, ...)``)."""
        if n == 1:
            return self

        def rep(t: Tensor) -> Tensor:
            return t.repeat(n, *([1] * (t.dim() - 1)))

        return ForwardState(rep(self.h), [rep(f) for f in self.feats], [rep(t) for t in self.heads], *self.position)
