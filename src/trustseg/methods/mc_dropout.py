"""Monte Carlo dropout: dropout stays active at test time, M stochastic passes.

At prediction the network is put in eval mode and then **only** its dropout modules are switched to train mode,
so normalisation layers (batch norm's running statistics) stay in eval mode; every module's mode is restored
afterwards. With ``encoder_once`` (the default) and a network whose encoder carries no dropout (the U-Net's
``dropout_where`` = ``decoder`` or ``bottleneck``), the encoder runs once and only the dropout-bearing decoder is
sampled M times: the samples have exactly the distribution of M full passes (they are even identical under the
same seed, since the encoder draws no random numbers), for roughly the cost of ``1 + M · decoder/total`` passes.
Otherwise every sample is a full pass.

``chunk`` > 1 runs that many samples in one call by repeating the (encoder features or) input along the batch
axis inside the call (the returned samples are never folded into the batch axis). Dropout masks are drawn
independently per copy, so the samples have the same distribution; this trades memory (× chunk) for speed on
devices that are not saturated by one pass (GPUs). With ``chunk = 1`` (default) the samples are drawn one after
another and equal, under the same seed, those of M separate full passes.

Dropout probability: ``Params.p`` is used when the network configuration has none (``net.dropout = 0``);
an explicit ``net.dropout > 0`` is kept. Training is the softmax baseline's (Dice + CE against ``target``) with
dropout active.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.modules.dropout import _DropoutNd

from trustseg.core.errors import ConfigError
from trustseg.methods.base import METHODS
from trustseg.methods.softmax import LogitMethod, SegTarget
from trustseg.models.factory import build_network
from trustseg.models.unet import EncoderFeatures


@dataclass(frozen=True)
class MCDropoutParams:
    """Parameters of ``mc-dropout``.

    Attributes:
        p: Dropout probability used when ``net.dropout`` is 0.
        samples: Number of stochastic passes M.
        encoder_once: Run a deterministic encoder once and sample only the decoder.
        chunk: Samples computed together in one batched call (1: one at a time).
        target: Training target (``soft``, ``random_rater`` or ``majority``).
    """

    p: float = 0.2
    samples: int = 10
    encoder_once: bool = True
    chunk: int = 1
    target: SegTarget = "soft"


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """Every dropout module of ``model`` (``nn.Dropout``, ``Dropout2d/3d``, ``AlphaDropout``, ...)."""
    return [m for m in model.modules() if isinstance(m, _DropoutNd)]


@METHODS.register("mc-dropout", doc="Monte Carlo dropout: M stochastic passes (decoder-only sampling by default)")
class MCDropout(LogitMethod):
    """MC dropout over M passes (only dropout layers stochastic at test time)."""

    name = "mc-dropout"
    Params = MCDropoutParams

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0.0 < self.params.p < 1.0:
            raise ConfigError(f"method.mc-dropout.p must be in (0, 1), got {self.params.p}")
        if self.params.samples < 1:
            raise ConfigError(f"method.mc-dropout.samples must be >= 1, got {self.params.samples}")
        if self.params.chunk < 1:
            raise ConfigError(f"method.mc-dropout.chunk must be >= 1, got {self.params.chunk}")

    @property
    def dropout(self) -> float:
        """The dropout probability the network gets."""
        return self.net.dropout if self.net.dropout > 0 else self.params.p

    def build_model(self, member: int = 0) -> nn.Module:
        """A U-Net with dropout :attr:`dropout` in the blocks of ``net.dropout_where``."""
        net = dataclasses.replace(self.net, dropout=self.dropout)
        return build_network(net, self.spatial_dims, self.in_channels, self.num_classes)

    def sample_logits(self, models: Sequence[nn.Module], x: Tensor) -> Tensor:
        """``M = samples`` logits ``(M, B, K, *spatial)`` with only the dropout modules in train mode."""
        model = models[0]
        drops = dropout_modules(model)
        if not drops:
            raise ConfigError("mc-dropout needs a network with dropout layers (net.dropout > 0 or params.p > 0)")
        modes = {m: m.training for m in model.modules()}
        try:
            model.eval()
            for m in drops:
                m.train()
            if self.params.encoder_once and getattr(model, "encoder_deterministic", False):
                feats = model.encode(x)
                return self._draw(lambda n: model.decode(_repeat_feats(feats, n))["logits"], x.shape[0])
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


def _repeat_feats(feats: list[Tensor], n: int) -> list[Tensor]:
    """Encoder features repeated ``n`` times along the batch (keeping the U-Net's original-size record)."""
    if n == 1:
        return feats
    rep = [_repeat(f, n) for f in feats]
    return EncoderFeatures(rep, feats.spatial) if isinstance(feats, EncoderFeatures) else rep
