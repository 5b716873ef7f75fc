"""SURE's uncertainty-supervision losses (pure functions) and the pieces they are built from.

SURE supervises the evidential vacuity u = K / S with three principles:

1. at the boundary, a sharper image edge (higher gradient magnitude g) gives *lower* uncertainty;
2. near the boundary, more input noise gives more uncertainty, and more so the closer to the boundary;
3. far from the boundary, uncertainty stays near zero.

Notation: ``u`` ``(B, *spatial)`` vacuity maps, ``d`` ``(B, *spatial)`` distance in pixels to the ground-truth
boundary (:func:`boundary_distance`), ``g`` ``(B, *spatial)`` image gradient magnitude (:func:`image_gradient`),
``centres`` a list (one entry per image) of ``(P_b, ndim)`` integer patch centres (:func:`select_patch_centres`).
``u0``, ``u1``, ``u2`` are the vacuity on the clean image and on the two patch-noised copies (noise means
μ1 < μ2).

Losses (each is a mean, so its scale does not depend on the image size):

* :func:`gradient_uncertainty_loss` L_gu = mean over pixel pairs (i, j) in the band d ≤ 1 of
  max(0, (g_i − g_j)(u_i − u_j));
* :func:`noise_mu_loss` L_μ = mean over centres of max(0, u0 − u1) + max(0, u1 − u2);
* :func:`noise_distance_loss` L_d = Σ_{m=1,2} mean over centre pairs (i, j) with d ≤ 4 of
  max(0, (d_i − d_j)(Δ_m,i − Δ_m,j)), Δ_m = u_m − u0;
* :func:`far_loss` L_far = mean of u over pixels with d > 4.

Pair losses average over *all* pairs considered (pairs that obey the principle count as 0), per image, then over
the images that have at least one pair. The authors' code divides by the number of violating pairs instead;
ours keeps the loss continuous as the number of violations goes to zero.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from trustseg.metrics import geometry


def _zero(t: Tensor) -> Tensor:
    """A zero that keeps ``t``'s graph (so ``backward`` works even when no pair exists)."""
    return t.sum() * 0.0


def boundary_distance(target: Tensor) -> Tensor:
    """Distance (pixels) to the union of class boundaries of ``target.argmax(1)``; no gradient.

    Per image :func:`trustseg.metrics.geometry.boundary_distance` (full connectivity: a two-pixel-thick boundary,
    both sides of every interface; Euclidean distance, 0 on the boundary, ``inf`` for a single-class image), so
    the loss trains on the same band the SURE metrics score.

    Args:
        target: ``(B, K, *spatial)`` one-hot or soft target.

    Returns:
        ``(B, *spatial)`` float32 distances on ``target``'s device.
    """
    lab = target.detach().argmax(1)
    return torch.stack([geometry.boundary_distance(lab[b]) for b in range(lab.shape[0])]).float()


def image_gradient(x: Tensor) -> Tensor:
    """Gradient magnitude |∇x| (:func:`trustseg.metrics.geometry.gradient_magnitude` per image), no gradient.

    Args:
        x: ``(B, C, *spatial)`` images.

    Returns:
        ``(B, *spatial)``: mean_c sqrt(Σ_axes (∂x_c/∂axis)²), central differences, one-sided at the borders.
    """
    x = x.detach()
    return torch.stack([geometry.gradient_magnitude(x[b]) for b in range(x.shape[0])])


def sure_ramp(epoch: int, max_epochs: int, warmup_frac: float = 0.3, start_value: float = 0.01) -> float:
    """SURE's weight a_t: 0 during warm-up, then exponential from ``start_value`` to 1 at the last epoch.

    With ``e0 = round(warmup_frac · max_epochs)`` and ``e_last = max_epochs − 1`` (epochs are 0-based):
    a_t = 0 for epoch < e0, else a_t = start_value^(1 − s) with s = min(1, (epoch − e0) / (e_last − e0))
    (a_t = 1 when e_last ≤ e0). For 100 epochs and warmup_frac 0.3: a_29 = 0, a_30 = 0.01, a_99 = 1.
    """
    start = int(round(warmup_frac * max_epochs))
    last = max_epochs - 1
    if epoch < start:
        return 0.0
    if last <= start:
        return 1.0
    s = min(1.0, (epoch - start) / (last - start))
    return float(start_value ** (1.0 - s))


def _pairs(n: int, num_pairs: int | None, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """All unordered pairs i < j (``num_pairs=None``) or ``num_pairs`` random pairs with i ≠ j (CPU indices)."""
    if num_pairs is None:
        ij = torch.triu_indices(n, n, 1)
        return ij[0], ij[1]
    i = torch.randint(n, (num_pairs,), generator=generator)
    j = (i + 1 + torch.randint(n - 1, (num_pairs,), generator=generator)) % n
    return i, j


def gradient_uncertainty_loss(
    u: Tensor,
    g: Tensor,
    d: Tensor,
    band: float = 1.0,
    num_pairs: int | None = 4096,
    generator: torch.Generator | None = None,
) -> Tensor:
    """L_gu: penalise boundary pixel pairs where the sharper edge has the higher uncertainty (principle 1).

    L_gu = mean_b mean_{(i, j)} max(0, (g_i − g_j)(u_i − u_j)) over pairs of pixels of image b with d ≤ ``band``.

    Args:
        u: ``(B, *spatial)`` uncertainty (carries the gradient).
        g: ``(B, *spatial)`` image gradient magnitude.
        d: ``(B, *spatial)`` distance to the boundary.
        band: Pixels with d ≤ band form the boundary band.
        num_pairs: Random pairs (i ≠ j, drawn with ``generator``) per image; ``None`` uses every pair i < j.
        generator: CPU generator for the pair draw.

    Returns:
        Scalar; 0 when no image has two band pixels.
    """
    terms = []
    for b in range(u.shape[0]):
        mask = (d[b] <= band).reshape(-1)
        ub, gb = u[b].reshape(-1)[mask], g[b].reshape(-1)[mask].to(u.dtype)
        if ub.numel() < 2:
            continue
        i, j = (t.to(u.device) for t in _pairs(ub.numel(), num_pairs, generator))
        terms.append(torch.relu((gb[i] - gb[j]) * (ub[i] - ub[j])).mean())
    return torch.stack(terms).mean() if terms else _zero(u)


def select_patch_centres(
    d: Tensor,
    active: Tensor,
    classes: Tensor,
    num_classes: int,
    k: int = 5,
    per_class: int = 3,
    near: float = 4.0,
    generator: torch.Generator | None = None,
) -> list[Tensor]:
    """Centres of non-overlapping k^ndim noise patches on "active hard samples", ``per_class`` per class.

    For each image and class c, candidates are pixels of class c (in ``classes``) with d ≤ ``near`` whose patch
    lies fully inside the image. Active candidates (``active``: the uncertainty did not rise under whole-image
    noise) of every class are tried first, in random order; where fewer than ``per_class`` of them fit, the other
    near-boundary candidates of that class fill up (random order). A candidate is taken when its patch overlaps no
    patch already taken in that image.

    Args:
        d: ``(B, *spatial)`` distance to the boundary.
        active: ``(B, *spatial)`` bool, the active hard samples.
        classes: ``(B, *spatial)`` class map (the target's argmax).
        num_classes: K.
        k: Patch side (odd sizes centre exactly; even sizes put the centre at index k // 2).
        per_class: Patches per class and image.
        near: Distance threshold of the near-boundary region.
        generator: CPU generator for the random order.

    Returns:
        One ``(P_b, ndim)`` int64 tensor (CPU) of centres per image, ``P_b ≤ K · per_class``.
    """
    d_np, act_np, cls_np = (t.detach().cpu().numpy() for t in (d, active, classes))
    spatial = d_np.shape[1:]
    inside = np.zeros(spatial, dtype=bool)
    if all(s >= k for s in spatial):
        inside[tuple(slice(k // 2, s - k + k // 2 + 1) for s in spatial)] = True
    out = []
    for b in range(d_np.shape[0]):
        taken = np.zeros(spatial, dtype=bool)
        centres: list[tuple[int, ...]] = []
        found = [0] * num_classes
        for use_active in (True, False):  # every class's active samples first, then the fill-up
            for c in range(num_classes):
                pool = inside & (cls_np[b] == c) & (d_np[b] <= near) & (act_np[b] == use_active)
                idx = np.flatnonzero(pool)
                if found[c] >= per_class or idx.size == 0:
                    continue
                for n in torch.randperm(idx.size, generator=generator).numpy():
                    centre = np.unravel_index(idx[n], spatial)
                    sl = tuple(slice(int(ci) - k // 2, int(ci) - k // 2 + k) for ci in centre)
                    if taken[sl].any():
                        continue
                    taken[sl] = True
                    centres.append(tuple(int(ci) for ci in centre))
                    found[c] += 1
                    if found[c] >= per_class:
                        break
        out.append(torch.tensor(centres, dtype=torch.long).reshape(-1, len(spatial)))
    return out


def add_patch_noise(
    x: Tensor, centres: list[Tensor], k: int, mu: float, sigma: float, generator: torch.Generator | None = None
) -> Tensor:
    """A copy of ``x`` ``(B, C, *spatial)`` with noise n ~ N(μ, σ²) added inside the k^ndim patch at each centre.

    Each patch gets its own noise draw (all channels). Returns a new tensor; ``x`` is unchanged.
    """
    out = x.detach().clone()
    ndim = x.dim() - 2
    total = sum(int(c.shape[0]) for c in centres)
    if total == 0:
        return out
    noise = (mu + sigma * torch.randn((total, x.shape[1]) + (k,) * ndim, generator=generator)).to(x)
    n = 0
    for b, cs in enumerate(centres):
        for centre in cs.tolist():
            patch: tuple[Any, ...] = (b, slice(None), *(slice(ci - k // 2, ci - k // 2 + k) for ci in centre))
            out[patch] += noise[n]
            n += 1
    return out


def gather_centres(u: Tensor, centres: list[Tensor]) -> list[Tensor]:
    """Values of ``u`` ``(B, *spatial)`` at each image's centres: one ``(P_b,)`` tensor per image."""
    return [u[b][tuple(c.to(u.device).T)] for b, c in enumerate(centres)]


def noise_mu_loss(u0: Tensor, u1: Tensor, u2: Tensor, centres: list[Tensor]) -> Tensor:
    """L_μ: uncertainty must not fall as the noise level rises, clean → μ1 → μ2 (principle 2).

    L_μ = mean over all centres of max(0, u0 − u1) + max(0, u1 − u2).

    Args:
        u0: ``(B, *spatial)`` uncertainty on the clean image.
        u1: ``(B, *spatial)`` uncertainty with noise of mean μ1 in the patches.
        u2: ``(B, *spatial)`` uncertainty with noise of mean μ2 > μ1 in the patches.
        centres: Patch centres per image.

    Returns:
        Scalar; 0 when there is no centre.
    """
    v0, v1, v2 = (torch.cat(gather_centres(u, centres)) for u in (u0, u1, u2))
    if v0.numel() == 0:
        return _zero(u1) + _zero(u2)
    return (torch.relu(v0 - v1) + torch.relu(v1 - v2)).mean()


def noise_distance_loss(
    u0: Tensor, u1: Tensor, u2: Tensor, d: Tensor, centres: list[Tensor], near: float = 4.0
) -> Tensor:
    """L_d: the centre nearer the boundary must gain more uncertainty from the noise (principle 2).

    With Δ_m = u_m − u0 at the centres of image b that have d ≤ ``near``:
    L_d = mean_b Σ_{m=1,2} mean_{i<j} max(0, (d_i − d_j)(Δ_m,i − Δ_m,j)).

    Returns:
        Scalar; 0 when no image has two such centres.
    """
    terms: list[Tensor] = []
    for b, c in enumerate(centres):
        idx = tuple(c.to(u0.device).T)
        db = d[b][idx].to(u0.dtype)
        keep = db <= near
        if int(keep.sum()) < 2:
            continue
        i, j = (t.to(u0.device) for t in _pairs(int(keep.sum()), None, None))
        db = db[keep]
        base = u0[b][idx][keep]
        term: Tensor | float = 0.0
        for um in (u1, u2):
            delta = um[b][idx][keep] - base
            term = term + torch.relu((db[i] - db[j]) * (delta[i] - delta[j])).mean()
        assert isinstance(term, Tensor)  # the loop ran (two noise levels)
        terms.append(term)
    return torch.stack(terms).mean() if terms else _zero(u1) + _zero(u2)


def far_loss(u: Tensor, d: Tensor, far: float = 4.0) -> Tensor:
    """L_far: mean of ``u`` ``(B, *spatial)`` over pixels with d > ``far`` (pooled over the batch; principle 3)."""
    mask = d > far
    if not bool(mask.any()):
        return _zero(u)
    return u[mask].mean()
