"""SURE's noise patches: where they go (:func:`select_patch_centres`), the noise (:func:`add_patch_noise`) and
reading a map at their centres (:func:`gather_centres`).

``centres`` is a list with one ``(P_b, ndim)`` int64 tensor of patch centres per image; a k^ndim patch centred at
``c`` covers ``c − k//2 … c − k//2 + k − 1`` on every axis.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

FillUp = Literal["near", "anywhere"]


def _take(pool: np.ndarray, want: int, taken: np.ndarray, centres: list[tuple[int, ...]], k: int, generator) -> int:
    """Take up to ``want`` centres of ``pool`` in random order whose k^ndim patch overlaps nothing in ``taken``
    (updated in place, centres appended); returns how many were taken."""
    idx = np.flatnonzero(pool)
    got = 0
    if want <= 0 or idx.size == 0:
        return 0
    for n in torch.randperm(idx.size, generator=generator).numpy():
        centre = np.unravel_index(idx[n], pool.shape)
        sl = tuple(slice(int(ci) - k // 2, int(ci) - k // 2 + k) for ci in centre)
        if taken[sl].any():
            continue
        taken[sl] = True
        centres.append(tuple(int(ci) for ci in centre))
        got += 1
        if got >= want:
            break
    return got


def select_patch_centres(
    d: Tensor,
    active: Tensor,
    classes: Tensor,
    num_classes: int,
    k: int = 5,
    per_class: int = 3,
    near: float = 4.0,
    generator: torch.Generator | None = None,
    fill_up: FillUp = "near",
) -> list[Tensor]:
    """Centres of non-overlapping k^ndim noise patches on "active hard samples", ``per_class`` per class.

    For each image and class c, candidates are pixels of class c (in ``classes``) with d ≤ ``near`` whose patch
    lies fully inside the image. Active candidates (``active``: the uncertainty did not rise under whole-image
    noise) of every class are tried first, in random order. Where fewer than ``per_class`` of them fit:

    * ``fill_up="near"`` (default): the other near-boundary candidates of that class fill up (random order);
    * ``fill_up="anywhere"`` (the official sampler, utils.py ``sample_class_wise_noised_patch_images``): random
      patches anywhere in the image (any class, any distance) fill up to ``K · per_class`` in total. Such
      centres may lie beyond ``near``; :func:`noise_mu_loss` (``official``) masks them and
      :func:`noise_distance_loss` keeps or drops them (``far_centres``).

    A candidate is taken when its patch overlaps no patch already taken in that image.

    Args:
        d: ``(B, *spatial)`` distance to the boundary.
        active: ``(B, *spatial)`` bool, the active hard samples.
        classes: ``(B, *spatial)`` class map (the target's argmax).
        num_classes: K.
        k: Patch side (odd sizes centre exactly; even sizes put the centre at index k // 2).
        per_class: Patches per class and image.
        near: Distance threshold of the near-boundary region.
        generator: CPU generator for the random order.
        fill_up: ``near`` or ``anywhere`` (above).

    Returns:
        One ``(P_b, ndim)`` int64 tensor (CPU) of centres per image, ``P_b ≤ K · per_class``.
    """
    if fill_up not in ("near", "anywhere"):
        raise ValueError(f"unknown fill-up rule {fill_up!r}; use 'near' or 'anywhere'")
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
        rounds = (True, False) if fill_up == "near" else (True,)
        for use_active in rounds:  # every class's active samples first, then the near fill-up
            for c in range(num_classes):
                pool = inside & (cls_np[b] == c) & (d_np[b] <= near) & (act_np[b] == use_active)
                if found[c] < per_class:
                    found[c] += _take(pool, per_class - found[c], taken, centres, k, generator)
        if fill_up == "anywhere":
            _take(inside, num_classes * per_class - len(centres), taken, centres, k, generator)
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
