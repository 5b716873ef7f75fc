"""Evidential deep learning (EDL) segmentation: one pass, a Dirichlet per pixel.

The U-Net's outputs z are read as evidence: α = g(z) + 1 (g = softplus by default, or exp), p = α / S, vacuity
u = K / S. Training uses :func:`trustseg.methods.edl_losses.edl_loss` (L_ACE + annealed KL + Tversky-style
Dice, SURE's training terms; where its public code differs, ``docs/methods_evidential.md`` says so); prediction
returns ``Predictive(probs=p_T[None], alpha=α)`` (M = 1) with the temperature-scaled mean
``p_T = α^(1/T) / Σ_k α_k^(1/T)`` (= α / S until a temperature is fitted), from which the measures layer reads the
vacuity (from α) and the usual entropy-based measures of p_T. See ``docs/methods_evidential.md``.

Calibration: trained with softplus evidence, the Dirichlet mean α / S is strongly under-confident (the evidence
stays small: S ≈ 6 for K = 3 on the synthetic data, top-label ECE ≈ 0.3 against ≈ 0.02 for softmax); post-hoc
temperature scaling with ln α as the logits (``temperature_scaling: log_alpha``, the default) removes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from trustseg.core.errors import ConfigError
from trustseg.core.predictive import Predictive
from trustseg.methods.base import METHODS, Batch, Method, TrainContext, param_error
from trustseg.methods.edl_losses import edl_loss, evidence_to_alpha, tempered_mean
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
        activation: Evidence activation g in α = g(z) + 1: ``softplus`` (SURE's code, the default) or ``exp``
            (exp(clamp(z, −10, 10)); the evidence grows faster, less under-confident without temperature).
        temperature_scaling: ``log_alpha`` (default): post-hoc temperature scaling applies, with ln α as the
            logits (``p_T = softmax(ln α / T)``; vacuity and the Dirichlet measures still read the untempered
            α); ``none``: refused, as before (``fit_method_temperature`` raises).
    """

    loss_variant: Literal["digamma", "log", "mse"] = "digamma"
    kl_anneal_epochs: int = 20
    w_ace: float = 10.0
    w_kl: float = 1.0
    w_dice: float = 10.0
    target: Literal["soft", "random_rater", "majority"] = "soft"
    activation: Literal["softplus", "exp"] = "softplus"
    temperature_scaling: Literal["log_alpha", "none"] = "log_alpha"

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

    ``loss`` trains ``α = g(z) + 1`` with :func:`~trustseg.methods.edl_losses.edl_loss`; ``predict`` returns
    ``alpha = α`` and ``probs = softmax(ln α / T)[None]`` ``(1, B, K, *spatial)``, which is ``(α / S)[None]``
    at the default ``T = 1``. :meth:`sample_logits` gives ``ln α`` to the temperature fit (unless
    ``temperature_scaling`` is ``none``).
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
            activation=p.activation,
        )

    def loss(self, model: nn.Module, batch: Batch, ctx: TrainContext) -> tuple[Tensor, dict[str, float]]:
        """EDL loss of one batch; logs the unweighted terms and the KL weight."""
        y = batch.target(self.target, ctx.generator)
        loss, logs = self.edl_loss(model(batch.image), y, ctx, batch.valid)
        logs["loss"] = float(loss.detach())
        return loss, logs

    def alpha(self, logits: Tensor) -> Tensor:
        """Concentrations α = g(z) + 1 ``(B, K, *spatial)`` of raw outputs with this method's activation."""
        return evidence_to_alpha(logits, self.params.activation)

    def sample_logits(self, models: Sequence[nn.Module], x: Tensor) -> Tensor:
        """Untempered ``ln α`` ``(1, B, K, *spatial)``: what post-hoc temperature scaling fits (softmax(ln α) = α/S).

        Raises:
            ConfigError: with ``temperature_scaling: none``.
        """
        if self.params.temperature_scaling == "none":
            raise ConfigError(
                f"method {self.name!r} predicts no logits; temperature scaling does not apply to it with "
                f"method.{self.name}.temperature_scaling: none (use log_alpha)"
            )
        return torch.log(self.alpha(models[0](x)))[None]

    def predict(self, models: Sequence[nn.Module], x: Tensor) -> Predictive:
        """Dirichlet prediction: ``alpha`` ``(B, K, *spatial)`` and ``probs`` ``(1, B, K, *spatial)``, the
        temperature-scaled mean ``α^(1/T) / Σ_k α_k^(1/T)`` (α / S at T = 1)."""
        alpha = self.alpha(models[0](x))
        t = 1.0 if self.params.temperature_scaling == "none" else float(self.temperature)
        if t == 1.0:
            return Predictive.from_alpha(alpha)
        return Predictive(probs=tempered_mean(alpha, t)[None], alpha=alpha)
