"""Evidential deep learning (EDL) segmentation: one pass, a Dirichlet per pixel.

The U-Net's outputs z are read as evidence: α = softplus(z) + 1, p = α / S, vacuity u = K / S. Training uses
:func:`trustseg.methods.edl_losses.edl_loss` (L_ACE + annealed KL + Tversky-style Dice, as in SURE's code);
prediction returns ``Predictive.from_alpha(α)`` (M = 1), from which the measures layer reads the vacuity and the
usual entropy-based measures of the Dirichlet mean. See ``docs/methods_evidential.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor, nn

from trustseg.core.predictive import Predictive
from trustseg.methods.base import METHODS, Batch, Method, TrainContext, param_error
from trustseg.methods.edl_losses import edl_loss, evidence_to_alpha
from trustseg.models.factory import build_network


@dataclass(frozen=True)
class EvidentialParams:
    """Parameters of the ``evidential`` method (defaults = SURE's code).

    Attributes:
        loss_variant: Form of the Bayes-risk term: ``digamma`` Σ y(ψ(S) − ψ(α)), ``log`` Σ y(ln S − ln α) or
            ``mse`` Σ (y − p)² + p(1 − p)/(S + 1).
        kl_anneal_epochs: The KL weight ramps as λ_t = min(1, epoch / kl_anneal_epochs).
        w_ace: Weight of L_ACE.
        w_kl: Weight of the (annealed) KL term.
        w_dice: Weight of the Tversky-style Dice term.
        target: What the loss is trained against: ``soft`` (mean of the raters' one-hot maps; the default: it
            uses every rater, is deterministic, and equals the one-hot label with a single rater),
            ``random_rater`` (one rater per image and step) or ``majority`` (one-hot majority vote).
    """

    loss_variant: Literal["digamma", "log", "mse"] = "digamma"
    kl_anneal_epochs: int = 20
    w_ace: float = 10.0
    w_kl: float = 1.0
    w_dice: float = 10.0
    target: Literal["soft", "random_rater", "majority"] = "soft"

    #: The method these parameters belong to (named in error messages).
    METHOD: ClassVar[str] = "evidential"

    def __post_init__(self) -> None:
        if self.kl_anneal_epochs < 0:
            raise param_error(self.METHOD, "kl_anneal_epochs", "be >= 0", self.kl_anneal_epochs)
        for name in ("w_ace", "w_kl", "w_dice"):
            if getattr(self, name) < 0:
                raise param_error(self.METHOD, name, "be >= 0", getattr(self, name))


@METHODS.register("evidential", doc="evidential U-Net (Dirichlet per pixel, EDL loss with KL annealing); one pass")
class Evidential(Method):
    """Evidential deep learning segmentation (subjective-logic Dirichlet outputs).

    ``loss`` trains ``α = softplus(z) + 1`` with :func:`~trustseg.methods.edl_losses.edl_loss`; ``predict``
    returns ``Predictive.from_alpha(α)`` with ``probs = (α / S)[None]`` ``(1, B, K, *spatial)``. Post-hoc
    temperature scaling is not applied to evidential outputs (it has no Dirichlet meaning).
    """

    name = "evidential"
    Params = EvidentialParams
    primary_measure = "vacuity"

    def build_model(self, member: int = 0) -> nn.Module:
        """A U-Net whose K outputs are the evidence logits z."""
        return build_network(self.net, self.spatial_dims, self.in_channels, self.num_classes)

    def edl_loss(
        self, logits: Tensor, y: Tensor, ctx: TrainContext, weight: Tensor | None = None
    ) -> tuple[Tensor, dict[str, float]]:
        """The EDL loss of logits ``(B, K, *spatial)`` against target ``y`` with this method's parameters
        (``weight``: the batch's ``valid`` map, or ``None``)."""
        p = self.params
        return edl_loss(
            logits,
            y,
            epoch=ctx.epoch,
            variant=p.loss_variant,
            anneal_epochs=p.kl_anneal_epochs,
            w_ace=p.w_ace,
            w_kl=p.w_kl,
            w_dice=p.w_dice,
            weight=weight,
        )

    def loss(self, model: nn.Module, batch: Batch, ctx: TrainContext) -> tuple[Tensor, dict[str, float]]:
        """EDL loss of one batch; logs the unweighted terms and the KL weight."""
        y = batch.target(self.target, ctx.generator)
        loss, logs = self.edl_loss(model(batch.image), y, ctx, batch.valid)
        logs["loss"] = float(loss.detach())
        return loss, logs

    def predict(self, models: Sequence[nn.Module], x: Tensor) -> Predictive:
        """Dirichlet prediction: ``alpha`` ``(B, K, *spatial)`` and ``probs`` ``(1, B, K, *spatial)``."""
        return Predictive.from_alpha(evidence_to_alpha(models[0](x)))
