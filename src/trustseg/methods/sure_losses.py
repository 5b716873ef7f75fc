"""SURE's uncertainty-supervision losses (pure functions) and the pieces they are built from.

SURE supervises the evidential vacuity u = K / S with three principles:

1. at the boundary, a sharper image edge (higher gradient magnitude g) gives *lower* uncertainty;
2. near the boundary, more input noise gives more uncertainty, and more so the closer to the boundary;
3. far from the boundary, uncertainty stays near zero.

Notation: ``u`` ``(B, *spatial)`` vacuity maps, ``d`` ``(B, *spatial)`` distance in pixels to the ground-truth
boundary (:func:`boundary_distance`), ``g`` ``(B, *spatial)`` image gradient magnitude (:func:`image_gradient`),
``centres`` a list (one entry per image) of ``(P_b, ndim)`` integer patch centres
(:func:`trustseg.methods.sure_patches.select_patch_centres`).
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

Where the official code (github.com/suiannaius/SURE, ``training/criterions.py``, ``training/train.py``,
``utilities/utils.py``) behaves differently, its behaviour is a keyword (default: ours): ``reduction="official"``
of :func:`gradient_uncertainty_loss` (violating-pair means *summed* over chunks of 20000 pairs, ÷ batch size),
``form="official"`` of :func:`noise_mu_loss` (three μ-weighted terms, incl. the direct clean → μ2 one),
``far_centres="zero"`` / ``reduction="official"`` of :func:`noise_distance_loss` (far fill-up centres kept with
Δu = 0), ``fill_up="anywhere"`` of :func:`~trustseg.methods.sure_patches.select_patch_centres` and
``end="official"`` of :func:`sure_ramp`.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from trustseg.methods.sure_patches import gather_centres
from trustseg.metrics import geometry

GuReduction = Literal["mean", "violating", "official"]
MuForm = Literal["chain", "chain_direct", "official"]
FarCentres = Literal["drop", "zero"]
PairReduction = Literal["mean", "official"]
RampEnd = Literal["last", "official"]

#: Pairs per chunk of the official ``gradient_loss`` (criterions.py: "based on available GPU memory").
OFFICIAL_GU_CHUNK = 20000


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; use one of {', '.join(map(repr, allowed))}")


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


def sure_ramp(
    epoch: int, max_epochs: int, warmup_frac: float = 0.3, start_value: float = 0.01, end: RampEnd = "last"
) -> float:
    """SURE's weight a_t: 0 during warm-up, then exponential from ``start_value`` towards 1.

    With ``e0 = round(warmup_frac · max_epochs)`` (epochs are 0-based): a_t = 0 for epoch < e0, else
    a_t = start_value^(1 − s) with s = min(1, (epoch − e0) / (e_end − e0)), where

    * ``end="last"`` (default): e_end = max_epochs − 1, so the last epoch gets a_t = 1 (a_t = 1 when e_end ≤ e0).
      For 100 epochs and warmup_frac 0.3: a_29 = 0, a_30 = 0.01, a_64 = 0.0967, a_98 = 0.935, a_99 = 1.
    * ``end="official"``: e_end = max_epochs, as the official ``train.py`` writes it
      (0.01·exp(−ln 0.01 / (T − e0) · (e − e0))): 1 would be reached one epoch after the last, which gets
      start_value^(1/(T − e0)). For 100 epochs: a_30 = 0.01, a_64 = 0.0936, a_98 = 0.877, a_99 = 0.936.

    Example:
        >>> round(sure_ramp(99, 100), 3), round(sure_ramp(99, 100, end="official"), 3)
        (1.0, 0.936)
    """
    _choice("ramp end", end, ("last", "official"))
    start = int(round(warmup_frac * max_epochs))
    last = max_epochs - 1 if end == "last" else max_epochs
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


def _violating_mean(prod: Tensor) -> Tensor:
    """Σ max(0, prod) / #(prod > 0): the official normalisation (0, with graph, when nothing violates)."""
    viol = prod > 0
    return torch.relu(prod).sum() / viol.sum().clamp(min=1)


def _official_pairs(n: int, num_pairs: int | None, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """The official pair draw: ``min(num_pairs, n(n−1)/2)`` draws of (i, j) with replacement, i = j dropped;
    every pair i < j when ``num_pairs`` is ``None``."""
    if num_pairs is None:
        return _pairs(n, None, None)
    m = min(num_pairs, n * (n - 1) // 2)
    i = torch.randint(n, (m,), generator=generator)
    j = torch.randint(n, (m,), generator=generator)
    keep = i != j
    return i[keep], j[keep]


def gradient_uncertainty_loss(
    u: Tensor,
    g: Tensor,
    d: Tensor,
    band: float = 1.0,
    num_pairs: int | None = 4096,
    generator: torch.Generator | None = None,
    reduction: GuReduction = "mean",
    chunk: int = OFFICIAL_GU_CHUNK,
) -> Tensor:
    """L_gu: penalise boundary pixel pairs where the sharper edge has the higher uncertainty (principle 1).

    With p_ij = (g_i − g_j)(u_i − u_j) over pairs of pixels of image b with d ≤ ``band``:

    * ``reduction="mean"`` (default): L_gu = mean_b mean_{(i, j)} max(0, p_ij), over the images with ≥ 2 band
      pixels; pairs drawn as :func:`_pairs` (exactly ``num_pairs``, uniform, i ≠ j).
    * ``"violating"``: mean over the *violating* pairs only, Σ max(0, p) / #(p > 0), then the same image mean.
    * ``"official"``: the official ``gradient_loss``: ``min(num_pairs, n(n−1)/2)`` draws with replacement, i = j
      dropped; the pairs are cut into chunks of ``chunk`` pairs and the violating-pair means of the chunks are
      **summed**, so the loss grows with the number of chunks (about ``num_pairs / chunk`` when the band is
      large; the official run uses ``num_pairs = 1e7``); the sum over images is divided by the batch size
      (images without pairs count 0). Not reproduced: the official code also carries the first image's capped
      ``sample_size`` over to the later images of the batch (a bug that makes the value depend on image order).

    Args:
        u: ``(B, *spatial)`` uncertainty (carries the gradient).
        g: ``(B, *spatial)`` image gradient magnitude.
        d: ``(B, *spatial)`` distance to the boundary.
        band: Pixels with d ≤ band form the boundary band.
        num_pairs: Random pairs per image (drawn with ``generator``); ``None`` uses every pair i < j.
        generator: CPU generator for the pair draw.
        reduction: ``mean``, ``violating`` or ``official`` (above).
        chunk: Pairs per chunk of ``official``.

    Returns:
        Scalar; 0 when no image has two band pixels.
    """
    _choice("L_gu reduction", reduction, ("mean", "violating", "official"))
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    terms = []
    for b in range(u.shape[0]):
        mask = (d[b] <= band).reshape(-1)
        ub, gb = u[b].reshape(-1)[mask], g[b].reshape(-1)[mask].to(u.dtype)
        if ub.numel() < 2:
            continue
        draw = _official_pairs if reduction == "official" else _pairs
        i, j = (t.to(u.device) for t in draw(ub.numel(), num_pairs, generator))
        prod = (gb[i] - gb[j]) * (ub[i] - ub[j])
        if reduction == "mean":
            terms.append(torch.relu(prod).mean())
        elif reduction == "violating":
            terms.append(_violating_mean(prod))
        else:
            chunks = [_violating_mean(c) for c in prod.split(chunk)]
            terms.append(torch.stack(chunks).sum() if chunks else _zero(ub))
    if not terms:
        return _zero(u)
    return torch.stack(terms).sum() / u.shape[0] if reduction == "official" else torch.stack(terms).mean()


def _official_negative_mean(t: Tensor) -> Tensor:
    """−Σ min(0, t) / #(t < 0) (0 when no entry is negative): one term of the official ``nu_loss_mu``."""
    return torch.relu(-t).sum() / (t < 0).sum().clamp(min=1)


def noise_mu_loss(
    u0: Tensor,
    u1: Tensor,
    u2: Tensor,
    centres: list[Tensor],
    form: MuForm = "chain",
    mu: tuple[float, float] | None = None,
    d: Tensor | None = None,
    near: float = 4.0,
) -> Tensor:
    """L_μ: uncertainty must not fall as the noise level rises, clean → μ1 → μ2 (principle 2).

    With v_m the values of u_m at all centres of the batch (pooled):

    * ``form="chain"`` (default): L_μ = mean_c max(0, v0 − v1) + max(0, v1 − v2);
    * ``"chain_direct"``: adds the direct clean → μ2 term, mean_c [max(0, v0 − v1) + max(0, v1 − v2) +
      max(0, v0 − v2)] (the official code has this third term; ``chain`` drops it);
    * ``"official"``: the official ``nu_loss_mu``: the three terms t1 = (v2 − v1)(μ2 − μ1), t2 = (v1 − v0)·μ1,
      t3 = (v2 − v0)·μ2, each set to 0 at centres with d > ``near``, each averaged over its *negative* entries
      only, L_μ = Σ_t −Σ min(0, t) / #(t < 0). Needs ``mu = (μ1, μ2)``; ``d`` (the ``(B, *spatial)`` distance)
      is optional (``None``: every centre counts).

    Args:
        u0: ``(B, *spatial)`` uncertainty on the clean image.
        u1: ``(B, *spatial)`` uncertainty with noise of mean μ1 in the patches.
        u2: ``(B, *spatial)`` uncertainty with noise of mean μ2 (> μ1 unless the draw is unsorted).
        centres: Patch centres per image.
        form: ``chain``, ``chain_direct`` or ``official`` (above).
        mu: The noise means ``(μ1, μ2)`` (``official`` only).
        d: Distance to the boundary (``official`` only).
        near: Near-boundary threshold of ``official``.

    Returns:
        Scalar; 0 when there is no centre.
    """
    _choice("L_mu form", form, ("chain", "chain_direct", "official"))
    v0, v1, v2 = (torch.cat(gather_centres(u, centres)) for u in (u0, u1, u2))
    if v0.numel() == 0:
        return _zero(u1) + _zero(u2)
    if form == "official":
        if mu is None:
            raise ValueError("the official L_mu needs the noise means mu=(mu1, mu2)")
        m1, m2 = mu
        keep = torch.ones_like(v0) if d is None else (torch.cat(gather_centres(d, centres)) <= near).to(v0)
        terms = ((v2 - v1) * (m2 - m1), (v1 - v0) * m1, (v2 - v0) * m2)
        return sum((_official_negative_mean(t * keep) for t in terms), _zero(u1) + _zero(u2))
    loss = torch.relu(v0 - v1) + torch.relu(v1 - v2)
    if form == "chain_direct":
        loss = loss + torch.relu(v0 - v2)
    return loss.mean()


def noise_distance_loss(
    u0: Tensor,
    u1: Tensor,
    u2: Tensor,
    d: Tensor,
    centres: list[Tensor],
    near: float = 4.0,
    far_centres: FarCentres = "drop",
    reduction: PairReduction = "mean",
) -> Tensor:
    """L_d: the centre nearer the boundary must gain more uncertainty from the noise (principle 2).

    With Δ_m = u_m − u0 at the centres of image b and p^m_ij = (d_i − d_j)(Δ_m,i − Δ_m,j) over centre pairs i < j:

    * ``far_centres="drop"`` (default): only centres with d ≤ ``near`` form pairs;
      ``"zero"`` (official ``nu_loss_d``): every centre forms pairs, a centre with d > ``near`` (the official
      sampler's fill-up patches) with Δ_m set to 0, so it still ranks against the near ones by its d.
    * ``reduction="mean"`` (default): L_d = mean_b Σ_{m=1,2} mean_{i<j} max(0, p^m_ij), over the images with ≥ 2
      such centres; ``"official"``: the mean over the violating pairs only, Σ max(0, p) / #(p > 0), and the sum
      over images divided by the batch size.

    Returns:
        Scalar; 0 when no image has two such centres.
    """
    _choice("far-centre rule", far_centres, ("drop", "zero"))
    _choice("L_d reduction", reduction, ("mean", "official"))
    terms: list[Tensor] = []
    for b, c in enumerate(centres):
        idx = tuple(c.to(u0.device).T)
        db = d[b][idx].to(u0.dtype)
        is_near = db <= near
        keep = is_near if far_centres == "drop" else torch.ones_like(is_near)
        if int(keep.sum()) < 2:
            continue
        i, j = (t.to(u0.device) for t in _pairs(int(keep.sum()), None, None))
        db, is_near = db[keep], is_near[keep]
        base = u0[b][idx][keep]
        term: Tensor | float = 0.0
        for um in (u1, u2):
            delta = torch.where(is_near, um[b][idx][keep] - base, torch.zeros_like(base))
            prod = (db[i] - db[j]) * (delta[i] - delta[j])
            term = term + (torch.relu(prod).mean() if reduction == "mean" else _violating_mean(prod))
        assert isinstance(term, Tensor)  # the loop ran (two noise levels)
        terms.append(term)
    if not terms:
        return _zero(u1) + _zero(u2)
    return torch.stack(terms).mean() if reduction == "mean" else torch.stack(terms).sum() / len(centres)


def far_loss(u: Tensor, d: Tensor, far: float = 4.0) -> Tensor:
    """L_far: mean of ``u`` ``(B, *spatial)`` over pixels with d > ``far`` (pooled over the batch; principle 3)."""
    mask = d > far
    if not bool(mask.any()):
        return _zero(u)
    return u[mask].mean()
