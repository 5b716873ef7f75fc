"""Our own 2D/3D U-Net (plain PyTorch, no MONAI at runtime).

Architecture, for ``channels = (c_0, ..., c_{L-1})`` (depth ``L``):

* **Encoder** levels ``0 .. L-2``: a block of ``conv3 -> norm -> LeakyReLU(0.01)`` twice. Level 0 keeps full
  resolution; level ``i > 0`` downsamples by a stride-2 first convolution (no max-pool). The encoder returns its
  features ``f_0 .. f_{L-2}`` (the skips; the last one is also the input of the bottleneck).
* **Bottleneck** (level ``L-1``): a stride-2 block ``c_{L-2} -> c_{L-1}``.
* **Decoder** depths ``L-2 .. 0``: transposed conv (kernel 2, stride 2) ``c_{i+1} -> c_i``, concatenation with the
  skip ``f_i``, then a block ``2 c_i -> c_i``.
* **Heads**: a 1x1 conv ``c_0 -> K`` gives the logits; with ``net.deep_heads`` a 1x1 conv on the bottleneck and on
  every decoder depth gives coarse logits that are upsampled (bilinear/trilinear, ``align_corners=False``) to the
  input size; ``extra_outputs`` adds one 1x1 conv head per name on the final decoder features.

Dropout (``net.dropout > 0``) is element-wise :class:`torch.nn.Dropout` at the end of each block that carries it
(after the second activation). ``net.dropout_where``: ``decoder`` (bottleneck and decoder blocks; the encoder is
deterministic, so MC dropout can run it once), ``last`` (only the final, full-resolution decoder block), ``all``
(every block) or ``bottleneck``. Element-wise rather than channel dropout is our choice: it perturbs more finely
and gives smoother MC-dropout sample statistics.

**Deterministic prefix / stochastic suffix.** The blocks run in the fixed order encoder ``0 .. L-2``, bottleneck,
decoder ``0 .. L-2`` (block indices ``0 .. 2L-2``). Everything before the first dropout module in that order draws
no random numbers, so :meth:`UNet.deterministic_prefix` runs it once and returns a :class:`ForwardState` (the
pass stopped right before that dropout module), and :meth:`UNet.stochastic_suffix` finishes the pass from it
(dropout, the remaining blocks, the heads, the crop); ``stochastic_suffix(deterministic_prefix(x))`` is exactly
:meth:`UNet.forward_all` ``(x)`` under the same RNG state, and the state can be finished many times (MC dropout).
The split lies inside the first dropout-bearing block, after its convolutions: with ``decoder`` the prefix is the
encoder plus the bottleneck's convolutions, with ``last`` it is everything but the final dropout and the 1x1
heads, with ``bottleneck`` the same as ``decoder``, with ``all`` only the first encoder block's convolutions;
without dropout it is every block (the suffix is only the heads).

Normalisation (``net.norm``): ``instance`` (affine, no running statistics), ``batch``, ``group`` (8 groups, or
the largest divisor of the channel count below 8) or ``none`` (then the convolutions carry a bias).

Inputs whose spatial size is not divisible by ``2^(L-1)`` are padded at the end of each axis (replicate
padding) by :meth:`UNet.encode`; the padded size and the original size travel with the features
(:class:`EncoderFeatures`) and :meth:`UNet.decode` crops every output back to the original size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.dropout import _DropoutNd

from trustseg.core.errors import ConfigError
from trustseg.models.config import NetConfig


def _conv(dims: int) -> type[nn.Module]:
    return nn.Conv2d if dims == 2 else nn.Conv3d


def _norm(kind: str, dims: int, channels: int) -> nn.Module:
    """The normalisation layer ``kind`` for ``channels`` features."""
    if kind == "instance":
        return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if kind == "batch":
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels)
    if kind == "group":
        groups = max(g for g in range(1, min(8, channels) + 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"net.norm: unknown normalisation {kind!r}; use instance, batch, group or none")


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
        conv = _conv(dims)
        bias = norm == "none"
        layers: list[nn.Module] = [
            conv(cin, cout, 3, stride=stride, padding=1, bias=bias),
            _norm(norm, dims, cout),
            nn.LeakyReLU(0.01, inplace=True),
            conv(cout, cout, 3, padding=1, bias=bias),
            _norm(norm, dims, cout),
            nn.LeakyReLU(0.01, inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class EncoderFeatures(list):
    """The encoder's skip features ``[f_0, ..., f_{L-2}]`` plus the input's original spatial size.

    Attributes:
        spatial: The spatial shape before padding; :meth:`UNet.decode` crops its outputs to it.
    """

    def __init__(self, feats: list[Tensor], spatial: tuple[int, ...]):
        super().__init__(feats)
        self.spatial = tuple(spatial)


class ForwardState:
    """A U-Net forward pass stopped part-way, e.g. by :meth:`UNet.deterministic_prefix`.

    :meth:`UNet.stochastic_suffix` finishes it, any number of times: finishing never modifies the state.

    Attributes:
        h: The current activation ``(B, c, *sp_padded)``: the output of layers ``0 .. layer-1`` of block
            ``block`` (or, when ``layer`` is 0, the output of block ``block - 1``; the padded input for block 0).
        feats: The encoder features computed so far (:class:`EncoderFeatures`, carrying the original spatial size;
            a plain list when the pass started from features without it, see :meth:`UNet.decode`).
        heads: Deep-head logits ``(B, K, *sp_padded)`` computed so far (``net.deep_heads``), coarse -> fine.
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

        spatial = getattr(self.feats, "spatial", None)
        feats = [rep(f) for f in self.feats]
        feats = feats if spatial is None else EncoderFeatures(feats, spatial)
        return ForwardState(rep(self.h), feats, [rep(t) for t in self.heads], self.block, self.layer)


class UNet(nn.Module):
    """2D/3D U-Net with optional per-depth ("deep") heads and extra output heads.

    Args:
        spatial_dims: 2 or 3.
        in_channels: Image channels C.
        num_classes: K (background included).
        net: The network configuration (channels, norm, dropout, deep heads).
        extra_outputs: name -> number of channels of an additional 1x1 head on the final decoder features
            (raw outputs; the method applies its own activation), e.g. ``{"rater_variance": 1}``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        net: NetConfig,
        extra_outputs: dict[str, int] | None = None,
    ):
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        ch = tuple(int(c) for c in net.channels)
        if len(ch) < 2 or min(ch) < 1:
            raise ConfigError(f"net.channels needs at least two positive widths, got {net.channels}")
        if not 0.0 <= net.dropout < 1.0:
            raise ConfigError(f"net.dropout must be in [0, 1), got {net.dropout}")
        self.spatial_dims = spatial_dims
        self.num_classes = num_classes
        self.net = net
        self.depth = len(ch)
        self.multiple = 2 ** (self.depth - 1)
        p, where = float(net.dropout), net.dropout_where
        if where not in ("decoder", "last", "all", "bottleneck"):
            raise ConfigError(f"net.dropout_where: unknown placement {where!r}; use decoder, last, all or bottleneck")
        p_enc = p if where == "all" else 0.0
        p_bott = p if where in ("decoder", "all", "bottleneck") else 0.0
        p_dec = [p if where in ("decoder", "all") else 0.0] * (self.depth - 2) + [p if where != "bottleneck" else 0.0]
        #: Whether :meth:`encode` is deterministic in train mode (no dropout before the bottleneck).
        self.encoder_deterministic = p_enc == 0.0

        self.encoder = nn.ModuleList(
            ConvBlock(spatial_dims, in_channels if i == 0 else ch[i - 1], ch[i], net.norm, 1 if i == 0 else 2, p_enc)
            for i in range(self.depth - 1)
        )
        self.bottleneck = ConvBlock(spatial_dims, ch[-2], ch[-1], net.norm, 2, p_bott)
        up = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
        # decoder index j = 0 .. L-2 goes coarse -> fine, ending at level 0
        levels = list(range(self.depth - 2, -1, -1))
        self.up = nn.ModuleList(up(ch[i + 1], ch[i], 2, stride=2) for i in levels)
        self.decoder = nn.ModuleList(
            ConvBlock(spatial_dims, 2 * ch[i], ch[i], net.norm, 1, p_dec[j]) for j, i in enumerate(levels)
        )
        conv = _conv(spatial_dims)
        self.head = conv(ch[0], num_classes, 1)
        self.deep_heads = (
            nn.ModuleList(conv(c, num_classes, 1) for c in [ch[-1]] + [ch[i] for i in levels[:-1]])
            if net.deep_heads
            else None
        )
        self.extra_heads = nn.ModuleDict({k: conv(ch[0], int(c), 1) for k, c in (extra_outputs or {}).items()})

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
            return self.encoder[i]
        return self.bottleneck if i == e else self.decoder[i - e - 1]

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
        """Check ``x`` ``(B, C, *sp)``, pad it to a multiple of ``2^(L-1)`` and return the state before block 0."""
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(f"expected (B, C, *spatial) with {self.spatial_dims} spatial axes, got {tuple(x.shape)}")
        spatial = tuple(x.shape[2:])
        pads = [(-s) % self.multiple for s in spatial]
        if any(pads):
            pad_arg: list[int] = []
            for p in reversed(pads):
                pad_arg += [0, p]
            x = F.pad(x, pad_arg, mode="replicate")
        return ForwardState(x, EncoderFeatures([], spatial), [], 0, 0)

    def _run(self, state: ForwardState, stop: tuple[int, int]) -> ForwardState:
        """Advance a copy of ``state`` to position ``stop`` = ``(block, layer)`` (``state`` is not modified)."""
        e = self.depth - 1
        h, i, k = state.h, state.block, state.layer
        spatial = getattr(state.feats, "spatial", None)
        feats = list(state.feats) if spatial is None else EncoderFeatures(list(state.feats), spatial)
        heads = list(state.heads)
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

    def _outputs(self, state: ForwardState) -> dict[str, Tensor]:
        """The heads on a finished pass, cropped to the original size (see :meth:`decode`)."""
        h = state.h
        logits = self.head(h)
        out: dict[str, Tensor] = {"logits": logits}
        if self.deep_heads is not None:
            out["heads"] = [*state.heads, logits]
        for name, head in self.extra_heads.items():
            out[name] = head(h)
        spatial = getattr(state.feats, "spatial", None)
        full = h.shape[2:]
        if spatial is not None and tuple(full) != tuple(spatial):
            crop = (slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)
            out = {k: [t[crop] for t in v] if isinstance(v, list) else v[crop] for k, v in out.items()}
        return out

    def encode(self, x: Tensor) -> EncoderFeatures:
        """Encoder features ``[f_0 (B, c_0, *sp), ..., f_{L-2}]`` of ``x`` ``(B, C, *sp)``.

        ``x`` is padded (replicate, at the end of each axis) to a multiple of ``2^(L-1)``; the original size is
        kept in the result's ``spatial`` attribute. Deterministic when ``dropout_where`` is not ``all``.
        """
        return self._run(self._start(x), (self.depth - 1, 0)).feats

    def decode(self, feats: list[Tensor]) -> dict[str, Tensor]:
        """Decoder and heads on encoder features (the output of :meth:`encode`).

        Returns:
            ``"logits"``: ``(B, K, *sp)``; ``"heads"`` (only with ``net.deep_heads``): list of ``L`` logits
            ``(B, K, *sp)`` from the bottleneck and every decoder depth, coarse -> fine, each upsampled to full
            size, the last being ``"logits"``; and one ``(B, C_e, *sp)`` entry per extra output name.
        """
        state = ForwardState(feats[-1], feats, [], self.depth - 1, 0)
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

    def stochastic_suffix(self, state: ForwardState) -> dict[str, Tensor]:
        """Finish a pass from :meth:`deterministic_prefix` (or any :class:`ForwardState`); ``state`` is unchanged.

        Returns:
            The outputs of :meth:`decode` (``"logits"``, ``"heads"``, extras); ``stochastic_suffix(
            deterministic_prefix(x))`` equals :meth:`forward_all` ``(x)`` exactly under the same RNG state.
        """
        return self._outputs(self._run(state, (self.num_blocks, 0)))

    def forward_all(self, x: Tensor) -> dict[str, Tensor]:
        """All outputs (logits, heads, extras) of one pass: ``decode(encode(x))``."""
        return self.decode(self.encode(x))

    def forward(self, x: Tensor, all_outputs: bool = False) -> Tensor | dict[str, Tensor]:
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
