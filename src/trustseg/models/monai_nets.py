"""MONAI networks as trustseg backbones: ``monai.UNet``, ``monai.DynUNet``, ``monai.SegResNet``,
``monai.AttentionUnet`` and ``monai.SwinUNETR`` in :data:`~trustseg.models.registry.MODELS`.

Each has a frozen parameter dataclass holding MONAI's main constructor arguments with small defaults (checked
like every ``net.params``; ``net.name=monai.SegResNet net.params.init_filters=16``) and is wrapped in
:class:`~trustseg.models.monai_wrapper.MonaiNet`, which offers ``all_outputs``, ``extra_heads`` and ``dropout``.

Size multiples, from the architecture:

* ``monai.UNet``, ``monai.AttentionUnet``: ``∏ strides``;
* ``monai.DynUNet``: ``∏ strides`` (the first stride is usually 1);
* ``monai.SegResNet``: ``2^(len(blocks_down) - 1)``;
* ``monai.SwinUNETR``: ``patch_size^5`` (32 for the default patch size 2). It needs the ``einops`` package,
  which MONAI imports only when the network runs; without it the network is refused when it is built.

MONAI's AttentionUnet is built without the biases of the convolutions that a batch norm follows (they are
redundant and get no gradient: :func:`drop_biases_before_batchnorm`).

Extra heads are separate 1x1 convolutions on the input of the network's final 1x1 convolution (DynUNet,
SegResNet, AttentionUnet, SwinUNETR), or, for ``monai.UNet``, extra output channels of its last layer
(see :mod:`trustseg.models.monai_wrapper`). Dropout: ``dropout`` (0 = none) goes to MONAI's own argument
(``dropout``, ``dropout_prob`` for SegResNet, ``drop_rate`` for SwinUNETR) and ``dropout_where`` must be
``monai``: MONAI decides where it sits. ``mc-dropout`` places dropout with its own ``where`` parameter (``last``
by default, a U-Net placement), so with a MONAI network run it with ``method.params.where=null``.

Example:
    >>> from trustseg.models import NetConfig, build_network, size_multiple
    >>> size_multiple(NetConfig("monai.SegResNet", {"blocks_down": [1, 2, 2]}))
    4
    >>> net = build_network(NetConfig("monai.UNet", {"channels": [4, 8], "strides": [2]}), 2, 1, 3)
    >>> import torch
    >>> tuple(net(torch.zeros(1, 1, 8, 6)).shape)
    (1, 3, 8, 6)
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from monai.networks.nets import AttentionUnet, DynUNet, SegResNet, SwinUNETR
from monai.networks.nets import UNet as MonaiUNet
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from trustseg.core.errors import ConfigError
from trustseg.models.monai_wrapper import MONAI_CAPABILITIES, MonaiNet
from trustseg.models.registry import MODELS

MONAI_NORMS = ("instance", "batch", "group", "none")


def _ints(name: str, values: Sequence[int], low: int = 1, min_len: int = 1) -> tuple[int, ...]:
    out = tuple(int(v) for v in values)
    if len(out) < min_len or min(out, default=low) < low:
        raise ConfigError(f"net.params.{name} must hold at least {min_len} integer(s) >= {low}, got {list(out)}")
    return out


def _check_dropout(p: float, where: str) -> None:
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"net.params.dropout must be in [0, 1), got {p}")
    if where != "monai":
        raise ConfigError(
            f"net.params.dropout_where must be 'monai' for a MONAI network (MONAI places its dropout), got {where!r}; "
            "with mc-dropout set method.params.where=null"
        )


def _norm(norm: str) -> str | tuple:
    """trustseg's norm name -> MONAI's norm argument (group norm with 8 groups)."""
    if norm not in MONAI_NORMS:
        raise ConfigError(f"net.params.norm must be one of {', '.join(MONAI_NORMS)}, got {norm!r}")
    return {"group": ("group", {"num_groups": 8}), "none": ()}.get(norm, norm)


class _Strided:
    """Params of a network downsampling by ``strides``: its size multiple is their product."""

    strides: tuple[int, ...]

    @property
    def size_multiple(self) -> int:
        """``∏ strides``."""
        return math.prod(self.strides)


def _check_levels(params: Any, widths: str, first_strided: bool = False) -> None:
    """Normalise ``params.<widths>`` and ``params.strides`` to integer tuples and check that there is one stride
    per downsampling: ``len(widths) − 1``, or ``len(widths)`` when the first level has a stride too (DynUNet)."""
    object.__setattr__(params, widths, _ints(widths, getattr(params, widths), min_len=2))
    object.__setattr__(params, "strides", _ints("strides", params.strides, min_len=2 if first_strided else 1))
    n = len(getattr(params, widths))
    want, text = (n, f"len({widths}) = {n}") if first_strided else (n - 1, f"len({widths}) - 1 = {n - 1}")
    if len(params.strides) != want:
        raise ConfigError(f"net.params.strides must hold {text} strides")


@dataclass(frozen=True)
class MonaiUNetParams(_Strided):
    """``monai.UNet`` (:class:`monai.networks.nets.UNet`): residual units, strided down/up convolutions.

    Attributes:
        channels: Feature width per level (``len(strides) + 1`` of them).
        strides: Stride of each downsampling.
        num_res_units: Residual units per block (0 = plain convolutions).
        norm: instance, batch, group (8 groups) or none.
        dropout: Dropout probability in every block (0 = none).
        dropout_where: ``monai`` (MONAI places dropout in every convolution's ADN).
    """

    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 2
    norm: Literal["instance", "batch", "group", "none"] = "instance"
    dropout: float = 0.0
    dropout_where: str = "monai"

    def __post_init__(self) -> None:
        _check_levels(self, "channels")
        _norm(self.norm)
        _check_dropout(self.dropout, self.dropout_where)


@dataclass(frozen=True)
class AttentionUnetParams(_Strided):
    """``monai.AttentionUnet`` (:class:`monai.networks.nets.AttentionUnet`): U-Net with attention gates.

    Attributes:
        channels: Feature width per level (``len(strides) + 1``).
        strides: Stride of each downsampling.
        dropout: Dropout probability in every convolution block (0 = none).
        dropout_where: ``monai``.
    """

    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    dropout: float = 0.0
    dropout_where: str = "monai"

    def __post_init__(self) -> None:
        _check_levels(self, "channels")
        _check_dropout(self.dropout, self.dropout_where)


@dataclass(frozen=True)
class DynUNetParams(_Strided):
    """``monai.DynUNet`` (:class:`monai.networks.nets.DynUNet`, nnU-Net's architecture), isotropic strides.

    Attributes:
        filters: Feature width per level (``len(strides)`` of them).
        strides: Stride per level, the first usually 1 (full resolution).
        kernel_size: Convolution kernel size of every level.
        norm: instance, batch, group (8 groups) or none.
        res_block: Residual blocks instead of plain ones.
        dropout: Dropout probability in every block (0 = none).
        dropout_where: ``monai``.
    """

    filters: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (1, 2, 2, 2)
    kernel_size: int = 3
    norm: Literal["instance", "batch", "group", "none"] = "instance"
    res_block: bool = False
    dropout: float = 0.0
    dropout_where: str = "monai"

    def __post_init__(self) -> None:
        _check_levels(self, "filters", first_strided=True)
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ConfigError(f"net.params.kernel_size must be an odd integer >= 1, got {self.kernel_size}")
        if self.norm == "none":
            raise ConfigError("net.params.norm must be instance, batch or group for monai.DynUNet, got 'none'")
        _norm(self.norm)
        _check_dropout(self.dropout, self.dropout_where)


@dataclass(frozen=True)
class SegResNetParams:
    """``monai.SegResNet`` (:class:`monai.networks.nets.SegResNet`): residual encoder, light decoder.

    Attributes:
        init_filters: Width of the first level (doubled per level; a multiple of 8 for its group norm).
        blocks_down: Residual blocks per encoder level.
        blocks_up: Residual blocks per decoder level (``len(blocks_down) - 1``; default one each).
        dropout: Dropout probability after the first convolution (0 = none).
        dropout_where: ``monai``.
    """

    init_filters: int = 8
    blocks_down: tuple[int, ...] = (1, 2, 2, 4)
    blocks_up: tuple[int, ...] | None = None
    dropout: float = 0.0
    dropout_where: str = "monai"

    def __post_init__(self) -> None:
        if self.init_filters < 8 or self.init_filters % 8:
            raise ConfigError(f"net.params.init_filters must be a positive multiple of 8, got {self.init_filters}")
        object.__setattr__(self, "blocks_down", _ints("blocks_down", self.blocks_down, min_len=2))
        up = (1,) * (len(self.blocks_down) - 1) if self.blocks_up is None else self.blocks_up
        up = _ints("blocks_up", up)
        object.__setattr__(self, "blocks_up", up)
        if len(up) != len(self.blocks_down) - 1:
            raise ConfigError(f"net.params.blocks_up must hold len(blocks_down) - 1 = {len(self.blocks_down) - 1}")
        _check_dropout(self.dropout, self.dropout_where)

    @property
    def size_multiple(self) -> int:
        """``2^(len(blocks_down) - 1)``."""
        return 2 ** (len(self.blocks_down) - 1)


@dataclass(frozen=True)
class SwinUNETRParams:
    """``monai.SwinUNETR`` (:class:`monai.networks.nets.SwinUNETR`): Swin transformer encoder, CNN decoder.

    Attributes:
        feature_size: Embedding width (a multiple of 12).
        depths: Swin blocks per stage (4 stages).
        num_heads: Attention heads per stage.
        window_size: Attention window size.
        patch_size: Patch embedding size; the size multiple is ``patch_size^5``.
        dropout: MONAI's ``drop_rate`` (0 = none).
        dropout_where: ``monai``.
    """

    feature_size: int = 24
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    patch_size: int = 2
    dropout: float = 0.0
    dropout_where: str = "monai"

    def __post_init__(self) -> None:
        if self.feature_size < 12 or self.feature_size % 12:
            raise ConfigError(f"net.params.feature_size must be a positive multiple of 12, got {self.feature_size}")
        object.__setattr__(self, "depths", _ints("depths", self.depths, min_len=4))
        object.__setattr__(self, "num_heads", _ints("num_heads", self.num_heads, min_len=4))
        if len(self.depths) != 4 or len(self.num_heads) != 4:
            raise ConfigError("net.params.depths and net.params.num_heads must hold 4 values (one per stage)")
        if self.window_size < 1 or self.patch_size < 1:
            raise ConfigError("net.params.window_size and net.params.patch_size must be >= 1")
        _check_dropout(self.dropout, self.dropout_where)

    @property
    def size_multiple(self) -> int:
        """``patch_size^5``."""
        return int(self.patch_size) ** 5


def drop_biases_before_batchnorm(net: nn.Module) -> nn.Module:
    """Remove the bias of every convolution that a batch norm follows in the same ``nn.Sequential`` (in place).

    Such a bias is redundant (the batch norm subtracts it again) and gets no gradient: MONAI's AttentionUnet has
    them in its attention gates. The network computes the same function class without them.
    """
    for seq in [m for m in net.modules() if isinstance(m, nn.Sequential)]:
        children = list(seq)
        for a, b in zip(children, children[1:]):
            conv = a.conv if isinstance(getattr(a, "conv", None), _ConvNd) else a
            if isinstance(conv, _ConvNd) and isinstance(b, _BatchNorm) and conv.bias is not None:
                conv.register_parameter("bias", None)
    return net


def _widths(extra_outputs: dict[str, int] | None) -> int:
    return sum(int(c) for c in (extra_outputs or {}).values())


@MODELS.register(
    "monai.UNet",
    doc="MONAI UNet (residual units); extra heads widen its last layer",
    params=MonaiUNetParams,
    capabilities=MONAI_CAPABILITIES,
)
def monai_unet(
    params: MonaiUNetParams, spatial_dims: int, in_channels: int, num_classes: int, extra_outputs=None
) -> MonaiNet:
    """:class:`monai.networks.nets.UNet` behind the protocol (extra heads: widened output)."""
    net = MonaiUNet(
        spatial_dims,
        in_channels,
        num_classes + _widths(extra_outputs),
        channels=params.channels,
        strides=params.strides,
        num_res_units=params.num_res_units,
        norm=_norm(params.norm),
        dropout=params.dropout,
    )
    return MonaiNet(net, spatial_dims, num_classes, params.size_multiple, extra_outputs, head=None)


@MODELS.register(
    "monai.AttentionUnet",
    doc="MONAI AttentionUnet (attention-gated skips)",
    params=AttentionUnetParams,
    capabilities=MONAI_CAPABILITIES,
)
def monai_attention_unet(
    params: AttentionUnetParams, spatial_dims: int, in_channels: int, num_classes: int, extra_outputs=None
) -> MonaiNet:
    """:class:`monai.networks.nets.AttentionUnet` behind the protocol."""
    net = AttentionUnet(
        spatial_dims, in_channels, num_classes, channels=params.channels, strides=params.strides, dropout=params.dropout
    )
    drop_biases_before_batchnorm(net)
    head = f"model.{len(net.model) - 1}.conv"  # the final 1x1 convolution
    return MonaiNet(net, spatial_dims, num_classes, params.size_multiple, extra_outputs, head, params.channels[0])


@MODELS.register(
    "monai.DynUNet", doc="MONAI DynUNet (nnU-Net's architecture)", params=DynUNetParams, capabilities=MONAI_CAPABILITIES
)
def monai_dynunet(
    params: DynUNetParams, spatial_dims: int, in_channels: int, num_classes: int, extra_outputs=None
) -> MonaiNet:
    """:class:`monai.networks.nets.DynUNet` behind the protocol."""
    norm = _norm(params.norm)
    net = DynUNet(
        spatial_dims,
        in_channels,
        num_classes,
        kernel_size=[params.kernel_size] * len(params.strides),
        strides=list(params.strides),
        upsample_kernel_size=list(params.strides[1:]),
        filters=list(params.filters),
        dropout=params.dropout or None,
        norm_name=norm,
        res_block=params.res_block,
    )
    return MonaiNet(
        net, spatial_dims, num_classes, params.size_multiple, extra_outputs, "output_block.conv", params.filters[0]
    )


@MODELS.register(
    "monai.SegResNet", doc="MONAI SegResNet (residual encoder)", params=SegResNetParams, capabilities=MONAI_CAPABILITIES
)
def monai_segresnet(
    params: SegResNetParams, spatial_dims: int, in_channels: int, num_classes: int, extra_outputs=None
) -> MonaiNet:
    """:class:`monai.networks.nets.SegResNet` behind the protocol."""
    net = SegResNet(
        spatial_dims=spatial_dims,
        init_filters=params.init_filters,
        in_channels=in_channels,
        out_channels=num_classes,
        dropout_prob=params.dropout or None,
        blocks_down=params.blocks_down,
        blocks_up=tuple(params.blocks_up or ()),
    )
    head = f"conv_final.{len(net.conv_final) - 1}"  # norm -> act -> 1x1 conv: its input is the final features
    return MonaiNet(net, spatial_dims, num_classes, params.size_multiple, extra_outputs, head, params.init_filters)


@MODELS.register(
    "monai.SwinUNETR",
    doc="MONAI SwinUNETR (Swin transformer encoder; needs einops)",
    requires=("einops",),
    params=SwinUNETRParams,
    capabilities=MONAI_CAPABILITIES,
)
def monai_swin_unetr(
    params: SwinUNETRParams, spatial_dims: int, in_channels: int, num_classes: int, extra_outputs=None
) -> MonaiNet:
    """:class:`monai.networks.nets.SwinUNETR` behind the protocol.

    Raises:
        ConfigError: the ``einops`` package, which SwinUNETR needs to run, is not installed.
    """
    if importlib.util.find_spec("einops") is None:
        raise ConfigError("net.name monai.SwinUNETR needs the einops package: pip install einops")
    net = SwinUNETR(
        in_channels=in_channels,
        out_channels=num_classes,
        patch_size=params.patch_size,
        depths=params.depths,
        num_heads=params.num_heads,
        window_size=params.window_size,
        feature_size=params.feature_size,
        drop_rate=params.dropout,
        spatial_dims=spatial_dims,
    )
    return MonaiNet(
        net, spatial_dims, num_classes, params.size_multiple, extra_outputs, "out.conv", params.feature_size
    )


#: The MONAI models registered here.
MONAI_MODELS = ("monai.AttentionUnet", "monai.DynUNet", "monai.SegResNet", "monai.SwinUNETR", "monai.UNet")
