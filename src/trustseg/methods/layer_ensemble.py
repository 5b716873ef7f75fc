"""Layer ensembles: one segmentation head per decoder depth, one pass, and AULA.

The network (capabilities ``deep_heads`` and ``all_outputs``, :mod:`trustseg.models.protocol`) is built with
``deep_heads`` forced on: ``H`` heads (for the U-Net ``H = len(channels)``, the bottleneck's and every decoder
depth's, each a 1x1 conv upsampled to full size), coarse -> fine, the finest being the usual output.
Training: the sum over all H heads of Dice + CE against the target. Prediction: the heads after skipping the
``skip`` coarsest ones are the M = H − skip samples (so the predictive mean is the mean of the kept heads and the
sample-based measures, MI, EPKL, variance, apply).

AULA (area under layer agreement, :func:`layer_agreement`) scores how much consecutive heads agree; higher = more
reliable. Heads are binarised properly, by argmax over K (the authors' code thresholds soft maps at p > 0,
which marks every pixel as foreground).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from trustseg.core.errors import ConfigError
from trustseg.measures.image import layer_agreement  # noqa: F401  (AULA lives in measures.image)
from trustseg.methods.base import METHODS, Batch, TrainContext, param_error
from trustseg.methods.losses import dice_ce_loss
from trustseg.methods.softmax import LogitMethod, SegTarget
from trustseg.models.factory import build_network
from trustseg.models.protocol import ALL_OUTPUTS, DEEP_HEADS, AllOutputs


@dataclass(frozen=True)
class LayerEnsembleParams:
    """Parameters of ``layer-ensemble``.

    Attributes:
        skip: Number T of coarsest heads left out of the prediction (they still train).
        target: Training target (``soft``, ``random_rater`` or ``majority``).
    """

    skip: int = 1
    target: SegTarget = "soft"

    def __post_init__(self) -> None:
        if self.skip < 0:
            raise param_error("layer-ensemble", "skip", "be >= 0", self.skip)


class DeepHeadsMethod(LogitMethod):
    """A one-pass method on a network with a head per decoder depth (``deep_heads`` on) whose first ``skip`` heads
    (``self.params.skip``) are left out of the prediction: the check of ``skip``, H and the network."""

    samples_are_heads = True
    required_capabilities = frozenset({DEEP_HEADS, ALL_OUTPUTS})

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        heads = self.num_heads
        if self.params.skip >= heads:
            raise ConfigError(
                f"method.{self.name}.skip must be in 0..{heads - 1} (the network has {heads} heads), "
                f"got {self.params.skip}"
            )

    @property
    def num_heads(self) -> int:
        """H, the network's number of heads with deep heads on (its params' ``num_heads``)."""
        return int(self.net.with_params(deep_heads=True).typed_params.num_heads)

    def build_model(self, member: int = 0) -> nn.Module:
        """The network with ``deep_heads`` on."""
        net = self.net.with_params(deep_heads=True)
        return build_network(net, self.spatial_dims, self.in_channels, self.num_classes)

    def sample_logits(self, models: Sequence[nn.Module], x: Tensor) -> Tensor:
        """Untempered logits of the kept heads ``(H − skip, B, K, *spatial)``, coarse -> fine."""
        return self.head_logits(models, x)[self.params.skip :]

    def head_logits(self, models: Sequence[nn.Module], x: Tensor) -> Tensor:
        """Logits of all H heads ``(H, B, K, *spatial)`` (for AULA over every head)."""
        return torch.stack(cast(AllOutputs, models[0]).forward_all(x)["heads"], 0)  # required capability


@METHODS.register("layer-ensemble", doc="layer ensemble: a head per decoder depth, one pass, M = heads - skip")
class LayerEnsemble(DeepHeadsMethod):
    """Layer ensemble: heads on the bottleneck and every decoder depth, mean of the heads after the first T."""

    name = "layer-ensemble"
    Params = LayerEnsembleParams

    def loss(self, model: nn.Module, batch: Batch, ctx: TrainContext) -> tuple[Tensor, dict[str, float]]:
        """``Σ_heads Dice + CE(head logits, target)``; logs the total and each head's term."""
        target = batch.target(self.target, ctx.generator)
        heads = model(batch.image, all_outputs=True)["heads"]  # through __call__: works under DDP
        terms = [dice_ce_loss(z, target, weight=batch.valid) for z in heads]
        loss = torch.stack(terms).sum()
        logs = {"loss": float(loss.detach())}
        logs.update({f"head{i}": float(t.detach()) for i, t in enumerate(terms)})
        return loss, logs
