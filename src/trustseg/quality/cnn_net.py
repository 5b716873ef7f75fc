"""The image-based quality network: a small 2D/3D CNN regressor from a channel stack to one quality value.

:class:`QualityNet` maps ``(B, C, *spatial)`` to ``(B,)``: ``depth`` conv-norm-act blocks (block ``i`` has
``width * 2**i`` channels; every block after the first halves the spatial size with a stride-2 convolution),
global average pooling of the last block and a linear head, followed by the output activation (sigmoid for a
Dice in [0, 1], softplus for a positive distance such as HD95).

It offers the network feature contract of :mod:`trustseg.models.protocol` (capability ``features``):
:meth:`QualityNet.feature_layers` names its blocks (``blocks.0`` ... ``blocks.{depth-1}``, as in
:meth:`~torch.nn.Module.named_modules`) so that Grad-CAM (:func:`trustseg.quality.explain.grad_cam`) can hook one,
and :meth:`QualityNet.forward_features` returns every block's feature map. It is not a segmentation network and
is not registered in :data:`trustseg.models.registry.MODELS`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from trustseg.core.errors import ConfigError
from trustseg.models.protocol import FEATURES

OUTPUTS = ("sigmoid", "softplus")


class ConvBlock(nn.Sequential):
    """``conv(3, stride) - BatchNorm - LeakyReLU - conv(3) - BatchNorm - LeakyReLU``, ``(B, C_in, *sp)`` ->
    ``(B, C_out, *ceil(sp / stride))``."""

    def __init__(self, c_in: int, c_out: int, spatial_dims: int, stride: int):
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        norm = nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d
        super().__init__(
            conv(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            norm(c_out),
            nn.LeakyReLU(0.01),
            conv(c_out, c_out, 3, padding=1, bias=False),
            norm(c_out),
            nn.LeakyReLU(0.01),
        )


class QualityNet(nn.Module):
    """A CNN regressor ``(B, C, *spatial) -> (B,)`` with the ``features`` capability.

    BatchNorm (not instance or group norm) is used on purpose: a per-sample normalisation would remove the global
    level of a channel (the mean uncertainty of a case), which is the strongest single cue of its quality.

    Args:
        in_channels: C, the channels of the input stack (:func:`trustseg.quality.cnn.qc_channels`).
        spatial_dims: 2 or 3.
        width: Channels of the first block; block ``i`` has ``width * 2**i``.
        depth: Number of blocks (``depth - 1`` stride-2 downsamplings).
        output: ``"sigmoid"`` (values in (0, 1): Dice) or ``"softplus"`` (values > 0: HD95).

    Raises:
        ConfigError: an argument out of range.

    Example:
        >>> import torch
        >>> net = QualityNet(3, spatial_dims=2, width=4, depth=2).eval()
        >>> net(torch.zeros(5, 3, 20, 12)).shape
        torch.Size([5])
        >>> list(net.feature_layers())
        ['blocks.0', 'blocks.1']
        >>> [tuple(f.shape) for f in net.forward_features(torch.zeros(1, 3, 20, 12)).values()]
        [(1, 4, 20, 12), (1, 8, 10, 6)]
    """

    capabilities = frozenset({FEATURES})

    def __init__(
        self, in_channels: int, spatial_dims: int = 2, width: int = 16, depth: int = 3, output: str = "sigmoid"
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"QualityNet: spatial_dims must be 2 or 3, got {spatial_dims!r}")
        if output not in OUTPUTS:
            raise ConfigError(f"QualityNet: output must be one of {OUTPUTS}, got {output!r}")
        for name, v in (("in_channels", in_channels), ("width", width), ("depth", depth)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"QualityNet: {name} must be a positive integer, got {v!r}")
        self.in_channels = in_channels
        self.spatial_dims = spatial_dims
        self.width = width
        self.depth = depth
        self.output = output
        chans = [width * 2**i for i in range(depth)]
        self.blocks = nn.ModuleList(
            ConvBlock(c_in, c_out, spatial_dims, 1 if i == 0 else 2)
            for i, (c_in, c_out) in enumerate(zip([in_channels, *chans[:-1]], chans))
        )
        self.head = nn.Linear(chans[-1], 1)

    @property
    def embedding_dim(self) -> int:
        """Channels of the last block (the length of :meth:`embed`'s vectors)."""
        return self.width * 2 ** (self.depth - 1)

    def feature_layers(self) -> dict[str, nn.Module]:
        """``{name: block}`` of every block in pass order, named as in :meth:`named_modules` (``blocks.i``)."""
        return {f"blocks.{i}": b for i, b in enumerate(self.blocks)}

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """Every block's feature map, ``{"blocks.i": (B, width * 2**i, *ceil(sp / 2**i))}``, in pass order."""
        out = {}
        for i, b in enumerate(self.blocks):
            x = b(x)
            out[f"blocks.{i}"] = x
        return out

    def embed(self, x: Tensor) -> Tensor:
        """The pooled features the head reads, ``(B, embedding_dim)`` (global average of the last block)."""
        for b in self.blocks:
            x = b(x)
        return x.flatten(2).mean(-1)

    def score(self, x: Tensor) -> Tensor:
        """The head's output before the activation, ``(B,)`` (what Grad-CAM differentiates)."""
        return self.head(self.embed(x)).squeeze(-1)

    def activate(self, z: Tensor) -> Tensor:
        """The output activation: ``sigmoid(z)`` or ``softplus(z)``."""
        return torch.sigmoid(z) if self.output == "sigmoid" else F.softplus(z)

    def forward(self, x: Tensor) -> Tensor:
        """Predicted quality ``(B,)`` of the stacks ``x`` ``(B, C, *spatial)``."""
        if x.dim() != self.spatial_dims + 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"QualityNet expects (B, {self.in_channels}, *spatial) with {self.spatial_dims} spatial axes, "
                f"got {tuple(x.shape)}"
            )
        return self.activate(self.score(x))

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"spatial_dims={self.spatial_dims}, depth={self.depth}, output={self.output}, params={n}"
