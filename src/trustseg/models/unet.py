"""Our own 2D/3D U-Net (plain PyTorch, no MONAI at runtime), registered as ``unet``.

Architecture, for ``channels = (c_0, ..., c_{L-1})`` (depth ``L``):

* **Encoder** levels ``0 .. L-2``: a block of ``conv3 -> norm -> LeakyReLU(0.01)`` twice. Level 0 keeps full
  resolution; level ``i > 0`` downsamples by a stride-2 first convolution (no max-pool). The encoder returns its
  features ``f_0 .. f_{L-2}`` (the skips; the last one is also the input of the bottleneck).
* **Bottleneck** (level ``L-1``): a stride-2 block ``c_{L-2} -> c_{L-1}``.
* **Decoder** depths ``L-2 .. 0``: transposed conv (kernel 2, stride 2) ``c_{i+1} -> c_i``, concatenation with the
  skip ``f_i``, then a block ``2 c_i -> c_i``.
* **Heads**: a 1x1 conv ``c_0 -> K`` gives the logits; with ``deep_heads`` a 1x1 conv on the bottleneck and on
  every decoder depth gives coarse logits that are upsampled (bilinear/trilinear, ``align_corners=False``) to the
  input size; ``extra_outputs`` adds one 1x1 conv head per name on the final decoder features.

Dropout (``dropout > 0``) is element-wise :class:`torch.nn.Dropout` at the end of each block that carries it
(after the second activation). ``dropout_where``: ``decoder`` (bottleneck and decoder blocks; the encoder is
deterministic, so MC dropout can run it once), ``last`` (only the final, full-resolution decoder block), ``all``
(every block) or ``bottleneck``. Element-wise rather than channel dropout is our choice: it perturbs more finely
and gives smoother MC-dropout sample statistics.

**Deterministic prefix / stochastic suffix.** The blocks run in the fixed order encoder ``0 .. L-2``, bottleneck,
decoder ``0 .. L-2`` (block indices ``0 .. 2L-2``). Everything before the first dropout module in that order draws
no random numbers, so :meth:`UNet.deterministic_prefix` runs it once and returns a
:class:`~trustseg.models.unet_blocks.ForwardState` (the pass stopped right before that dropout module), and
:meth:`UNet.stochastic_suffix` finishes the pass from it (dropout, the remaining blocks, the heads);
``stochastic_suffix(deterministic_prefix(x))`` is exactly :meth:`UNet.forward_all` ``(x)`` under the same RNG
state, and the state can be finished many times (MC dropout). The split lies inside the first dropout-bearing
block, after its convolutions: with ``decoder`` the prefix is the encoder plus the bottleneck's convolutions, with
``last`` it is everything but the final dropout and the 1x1 heads, with ``bottleneck`` the same as ``decoder``,
with ``all`` only the first encoder block's convolutions; without dropout it is every block (the suffix is only
the heads).

**Sizes.** Every spatial size must be a multiple of :attr:`UNet.size_multiple` ``= 2^(L-1)``; other sizes raise a
:class:`ValueError` naming it. The network does not pad: callers pad (the training loader and the prediction path
zero-pad at the end of each axis and crop back), so there is one place that pads.

The network protocol it implements (all six capabilities) is in :mod:`trustseg.models.protocol`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.dropout import _DropoutNd

from trustseg.core.errors import ConfigError
from trustseg.models.protocol import (
    ALL_OUTPUTS,
    CAPABILITIES,
    DEEP_HEADS,
    DROPOUT,
    EXTRA_HEADS,
    FEATURES,
    PREFIX_SUFFIX,
    check_input,
)
from trustseg.models.registry import MODELS
from trustseg.models.unet_blocks import ConvBlock, ForwardState, conv_class

NORMS = ("instance", "batch", "group", "none")
PLACEMENTS = ("decoder", "last", "all", "bottleneck")


@dataclass(frozen=True)
class UNetParams:
    """Parameters of the ``unet`` model (``net.params``).

    Attributes:
        channels: Feature width per resolution level, encoder top to bottleneck; depth ``L = len(channels)``.
        norm: Normalisation layer: instance, batch, group (8 groups) or none.
        dropout: Dropout probability (0 disables it).
        dropout_where: Which blocks carry dropout (at the end of the block): ``decoder`` (the bottleneck and every
            decoder block; the default, which lets MC dropout run the encoder once), ``last`` (only the final,
            full-resolution decoder block, so that MC dropout recomputes only that block's dropout and the 1x1
            heads per sample), ``all`` (every block) or ``bottleneck``.
        deep_heads: Add a 1x1 segmentation head on the bottleneck and every decoder depth (layer ensembles).
    """

    channels: tuple[int, ...] = (16, 32, 64, 128)
    norm: Literal["instance", "batch", "group", "none"] = "instance"
    dropout: float = 0.0
    dropout_where: Literal["decoder", "last", "all", "bottleneck"] = "decoder"
    deep_heads: bool = False

    def __post_init__(self) -> None:
        ch = tuple(int(c) for c in self.channels)
        object.__setattr__(self, "channels", ch)
        if len(ch) < 2 or min(ch) < 1:
            raise ConfigError(f"net.params.channels must hold at least two positive widths, got {list(ch)}")
        if self.norm not in NORMS:
            raise ConfigError(f"net.params.norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"net.params.dropout must be in [0, 1), got {self.dropout}")
        if self.dropout_where not in PLACEMENTS:
            raise ConfigError(
                f"net.params.dropout_where must be one of {', '.join(PLACEMENTS)}, got {self.dropout_where!r}"
            )

    @property
    def size_multiple(self) -> int:
        """``2^(L-1)``: spatial sizes must be multiples of it."""
        return 2 ** (len(self.channels) - 1)

    @property
    def num_heads(self) -> int:
        """``L``: the number of segmentation heads with ``deep_heads``."""
        return len(self.channels)


class UNet(nn.Module):
    """2D/3D U-Net with optional per-depth ("deep") heads and extra output heads.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Image channels C.
        num_classes: K (background included).
        params: The network's parameters (channels, norm, dropout, deep heads); defaults when ``None``.
        extra_outputs: name -> number of channels of an additional 1x1 head on the final decoder features
            (raw outputs; the method applies its own activation), e.g. ``{"rater_variance": 1}``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        params: UNetParams | None = None,
        extra_outputs: dict[str, int] | None = None,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        params = UNetParams() if params is None else params
        ch = params.channels
        self.spatial_dims = spatial_dims
        self.num_classes = num_classes
        self.params = params
        self.depth = len(ch)
        p, where = float(params.dropout), params.dropout_where
        p_enc = p if where == "all" else 0.0
        p_bott = p if where in ("decoder", "all", "bottleneck") else 0.0
        p_dec = [p if where in ("decoder", "all") else 0.0] * (self.depth - 2) + [p if where != "bottleneck" else 0.0]
        #: Whether :meth:`encode` is deterministic in train mode (no dropout before the bottleneck).
        self.encoder_deterministic = p_enc == 0.0

        norm = params.norm
        self.encoder = nn.ModuleList(
            ConvBlock(spatial_dims, in_channels if i == 0 else ch[i - 1], ch[i], norm, 1 if i == 0 else 2, p_enc)
            for i in range(self.depth - 1)
        )
        self.bottleneck = ConvBlock(spatial_dims, ch[-2], ch[-1], norm, 2, p_bott)
        up = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
        # decoder index j = 0 .. L-2 goes coarse -> fine, ending at level 0
        levels = list(range(self.depth - 2, -1, -1))
        self.up = nn.ModuleList(up(ch[i + 1], ch[i], 2, stride=2) for i in levels)
        self.decoder = nn.ModuleList(
            ConvBlock(spatial_dims, 2 * ch[i], ch[i], norm, 1, p_dec[j]) for j, i in enumerate(levels)
        )
        conv = conv_class(spatial_dims)
        self.head = conv(ch[0], num_classes, 1)
        self.deep_heads = (
            nn.ModuleList(conv(c, num_classes, 1) for c in [ch[-1]] + [ch[i] for i in levels[:-1]])
            if params.deep_heads
            else None
        )
        self.extra_heads = nn.ModuleDict({k: conv(ch[0], int(c), 1) for k, c in (extra_outputs or {}).items()})

    # -- the protocol ------------------------------------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        """``2^(L-1)``: every spatial input size must be a multiple of it."""
        return 2 ** (self.depth - 1)

    @property
    def capabilities(self) -> frozenset[str]:
        """``all_outputs``, ``extra_heads``, ``prefix_suffix``, ``features``; ``deep_heads`` and ``dropout`` when
        configured."""
        caps = {ALL_OUTPUTS, EXTRA_HEADS, PREFIX_SUFFIX, FEATURES}
        if self.deep_heads is not None:
            caps.add(DEEP_HEADS)
        if any(isinstance(m, _DropoutNd) for m in self.modules()):
            caps.add(DROPOUT)
        return frozenset(caps)

    @property
    def num_heads(self) -> int:
        """Number of segmentation heads (``L`` with deep heads: bottleneck + every decoder depth; else 1)."""
        return self.depth if self.deep_heads is not None else 1

    @property
    def num_blocks(self) -> int:
        """Number of blocks ``2L - 1``: encoder ``0 .. L-2``, bottleneck ``L-1``, decoder ``L .. 2L-2``."""
        return 2 * self.depth - 1

    def _block(self, i: int) -> ConvBlock:
        e = self.depth - 1
        if i < e:
            return cast(ConvBlock, self.encoder[i])  # nn.ModuleList indexing is typed as Module
        return self.bottleneck if i == e else cast(ConvBlock, self.decoder[i - e - 1])

    @property
    def split_position(self) -> tuple[int, int]:
        """Where :meth:`deterministic_prefix` stops: ``(block, layer)`` of the first dropout module in block order.

        ``(num_blocks, 0)`` when the network has no dropout module (the suffix is then only the heads).
        """
        for i in range(self.num_blocks):
            for k, layer in enumerate(self._block(i)):
                if isinstance(layer, _DropoutNd):
                    return i, k
        return self.num_blocks, 0

    # -- forward pieces ---------------------------------------------------------------------------------------
    def _start(self, x: Tensor) -> ForwardState:
        """Check ``x`` ``(B, C, *sp)`` (sizes multiples of :attr:`size_multiple`); the state before block 0."""
        check_input(x, self.spatial_dims, self.size_multiple)
        return ForwardState(x, [], [], 0, 0)

    def _run(self, state: ForwardState, stop: tuple[int, int]) -> ForwardState:
        """Advance a copy of ``state`` to position ``stop`` = ``(block, layer)`` (``state`` is not modified)."""
        e = self.depth - 1
        h, i, k = state.h, state.block, state.layer
        feats, heads = list(state.feats), list(state.heads)
        mode = "bilinear" if self.spatial_dims == 2 else "trilinear"
        while (i, k) < stop:
            block = self._block(i)
            if k == 0 and i > e:  # decoder input: upsampled previous output + skip
                j = i - e - 1
                h = torch.cat([self.up[j](h), feats[e - 1 - j]], 1)
            end = stop[1] if i == stop[0] else len(block)
            if k == 0 and end == len(block):
                h = block(h)  # whole blocks run as modules (their hooks fire as usual)
            else:
                for layer in list(block)[k:end]:
                    h = layer(h)
            k = end
            if k < len(block):
                break
            if i < e:
                feats.append(h)
            elif self.deep_heads is not None and i < self.num_blocks - 1:
                full = feats[0].shape[2:]
                heads.append(F.interpolate(self.deep_heads[i - e](h), size=full, mode=mode, align_corners=False))
            i, k = i + 1, 0
        return ForwardState(h, feats, heads, i, k)

    def _outputs(self, state: ForwardState) -> dict[str, Any]:
        """The heads on a finished pass (see :meth:`decode`)."""
        h = state.h
        logits = self.head(h)
        out: dict[str, Any] = {"logits": logits}  # "heads" holds a list of logits
        if self.deep_heads is not None:
            out["heads"] = [*state.heads, logits]
        for name, head in self.extra_heads.items():
            out[name] = head(h)
        return out

    def encode(self, x: Tensor) -> list[Tensor]:
        """Encoder features ``[f_0 (B, c_0, *sp), ..., f_{L-2}]`` of ``x`` ``(B, C, *sp)``.

        Deterministic when ``dropout_where`` is not ``all``.
        """
        return self._run(self._start(x), (self.depth - 1, 0)).feats

    def decode(self, feats: list[Tensor]) -> dict[str, Any]:
        """Decoder and heads on encoder features (the output of :meth:`encode`).

        Returns:
            ``"logits"``: ``(B, K, *sp)``; ``"heads"`` (only with deep heads): list of ``L`` logits
            ``(B, K, *sp)`` from the bottleneck and every decoder depth, coarse -> fine, each upsampled to full
            size, the last being ``"logits"``; and one ``(B, C_e, *sp)`` entry per extra output name.
        """
        state = ForwardState(feats[-1], list(feats), [], self.depth - 1, 0)
        return self._outputs(self._run(state, (self.num_blocks, 0)))

    def deterministic_prefix(self, x: Tensor) -> ForwardState:
        """Run the part of the pass on ``x`` ``(B, C, *sp)`` that precedes the first dropout module.

        That part draws no random numbers, whatever the modules' modes. With ``dropout_where`` = ``decoder`` or
        ``bottleneck`` it is the encoder and the bottleneck's convolutions, with ``last`` everything but the final
        dropout and the 1x1 heads, with ``all`` the first encoder block's convolutions (position
        :attr:`split_position`).

        Returns:
            The stopped pass, to be finished (any number of times) by :meth:`stochastic_suffix`.
        """
        return self._run(self._start(x), self.split_position)

    def stochastic_suffix(self, state: ForwardState) -> dict[str, Any]:
        """Finish a pass from :meth:`deterministic_prefix` (or any :class:`ForwardState`); ``state`` is unchanged.

        Returns:
            The outputs of :meth:`decode` (``"logits"``, ``"heads"``, extras); ``stochastic_suffix(
            deterministic_prefix(x))`` equals :meth:`forward_all` ``(x)`` exactly under the same RNG state.
        """
        return self._outputs(self._run(state, (self.num_blocks, 0)))

    def forward_all(self, x: Tensor) -> dict[str, Any]:
        """All outputs (logits, heads, extras) of one pass: ``decode(encode(x))``."""
        return self.decode(self.encode(x))

    def forward_features(self, x: Tensor) -> Tensor:
        """The final decoder features ``(B, c_0, *sp)`` that every 1x1 head reads."""
        return self._run(self._start(x), (self.num_blocks, 0)).h

    def feature_layers(self) -> dict[str, nn.Module]:
        """``{name: block}`` of every block in pass order (``encoder.i``, ``bottleneck``, ``decoder.j``), as named
        in :meth:`named_modules`: the modules Grad-CAM or an embedding can hook."""
        e = self.depth - 1
        names = [f"encoder.{i}" for i in range(e)] + ["bottleneck"] + [f"decoder.{j}" for j in range(e)]
        return {name: self._block(i) for i, name in enumerate(names)}

    def forward(self, x: Tensor, all_outputs: bool = False) -> Tensor | dict[str, Any]:
        """Logits ``(B, K, *sp)`` of images ``x`` ``(B, C, *sp)``; with ``all_outputs`` the dict of
        :meth:`forward_all`.

        Losses that need heads or extra outputs call ``model(x, all_outputs=True)`` rather than
        ``model.forward_all(x)``: a DistributedDataParallel wrapper only forwards ``__call__``, and its gradient
        synchronisation is prepared in that call.
        """
        out = self.forward_all(x)
        return out if all_outputs else out["logits"]

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"spatial_dims={self.spatial_dims}, depth={self.depth}, heads={self.num_heads}, params={n}"


@MODELS.register(
    "unet",
    doc="2D/3D U-Net (strided-conv encoder, transposed-conv decoder, deep and extra heads)",
    params=UNetParams,
    capabilities=CAPABILITIES,
)
def unet(
    params: UNetParams,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    extra_outputs: dict[str, int] | None = None,
) -> UNet:
    """Our :class:`UNet`."""
    return UNet(spatial_dims, in_channels, num_classes, params, extra_outputs=extra_outputs)
