"""Monte Carlo dropout: dropout stays active at test time, M stochastic passes.

At prediction the network is put in eval mode and then **only** its dropout modules are switched to train mode,
so normalisation layers (batch norm's running statistics) stay in eval mode; every module's mode is restored
afterwards.

The network must offer the ``dropout`` capability (:mod:`trustseg.models.protocol`: ``dropout`` and
``dropout_where`` parameters). Where the dropout sits (``Params.where``, written into the network's
``dropout_where``; ``None`` keeps ``net.params.dropout_where``) decides what a sample costs. ``last`` (the
default) puts dropout only at the end of the final, full-resolution decoder block; ``decoder`` in the bottleneck
and every decoder block; ``bottleneck`` only in the bottleneck; ``all`` in every block.

``prefix_once`` (the default; ``encoder_once``, its former name, is still accepted): run the network's
deterministic prefix (capability ``prefix_suffix``, e.g. :meth:`~trustseg.models.unet.UNet.deterministic_prefix`:
everything before the first dropout module) once and sample only the stochastic suffix M times. The samples have
exactly the distribution of M full passes (they are even identical under the same seed, since the prefix draws no
random numbers). With
``where = decoder`` the prefix is the encoder and the bottleneck's convolutions (about 36 % of the FLOPs of the
default U-Net, so M = 10 costs 6.7 passes in FLOPs, 8–11 measured on a CPU); with ``where = last`` it is
everything but the final dropout and the 1x1 heads (M = 10 costs 1.01 passes in FLOPs, about 3 measured on a CPU,
where drawing the dropout masks dominates); with ``all`` it is only the first block's convolutions
(``docs/methods.md`` has the measurements). A network without the ``prefix_suffix`` capability gets M full
passes.

``chunk`` > 1 runs that many samples in one call by repeating the (prefix state or) input along the batch axis
inside the call (the returned samples are never folded into the batch axis). Dropout masks are drawn
independently per copy, so the samples have the same distribution; this trades memory (× chunk) for speed on
devices that are not saturated by one pass (GPUs). With ``chunk = 1`` (default) the samples are drawn one after
another and equal, under the same seed, those of M separate full passes.

Dropout probability: ``Params.p`` is used when the network configuration has none (``net.params.dropout = 0``);
an explicit ``net.params.dropout > 0`` is kept. Training is the softmax baseline's (Dice + CE against ``target``) with
dropout active (in the blocks of ``where``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, cast

import torch
from torch import Tensor, nn
from torch.nn.modules.dropout import _DropoutNd

from trustseg.core.errors import ConfigError
from trustseg.methods.base import METHODS, param_error
from trustseg.methods.softmax import LogitMethod, SegTarget
from trustseg.models.factory import build_network
from trustseg.models.protocol import DROPOUT, PREFIX_SUFFIX, PrefixSuffix

PLACEMENTS = ("decoder", "last", "all", "bottleneck")


@dataclass(frozen=True)
class MCDropoutParams:
    """Parameters of ``mc-dropout``.

    Attributes:
        p: Dropout probability used when ``net.params.dropout`` is 0.
        samples: Number of stochastic passes M.
        prefix_once: Run the network's deterministic prefix (everything before the first dropout module: the
            encoder with ``where = decoder``, all but the last dropout and the heads with ``where = last``) once and
            sample only the stochastic suffix M times; same distribution as M full passes, fewer FLOPs. Formerly
            ``encoder_once`` (still accepted).
        chunk: Samples computed together in one batched call (1: one at a time).
        target: Training target (``soft``, ``random_rater`` or ``majority``).
        where: Which blocks carry dropout (sets ``net.params.dropout_where``): ``last`` (only the final
            full-resolution decoder block: M = 10 with ``prefix_once`` costs about 3 forward passes on a CPU, less
            stochastic capacity), ``decoder`` (bottleneck and decoder: about 8–11 passes), ``all`` or
            ``bottleneck``; ``None`` keeps ``net.params.dropout_where``.
    """

    p: float = 0.2
    samples: int = 10
    prefix_once: bool = True
    chunk: int = 1
    target: SegTarget = "soft"
    where: Literal["decoder", "last", "all", "bottleneck"] | None = "last"

    def __post_init__(self) -> None:
        if not 0.0 < self.p < 1.0:
            raise param_error("mc-dropout", "p", "be in (0, 1)", self.p)
        if self.samples < 1:
            raise param_error("mc-dropout", "samples", "be >= 1", self.samples)
        if self.chunk < 1:
            raise param_error("mc-dropout", "chunk", "be >= 1", self.chunk)
        if self.where not in (None, *PLACEMENTS):
            raise param_error("mc-dropout", "where", "be decoder, last, all, bottleneck or null", self.where)


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """Every dropout module of ``model`` (``nn.Dropout``, ``Dropout2d/3d``, ``AlphaDropout``, ...)."""
    return [m for m in model.modules() if isinstance(m, _DropoutNd)]


@METHODS.register(
    "mc-dropout", doc="Monte Carlo dropout: M samples, dropout in the last decoder block, deterministic prefix run once"
)
class MCDropout(LogitMethod):
    """MC dropout over M passes (only dropout layers stochastic at test time)."""

    name = "mc-dropout"
    Params = MCDropoutParams
    required_capabilities = frozenset({DROPOUT})
    param_aliases: ClassVar[Mapping[str, str]] = {"encoder_once": "prefix_once"}

    @classmethod
    def upgrade_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """``encoder_once`` -> ``prefix_once``; a run saved without ``where`` gets ``where: None``.

        Runs trained before the ``where`` option existed had their dropout where ``net.dropout_where`` put it
        (``decoder`` by default), not in the later default ``last``: they must be predicted with the placement
        their weights were trained with.
        """
        out = super().upgrade_params(params)
        out.setdefault("where", None)
        return out

    @property
    def dropout(self) -> float:
        """The dropout probability the network gets (``net.params.dropout`` when > 0, else ``Params.p``)."""
        net_p = float(self.net.params.get("dropout", 0.0))
        return net_p if net_p > 0 else self.params.p

    @property
    def where(self) -> str | None:
        """The dropout placement the network gets (``Params.where``, else ``net.params.dropout_where``)."""
        return self.params.where if self.params.where is not None else self.net.params.get("dropout_where")

    def build_model(self, member: int = 0) -> nn.Module:
        """The network with dropout :attr:`dropout` in the blocks of :attr:`where`."""
        changes: dict[str, Any] = {"dropout": self.dropout}
        if self.where is not None:
            changes["dropout_where"] = self.where
        return build_network(self.net.with_params(**changes), self.spatial_dims, self.in_channels, self.num_classes)

    def sample_logits(self, models: Sequence[nn.Module], x: Tensor) -> Tensor:
        """``M = samples`` logits ``(M, B, K, *spatial)`` with only the dropout modules in train mode."""
        model = models[0]
        drops = dropout_modules(model)
        if not drops:
            raise ConfigError("mc-dropout needs a network with dropout layers (net.params.dropout > 0 or params.p > 0)")
        modes = {m: m.training for m in model.modules()}
        try:
            model.eval()
            for m in drops:
                m.train()
            if self.params.prefix_once and PREFIX_SUFFIX in getattr(model, "capabilities", ()):
                split = cast(PrefixSuffix, model)  # the capability was checked just above
                state = split.deterministic_prefix(x)
                return self._draw(lambda n: split.stochastic_suffix(state.repeat(n))["logits"], x.shape[0])
            return self._draw(lambda n: model(_repeat(x, n)), x.shape[0])
        finally:
            for m, mode in modes.items():
                m.training = mode

    def _draw(self, fn, batch: int) -> Tensor:
        """Call ``fn(n)`` -> ``(n·B, K, *sp)`` in chunks until M samples are drawn; returns ``(M, B, K, *sp)``."""
        out, left = [], self.params.samples
        while left > 0:
            n = min(self.params.chunk, left)
            z = fn(n)
            out.append(z.reshape(n, batch, *z.shape[1:]))
            left -= n
        return torch.cat(out, 0)


def _repeat(t: Tensor, n: int) -> Tensor:
    """``(B, ...)`` -> ``(n·B, ...)``: ``n`` copies of the batch, copy-major."""
    return t if n == 1 else t.repeat(n, *([1] * (t.dim() - 1)))
