"""EDUE: expert-disagreement-guided, one-pass uncertainty (our design; the paper's details are not public).

This is the regression-head variant (the ``edue`` method); the heads-variance variant, whose uncertainty is the
variance over the decoder heads of one network, is ``edue-heads`` (:mod:`trustseg.methods.edue_heads`).

Network: our U-Net with one extra 1x1 output head, the *disagreement guidance module*, on the final decoder
features (shared with the segmentation head). Its raw output v becomes the predicted rater variance

    σ̂² = (1 − 1/K) · sigmoid(v)    ∈ (0, 1 − 1/K),

where 1 − 1/K is the largest possible value of the target Σ_k ȳ_k(1 − ȳ_k) (all K classes equally voted). The
head's bias starts at ``init_logit`` (0: σ̂² ≈ (1 − 1/K)/2 at the start). A negative bias encodes the prior "no
disagreement" but slows learning: sigmoid is flat there and the MSE gradient vanishes with it (on a toy map,
bias −4 barely moved the variance MSE in 40 Adam steps where bias 0 cut it by 3.5×).

Loss per step, for a batch with R ≥ 2 raters:

    L = w_dice·Dice(softmax(z), y^(r_b)) + w_ce·CE(z, y^(r_b)) + λ · mean_x (σ̂²_x − Σ_k ȳ_k,x(1 − ȳ_k,x))²,

with r_b one rater drawn uniformly per image and step (random-annotation sampling: in expectation the
cross-entropy is taken against the soft label, which is what calibrates the segmentation head) and λ = ``var_weight``.
Prediction: ``probs = softmax(z / T)[None]`` (M = 1, T the post-hoc temperature) and
``extras["rater_variance"] = σ̂²`` ``(B, 1, *spatial)``, which the measures layer reads as ``predicted_variance``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn

from trustseg.core.predictive import Predictive
from trustseg.methods.base import METHODS, Batch, Method, TrainContext, param_error
from trustseg.methods.losses import soft_cross_entropy, soft_dice_loss, voxel_weight, weighted_mean
from trustseg.models.factory import build_network
from trustseg.models.protocol import ALL_OUTPUTS, EXTRA_HEADS, AllOutputs

#: Name of the extra output head and of the prediction's extra map.
VARIANCE_KEY = "rater_variance"


@dataclass(frozen=True)
class EdueParams:
    """Parameters of ``edue`` (our defaults; the paper's weights are not public).

    Attributes:
        var_weight: λ, weight of the variance MSE. The target is small (0 on most pixels, at most 1 − 1/K), so
            the MSE is typically 1e-3..1e-2 once the head has learnt the background, against ≈ 0.1..0.5 for
            Dice + CE; λ = 3 gives the guidance head a real pull on the shared features without letting it
            dominate them (on synthetic 2-class data λ = 1..3 correlated best with the raters; λ = 100 cost
            segmentation Dice). Raise it when disagreement pixels are rare (smaller MSE).
        w_dice: Weight of the soft Dice term of the segmentation head.
        w_ce: Weight of the cross-entropy term of the segmentation head.
        init_logit: Initial bias of the variance head (0 = σ̂² ≈ (1 − 1/K)/2; negative values start near "no
            disagreement" but learn slower through the flat sigmoid).
    """

    var_weight: float = 3.0
    w_dice: float = 1.0
    w_ce: float = 1.0
    init_logit: float = 0.0

    def __post_init__(self) -> None:
        for name in ("var_weight", "w_dice", "w_ce"):
            if getattr(self, name) < 0:
                raise param_error("edue", name, "be >= 0", getattr(self, name))


def variance_from_raw(raw: Tensor, num_classes: int) -> Tensor:
    """Predicted rater variance σ̂² = (1 − 1/K)·sigmoid(v) from the raw head output ``(B, 1, *spatial)``."""
    return (1.0 - 1.0 / num_classes) * torch.sigmoid(raw.float())


@METHODS.register("edue", doc="expert-disagreement guided U-Net: rater-variance head + random-rater training; one pass")
class Edue(Method):
    """Expert-disagreement-guided one-pass uncertainty (EDUE); needs R ≥ 2 raters per case."""

    name = "edue"
    fixed_target = "all_raters"
    Params = EdueParams
    needs_raters = True
    primary_measure = "predicted_variance"
    required_capabilities = frozenset({EXTRA_HEADS, ALL_OUTPUTS})

    def build_model(self, member: int = 0) -> nn.Module:
        """The network with the extra ``rater_variance`` head (its bias, if any, initialised to ``init_logit``)."""
        model = build_network(
            self.net, self.spatial_dims, self.in_channels, self.num_classes, extra_outputs={VARIANCE_KEY: 1}
        )
        head = cast(nn.ModuleDict, model.extra_heads)[VARIANCE_KEY]
        bias = getattr(head, "bias", None)
        if bias is not None:
            with torch.no_grad():
                bias.fill_(self.params.init_logit)
        return model

    def outputs(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``(B, K, *spatial)`` and predicted variance σ̂² ``(B, 1, *spatial)`` of one pass."""
        out = model(x, all_outputs=True)  # through __call__: works under DDP
        return out["logits"], variance_from_raw(out[VARIANCE_KEY], self.num_classes)

    def loss(self, model: nn.Module, batch: Batch, ctx: TrainContext) -> tuple[Tensor, dict[str, float]]:
        """Dice + CE against one random rater per image, plus λ·MSE(σ̂², rater variance)."""
        self.check_raters(int(batch.labels.shape[1]))
        p = self.params
        logits, var = self.outputs(model, batch.image)
        y = batch.random_rater(ctx.generator)
        dice = soft_dice_loss(torch.softmax(logits, 1), y, weight=batch.valid)
        ce = soft_cross_entropy(logits, y, weight=batch.valid)
        se = (var - batch.rater_variance().to(var.dtype)) ** 2
        mse = weighted_mean(se, voxel_weight(batch.valid, se))
        loss = p.w_dice * dice + p.w_ce * ce + p.var_weight * mse
        logs = {"loss": float(loss.detach()), "dice": float(dice.detach()), "ce": float(ce.detach())}
        logs["var_mse"] = float(mse.detach())
        return loss, logs

    def sample_logits(self, models: Sequence[nn.Module], x: Tensor) -> Tensor:
        """Untempered segmentation logits ``(1, B, K, *spatial)`` (what post-hoc temperature scaling fits)."""
        return cast(AllOutputs, models[0]).forward_all(x)["logits"][None]  # required capability

    def predict(self, models: Sequence[nn.Module], x: Tensor) -> Predictive:
        """``probs`` ``(1, B, K, *spatial)`` = softmax(z / T) and ``extras["rater_variance"]`` ``(B, 1, *spatial)``."""
        logits, var = self.outputs(models[0], x)
        probs = torch.softmax(logits.float() / self.temperature, 1)[None]
        return Predictive(probs=probs, extras={VARIANCE_KEY: var})
