"""The deterministic softmax U-Net, and the base class of every method that predicts through logits.

Training: Dice + cross-entropy (:func:`~trustseg.methods.losses.dice_ce_loss`, weights 1 and 1) of the logits
against the target chosen by ``Params.target`` (the soft label ȳ by default). Prediction: one pass,
``p = softmax(z / T)`` with the post-hoc temperature ``T`` (:mod:`trustseg.methods.temperature`; 1 until fitted),
``M = 1``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from trustseg.core.predictive import Predictive
from trustseg.methods.base import METHODS, Batch, Method, TrainContext
from trustseg.methods.losses import dice_ce_loss
from trustseg.models.factory import build_network

SegTarget = Literal["soft", "random_rater", "majority"]


class LogitMethod(Method):
    """A method whose M samples are logits ``(M, B, K, *spatial)``: temperature scaling applies to it.

    Subclasses implement :meth:`sample_logits` (abstract); :meth:`predict` divides them by ``self.temperature``
    and takes the softmax over K. The default :meth:`loss` is Dice + CE of ``model(image)`` against
    ``self.target`` (the ``target`` parameter).
    """

    def build_model(self, member: int = 0) -> nn.Module:
        """A fresh U-Net (``self.net``) giving logits ``(B, K, *spatial)``."""
        return build_network(self.net, self.spatial_dims, self.in_channels, self.num_classes)

    def loss(self, model: nn.Module, batch: Batch, ctx: TrainContext) -> tuple[Tensor, dict[str, float]]:
        """``Dice + CE(model(image), target)`` with the target of ``self.target``."""
        target = batch.target(self.target, ctx.generator)
        loss = dice_ce_loss(model(batch.image), target, weight=batch.valid)
        return loss, {"loss": float(loss.detach())}

    @abc.abstractmethod
    def sample_logits(self, models: Sequence[nn.Module], x: Tensor) -> Tensor:
        """Untempered logits of every sample, ``(M, B, K, *spatial)``."""

    def predict(self, models: Sequence[nn.Module], x: Tensor) -> Predictive:
        """``softmax(z_m / T)`` over K for every sample ``m`` -> probabilities ``(M, B, K, *spatial)``.

        Gradients are not switched off here: call it under :func:`torch.no_grad` at inference.
        """
        return Predictive.from_logits(self.sample_logits(models, x) / self.temperature)


@dataclass(frozen=True)
class SoftmaxParams:
    """Parameters of ``softmax``.

    Attributes:
        target: What the loss is trained against: ``soft`` (the soft label ȳ), ``random_rater`` (one rater drawn
            per image and step) or ``majority`` (the majority vote).
    """

    target: SegTarget = "soft"


@METHODS.register("softmax", doc="deterministic softmax U-Net (Dice+CE), the baseline; one pass, M = 1")
class Softmax(LogitMethod):
    """Deterministic softmax U-Net: one pass, M = 1."""

    name = "softmax"
    Params = SoftmaxParams

    def sample_logits(self, models: Sequence[nn.Module], x: Tensor) -> Tensor:
        """Logits of the single model, ``(1, B, K, *spatial)``."""
        return models[0](x).unsqueeze(0)
