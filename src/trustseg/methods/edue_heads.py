"""EDUE, heads-variance variant (``edue-heads``): the uncertainty is the variance over several outputs of ONE
network, guided during training towards the raters' variance.

This is EDUE as the paper's figures describe it (variance heatmaps of EDUE beside those of layer ensembles and
deep ensembles; EDUE's *layer agreement* in the OOD figure); the regression-head variant (a separate variance
output, :mod:`trustseg.methods.edue`) stays the ``edue`` method.

Network: our U-Net with ``deep_heads`` forced on (the heads of layer ensembles): ``H`` segmentation heads (for the
U-Net ``H = len(channels)``: the bottleneck's and every decoder depth's, each a 1x1 conv upsampled to full size),
coarse -> fine. The ``skip`` coarsest heads (default 1, the bottleneck's) still train but are left out of the
variance and of the prediction, so the ``M = H − skip`` kept heads are the decoder depths' heads.

Loss per step, for a batch with R ≥ 2 raters and head probabilities ``p^(h) = softmax(z^(h))``:

    L = (1/H) Σ_h [w_dice·Dice(p^(h), y^(r_{h,b})) + w_ce·CE(z^(h), y^(r_{h,b}))] + λ · mean_x (V_x − D_x)²,

    V = Σ_k Var_m p_k^(m)  (population variance over the M kept heads),   D = Σ_k ȳ_k (1 − ȳ_k)  (raters),

with ``r_{h,b}`` one rater drawn uniformly per head, image and step from the training generator (so every head
sees a different random annotation; seeded, reproducible) and ``λ = var_weight``. The two maps share one scale:
M heads that copied M raters' one-hot masks would have ``V = Σ_k p̄_k(1 − p̄_k)``, the same formula as ``D``.
Both are 0 where every head and every rater agree; ``V ≤ 1 − 1/K``.

Prediction (one pass): ``probs = softmax(z^(m) / T)`` of the kept heads ``(M, B, K, *spatial)`` (the predictive
mean is the heads' mean; entropy, MI, EPKL and ``variance`` apply; ``samples_are_heads`` so layer agreement /
AULA apply too) and ``extras["rater_variance"] = V`` ``(B, 1, *spatial)`` of those tempered probabilities, which
the measures layer reads as ``predicted_variance`` (equal to the ``variance`` measure of the same prediction), so
both EDUE variants are compared under one measure name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trustseg.core.predictive import Predictive
from trustseg.methods.base import METHODS, Batch, TrainContext, param_error
from trustseg.methods.edue import VARIANCE_KEY
from trustseg.methods.layer_ensemble import DeepHeadsMethod
from trustseg.methods.losses import dice_ce_loss, voxel_weight, weighted_mean


@dataclass(frozen=True)
class EdueHeadsParams:
    """Parameters of ``edue-heads`` (our defaults; the paper's weights are not public).

    Attributes:
        var_weight: λ, weight of the MSE between the heads' variance and the raters' variance (the same default
            as ``edue``'s variance MSE, whose target is the same map).
        skip: Number of coarsest heads left out of the variance and the prediction (they still train); the
            default 1 leaves the bottleneck's head out, so the kept heads are the decoder depths'. ``M = H − skip``
            must be ≥ 1; with ``M = 1`` the heads' variance is 0 everywhere (use a deeper network or ``skip: 0``).
        w_dice: Weight of each head's soft Dice term.
        w_ce: Weight of each head's cross-entropy term.
    """

    var_weight: float = 3.0
    skip: int = 1
    w_dice: float = 1.0
    w_ce: float = 1.0

    def __post_init__(self) -> None:
        for name in ("var_weight", "w_dice", "w_ce"):
            if getattr(self, name) < 0:
                raise param_error("edue-heads", name, "be >= 0", getattr(self, name))
        if self.skip < 0:
            raise param_error("edue-heads", "skip", "be >= 0", self.skip)


def heads_variance(probs: Tensor) -> Tensor:
    """The heads' variance ``V = Σ_k Var_m p_k^(m)`` (population variance, divisor M) of ``(M, B, K, *sp)``.

    Returns:
        ``(B, 1, *spatial)``; 0 where all M heads agree.

    Example:
        >>> p = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(2, 1, 2, 1)  # two heads, one pixel, K = 2
        >>> heads_variance(p).flatten().tolist()
        [0.5]
    """
    return probs.var(0, correction=0).sum(1, keepdim=True)


def variance_mse(probs: Tensor, rater_variance: Tensor, valid: Tensor | None = None) -> Tensor:
    """``mean_x (V_x − D_x)²`` between the heads' variance of ``probs`` ``(M, B, K, *sp)`` and the raters'
    variance ``D`` ``(B, 1, *sp)``, weighted by the ``(B, *sp)`` field-of-view map ``valid`` (``None``: every
    voxel)."""
    se = (heads_variance(probs) - rater_variance.to(probs.dtype)) ** 2
    return weighted_mean(se, voxel_weight(valid, se))


@METHODS.register(
    "edue-heads",
    doc="EDUE, heads variant: random-rater deep heads, their variance guided to the raters' variance; one pass",
)
class EdueHeads(DeepHeadsMethod):
    """EDUE with the uncertainty as the variance over the decoder depths' heads; needs R ≥ 2 raters per case."""

    name = "edue-heads"
    fixed_target = "all_raters"
    Params = EdueHeadsParams
    needs_raters = True
    primary_measure = "predicted_variance"

    def loss(self, model: nn.Module, batch: Batch, ctx: TrainContext) -> tuple[Tensor, dict[str, float]]:
        """Mean over heads of Dice + CE against a random rater per head and image, plus λ·MSE(V, D)."""
        self.check_raters(int(batch.labels.shape[1]))
        p = self.params
        heads = model(batch.image, all_outputs=True)["heads"]  # through __call__: works under DDP
        # one rater per head and image, drawn in head order from the seeded generator
        terms = [
            dice_ce_loss(z, batch.random_rater(ctx.generator), p.w_dice, p.w_ce, weight=batch.valid) for z in heads
        ]
        seg = torch.stack(terms).mean()
        kept = torch.softmax(torch.stack(heads[p.skip :]).float(), 2)
        mse = variance_mse(kept, batch.rater_variance(), batch.valid)
        loss = seg + p.var_weight * mse
        logs = {"loss": float(loss.detach()), "seg": float(seg.detach()), "var_mse": float(mse.detach())}
        logs.update({f"head{i}": float(t.detach()) for i, t in enumerate(terms)})
        return loss, logs

    def predict(self, models: Sequence[nn.Module], x: Tensor) -> Predictive:
        """``probs`` ``(M, B, K, *spatial)`` = softmax(z^(m) / T) of the kept heads and
        ``extras["rater_variance"]`` = their variance ``(B, 1, *spatial)``."""
        pred = super().predict(models, x)
        pred.extras[VARIANCE_KEY] = heads_variance(pred.probs)
        return pred
