"""SURE: evidential segmentation with uncertainty supervision (gradient and noise principles).

Total loss (see :mod:`trustseg.methods.sure_losses` for the terms and ``docs/methods_evidential.md``):

    L = L_EDL + a_t · (β·L_gu + γ·L_nu),    L_nu = c_μ·L_μ + c_d·L_d + c_far·L_far,

with a_t = 0 during the warm-up (the first ``warmup_frac`` of the epochs), then a_t = ramp_start^(1 − s) rising
exponentially to 1 at the last epoch (:func:`~trustseg.methods.sure_losses.sure_ramp`; ``ramp_end: official``: to
1 one epoch after the last, as the official code).

Where the official code (github.com/suiannaius/SURE) differs, a parameter selects its behaviour (defaults: ours):
``ramp_end``, ``gu_reduction``, ``mu_form``, ``sort_mu``, ``fill_up``, ``d_far_centres``, ``d_reduction``;
``docs/methods.md`` ("SURE: trustseg vs the official code") lists them with the reasons.

One supervised step (a_t > 0, γ > 0) runs the network four times: the clean image (with gradient), a whole-image
noised probe x + N(probe_mu, σ²) (no gradient; its vacuity marks the "active hard samples", pixels whose
uncertainty did not rise), and two patch-noised copies x + n(μ1), x + n(μ2), μ1, μ2 ~ U(0, 1) (sorted, μ1 < μ2,
unless ``sort_mu`` is off), noise only in k^ndim patches centred on active hard samples (with gradient).
Prediction is the evidential one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from trustseg.methods.base import METHODS, Batch, TrainContext, param_error
from trustseg.methods.edl_losses import vacuity
from trustseg.methods.evidential import Evidential, EvidentialParams
from trustseg.methods.sure_losses import (
    FarCentres,
    GuReduction,
    MuForm,
    PairReduction,
    RampEnd,
    boundary_distance,
    far_loss,
    gradient_uncertainty_loss,
    image_gradient,
    noise_distance_loss,
    noise_mu_loss,
    sure_ramp,
)
from trustseg.methods.sure_patches import FillUp, add_patch_noise, select_patch_centres


@dataclass(frozen=True)
class SureParams(EvidentialParams):
    """Parameters of ``sure``: the EDL ones plus the supervision weights and sampling details.

    The authors' weights are not public (their code defaults to β = γ = 0, i.e. plain EDL); ours are a starting
    point to tune on validation data.

    Attributes:
        beta: Weight β of the gradient-uncertainty loss L_gu.
        gamma: Weight γ of the noise-uncertainty loss L_nu.
        c_mu: Weight of L_μ (uncertainty rises with the noise level) inside L_nu.
        c_d: Weight of L_d (nearer the boundary, larger rise) inside L_nu.
        c_far: Weight of L_far (low uncertainty far from the boundary) inside L_nu.
        warmup_frac: Fraction of the epochs trained with plain EDL before the supervision starts.
        ramp_start: a_t at the first supervised epoch (rises exponentially to 1 at the last epoch).
        band: Boundary band of L_gu: pixels with d ≤ band.
        near: Near-boundary threshold: patch centres and L_d use d ≤ near, L_far uses d > near.
        gu_pairs: Random pixel pairs per image for L_gu (0 = every pair; quadratic in the band size).
        patch_size: Side k of the noise patches (k×k in 2D, k×k×k in 3D).
        patches_per_class: Non-overlapping patches per class and image.
        noise_sigma: Standard deviation σ of the noise N(μ, σ²) (patches and probe).
        probe_mu: Mean of the whole-image probe noise that finds the active hard samples.
        ramp_end: ``last`` (a_t = 1 at the last epoch) or ``official`` (1 one epoch later, as the official code:
            the last epoch gets ramp_start^(1/(T − e0)), 0.936 for 100 epochs).
        gu_reduction: L_gu's normalisation: ``mean`` (over all pairs), ``violating`` (over violating pairs), or
            ``official`` (violating-pair means summed over chunks of 20000 pairs, ÷ batch size; set
            ``gu_pairs: 10000000`` for the official run's scale).
        mu_form: L_μ: ``chain`` (clean → μ1 → μ2), ``chain_direct`` (plus clean → μ2) or ``official`` (three
            μ-weighted terms, each averaged over its violating centres).
        sort_mu: Sort the two noise means so that μ1 < μ2 (the official code does not).
        fill_up: Where too few active samples fit: ``near`` (near-boundary pixels of the class) or ``anywhere``
            (random patches anywhere in the image, as the official sampler).
        d_far_centres: L_d's centres beyond ``near``: ``drop`` or ``zero`` (kept with Δu = 0, as the official).
        d_reduction: L_d's normalisation: ``mean`` (all pairs) or ``official`` (violating pairs, ÷ batch size).
    """

    beta: float = 1.0
    gamma: float = 1.0
    c_mu: float = 1.0
    c_d: float = 1.0
    c_far: float = 100.0
    warmup_frac: float = 0.3
    ramp_start: float = 0.01
    band: float = 1.0
    near: float = 4.0
    gu_pairs: int = 4096
    patch_size: int = 5
    patches_per_class: int = 3
    noise_sigma: float = 0.3
    probe_mu: float = 0.5
    ramp_end: RampEnd = "last"
    gu_reduction: GuReduction = "mean"
    mu_form: MuForm = "chain"
    sort_mu: bool = True
    fill_up: FillUp = "near"
    d_far_centres: FarCentres = "drop"
    d_reduction: PairReduction = "mean"

    METHOD: ClassVar[str] = "sure"

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("beta", "gamma", "c_mu", "c_d", "c_far", "noise_sigma", "gu_pairs"):
            if getattr(self, name) < 0:
                raise param_error("sure", name, "be >= 0", getattr(self, name))
        if not 0.0 <= self.warmup_frac <= 1.0:
            raise param_error("sure", "warmup_frac", "be in [0, 1]", self.warmup_frac)
        if not 0.0 < self.ramp_start <= 1.0:
            raise param_error("sure", "ramp_start", "be in (0, 1]", self.ramp_start)
        if self.patch_size < 1:
            raise param_error("sure", "patch_size", "be >= 1", self.patch_size)
        if self.patches_per_class < 0:
            raise param_error("sure", "patches_per_class", "be >= 0", self.patches_per_class)


@METHODS.register("sure", doc="evidential U-Net + SURE gradient/noise uncertainty supervision; one pass")
class Sure(Evidential):
    """SURE (uncertainty-supervised evidential segmentation). Predicts like :class:`Evidential`."""

    name = "sure"
    Params = SureParams

    def supervision_terms(
        self, model: nn.Module, x: Tensor, alpha: Tensor, y: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, dict[str, float]]:
        """The unweighted-by-a_t supervision losses of one batch.

        Args:
            model: The network (logits = evidence).
            x: ``(B, C, *spatial)`` clean images.
            alpha: ``(B, K, *spatial)`` concentrations of the clean pass (with gradient).
            y: ``(B, K, *spatial)`` target; its argmax defines the boundary and the patch classes.
            generator: CPU generator for pairs, noise levels, noise and patch order.

        Returns:
            ``(L_gu, L_nu, logs)`` with L_nu = c_μ·L_μ + c_d·L_d + c_far·L_far; a term whose weight (β or γ) is 0
            is not computed (returned as 0).
        """
        p = self.params
        u0 = vacuity(alpha)
        d = boundary_distance(y)
        zero = u0.sum() * 0.0
        l_gu, l_nu, logs = zero, zero, {}
        if p.beta > 0:
            l_gu = gradient_uncertainty_loss(
                u0, image_gradient(x), d, p.band, p.gu_pairs or None, generator, reduction=p.gu_reduction
            )
            logs["sure_gu"] = float(l_gu.detach())
        if p.gamma > 0:
            with torch.no_grad():
                probe = x + p.probe_mu + p.noise_sigma * torch.randn(x.shape, generator=generator).to(x)
                active = vacuity(self.alpha(model(probe))) <= u0.detach()
            centres = select_patch_centres(
                d,
                active,
                y.argmax(1),
                self.num_classes,
                p.patch_size,
                p.patches_per_class,
                p.near,
                generator,
                fill_up=p.fill_up,
            )
            mu1, mu2 = torch.rand(2, generator=generator).tolist()
            if p.sort_mu:
                mu1, mu2 = sorted((mu1, mu2))
            noised = []
            for mu in (mu1, mu2):
                xn = add_patch_noise(x, centres, p.patch_size, mu, p.noise_sigma, generator)
                noised.append(vacuity(self.alpha(model(xn))))
            u1, u2 = noised
            # The clean uncertainty is a fixed reference for the noise terms: they shape the response to noise,
            # while the clean map is governed by L_EDL and L_far (as in the authors' code).
            l_mu = noise_mu_loss(u0.detach(), u1, u2, centres, form=p.mu_form, mu=(mu1, mu2), d=d, near=p.near)
            l_d = noise_distance_loss(
                u0.detach(), u1, u2, d, centres, p.near, far_centres=p.d_far_centres, reduction=p.d_reduction
            )
            l_far = far_loss(u0, d, p.near)
            l_nu = p.c_mu * l_mu + p.c_d * l_d + p.c_far * l_far
            logs.update(
                sure_mu=float(l_mu.detach()),
                sure_d=float(l_d.detach()),
                sure_far=float(l_far.detach()),
                sure_nu=float(l_nu.detach()),
                sure_patches=float(sum(int(c.shape[0]) for c in centres)) / x.shape[0],
                sure_active_frac=float(active.float().mean()),
            )
        return l_gu, l_nu, logs

    def loss(self, model: nn.Module, batch: Batch, ctx: TrainContext) -> tuple[Tensor, dict[str, float]]:
        """L_EDL + a_t(β·L_gu + γ·L_nu); the supervision runs only when a_t > 0."""
        p = self.params
        y = batch.target(self.target, ctx.generator)
        logits = model(batch.image)
        loss, logs = self.edl_loss(logits, y, ctx, batch.valid)
        a_t = sure_ramp(ctx.epoch, ctx.max_epochs, p.warmup_frac, p.ramp_start, end=p.ramp_end)
        logs["sure_weight"] = a_t
        if a_t > 0 and (p.beta > 0 or p.gamma > 0):
            l_gu, l_nu, sup_logs = self.supervision_terms(model, batch.image, self.alpha(logits), y, ctx.generator)
            loss = loss + a_t * (p.beta * l_gu + p.gamma * l_nu)
            logs.update(sup_logs)
        logs["loss"] = float(loss.detach())
        return loss, logs
