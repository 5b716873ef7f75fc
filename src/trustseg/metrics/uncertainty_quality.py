"""How good is an uncertainty map? Correlation with rater disagreement, SURE's metrics, error detection.

Conventions (all documented choices):

* Correlations are in float64. Spearman = Pearson of average ranks (ties share their mean rank, as scipy).
  A constant input (or fewer than 2 pixels) has no correlation: NaN, and NaNs are skipped in averages.
* NaN or infinite values in an uncertainty map or a target are an error (:class:`DataError`), never silently
  dropped: a method producing NaN must be fixed, not scored.
* SURE's metrics are per image (``(*spatial)`` maps), with ``d`` the distance to the ground-truth boundary
  (union of class boundaries, full ``3^ndim`` neighbourhood by default as in the SURE training loss;
  :mod:`trustseg.metrics.geometry`) and ``g`` the image gradient magnitude:

  - ``ucc_gradient``: Spearman(g, u) over the band ``d ≤ band`` (principle 1: expected negative);
  - ``ucc_distance``: Spearman(d, u_high − u_low) over ``d ≤ max_distance`` (principle 2: expected negative);
  - ``ur_gradient`` / ``ur_distance``: the fraction of pixel pairs ordered as the principle predicts, i.e.
    ``sign(ref_i − ref_j) = −sign(u_i − u_j)``; pairs with equal reference are skipped, pairs with equal ``u``
    count ``tie`` (default 0: a flat map does not follow the principle). All pairs when there are at most
    ``max_pairs`` of them, otherwise ``max_pairs`` pairs drawn uniformly (``i ≠ j``) with a seeded generator.
    ``ref_ties="official"`` uses the official code's rule instead (``count_pixels_d``/``_grad``: every pair
    counts, one with equal reference is a success iff ``u`` is equal too), ``chunk=100`` in ``ur_distance`` its
    ``count_pixels_d_chunk`` (pairs only inside consecutive chunks); ``ranks="ordinal"`` in the UCCs its
    ordinal ranks (``argsort().argsort()``: ties broken by position) instead of average ranks;
  - ``ur_mu``: the fraction of near-boundary pixels (``d ≤ max_distance``) with ``u_high > u_low``;
  - ``ucc_mu``: the official SURE code's ``count_corr_sigma``, the mean over near-boundary pixels of the 2-point
    Spearman correlation between the noise levels ``(μ_low, μ_high)`` and ``(u_low, u_high)``, which is
    ``2·P(u_high ≥ u_low) − 1`` (a tie counts +1, as the official ordinal ranks give it).

* Error detection pools all pixels given (call per image for per-image values); error = hard prediction ≠ label.
  ``ueo``: ``max_t Dice(error, u > t)``, thresholds evenly spaced over ``[min u, max u]`` by default; an empty
  error mask gives ``empty_error`` (default NaN). AUROC and average precision treat ties exactly as scikit-learn's
  ``roc_auc_score`` and ``average_precision_score``; a single-class error mask gives NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from trustseg.core.errors import ConfigError, DataError
from trustseg.measures.aggregate import average_ranks
from trustseg.measures.pixel import rater_disagreement
from trustseg.metrics.geometry import boundary_band, boundary_distance, gradient_magnitude
from trustseg.metrics.registry import METRICS
from trustseg.metrics.voxel_stats import error_split, split_auroc, split_average_precision, split_ueo

_NAN = torch.tensor(math.nan, dtype=torch.float64)


def _finite(t: Tensor, what: str) -> Tensor:
    x = t if t.is_floating_point() else t.to(torch.float64)
    bad = ~torch.isfinite(x)
    if bad.any():
        raise DataError(f"{what} has {int(bad.sum())} NaN or infinite values of {x.numel()}; fix the map first")
    return x.to(torch.float64)


def _same_shape(a: Tensor, b: Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise DataError(f"{what}: shapes {tuple(a.shape)} and {tuple(b.shape)} differ")


# -- correlation -----------------------------------------------------------------------------------------------
def pearson(x: Tensor, y: Tensor) -> Tensor:
    """Pearson correlation of two 1-D tensors (float64 scalar); NaN when either is constant or ``n < 2``."""
    x, y = x.flatten().to(torch.float64), y.flatten().to(torch.float64)
    if x.numel() < 2 or bool((x == x[0]).all()) or bool((y == y[0]).all()):
        return _NAN.clone()
    xc, yc = x - x.mean(), y - y.mean()
    r = (xc * yc).sum() / torch.sqrt((xc * xc).sum() * (yc * yc).sum())
    return r.clamp(-1, 1)


RankRule = Literal["average", "ordinal"]
RefTies = Literal["skip", "official"]


def ordinal_ranks(x: Tensor) -> Tensor:
    """Ranks 0 … n−1 of a 1-D tensor, ties broken by position (a stable sort), as float64.

    The official SURE code's ``x.argsort().argsort()`` (numpy's default sort, which is stable on small or
    tie-free inputs; ours always is). Example: ``[3, 1, 3, 2]`` → ``[2, 0, 3, 1]``.

    Example:
        >>> ordinal_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0]))
        tensor([2., 0., 3., 1.], dtype=torch.float64)
    """
    x = x.flatten()
    order = torch.argsort(x, stable=True)
    ranks = torch.empty(x.numel(), dtype=torch.float64)
    ranks[order] = torch.arange(x.numel(), dtype=torch.float64)
    return ranks


def spearman(x: Tensor, y: Tensor, ranks: RankRule = "average") -> Tensor:
    """Spearman rank correlation: Pearson of the ranks of ``x`` and ``y``.

    ``ranks="average"`` (default): ties share their mean rank (as ``scipy.stats.spearmanr``), NaN when either input
    is constant. ``"ordinal"``: :func:`ordinal_ranks` (the official SURE code); ties are then ordered by position,
    so even a constant input gets a (position-driven) value.
    """
    x, y = x.flatten(), y.flatten()
    if x.numel() < 2:
        return _NAN.clone()
    if ranks == "ordinal":
        return pearson(ordinal_ranks(x), ordinal_ranks(y))
    if ranks != "average":
        raise ConfigError(f"unknown rank rule {ranks!r}; use 'average' or 'ordinal'")
    return pearson(average_ranks(x), average_ranks(y))


_CORR = {"pearson": pearson, "spearman": spearman}


def _corr_fn(method: str):
    if method not in _CORR:
        raise ConfigError(f"unknown correlation {method!r}; use 'pearson' or 'spearman'")
    return _CORR[method]


@METRICS.register("uq_pixel_correlation", doc="pixel-level Pearson/Spearman of uncertainty vs rater disagreement")
def pixel_correlation(
    umap: Tensor, target: Tensor, mask: Tensor | None = None, method: str = "pearson"
) -> dict[str, Tensor]:
    """Pixel-level correlation between an uncertainty map and a target map (usually rater disagreement).

    Args:
        umap: ``(B, *spatial)`` uncertainty (higher = more uncertain).
        target: ``(B, *spatial)``, e.g. :func:`~trustseg.measures.pixel.rater_disagreement`.
        mask: Optional ``(B, *spatial)`` restricting the pixels used (e.g. a dilated foreground).
        method: ``"pearson"`` or ``"spearman"``.

    Returns:
        ``{"per_image": (B,), "mean": nan-mean over images, "pooled": over all pixels of all images,
        "n_images": images with a defined correlation}`` (float64; NaN where undefined).
    """
    fn = _corr_fn(method)
    _same_shape(umap, target, "uncertainty map vs target")
    u, t = _finite(umap, "uncertainty map"), _finite(target, "target map")
    m = torch.ones_like(u, dtype=torch.bool) if mask is None else mask.bool()
    _same_shape(u, m, "uncertainty map vs mask")
    per = torch.stack([fn(u[b][m[b]], t[b][m[b]]) for b in range(u.shape[0])])
    ok = ~torch.isnan(per)
    mean = per[ok].mean() if ok.any() else _NAN.clone()
    return {"per_image": per, "mean": mean, "pooled": fn(u[m], t[m]), "n_images": ok.sum()}


@METRICS.register("uq_image_correlation", doc="image-level correlation of a score (N,) with Σ rater variance (N,)")
def image_correlation(scores: Tensor, target: Tensor, method: str = "pearson") -> Tensor:
    """Correlation across images between an image-level score ``(N,)`` and a target ``(N,)``.

    The usual target is :func:`image_disagreement`, the sum over pixels of the rater disagreement map.
    Returns a float64 scalar (NaN when either input is constant).
    """
    _same_shape(scores.flatten(), target.flatten(), "scores vs target")
    return _corr_fn(method)(_finite(scores, "image scores"), _finite(target, "image target"))


def image_disagreement(labels: Tensor, num_classes: int, spatial_dims: int | None = None) -> Tensor:
    """Image-level rater disagreement ``Σ_pixels Σ_k ȳ_k (1 − ȳ_k)``: ``(B, R, *spatial)`` -> ``(B,)``."""
    return rater_disagreement(labels, num_classes, spatial_dims=spatial_dims).flatten(1).sum(1)


# -- SURE: UCC, UR, UR_mu, UCC_mu ----------------------------------------------------------------------------
def pair_order_rate(
    reference: Tensor,
    u: Tensor,
    max_pairs: int = 200_000,
    seed: int = 0,
    tie: float = 0.0,
    ref_ties: RefTies = "skip",
    chunk: int = 0,
) -> Tensor:
    """Fraction of pixel pairs with ``sign(ref_i − ref_j) = −sign(u_i − u_j)`` (opposite order).

    ``ref_ties="skip"`` (default): pairs with ``ref_i = ref_j`` are skipped; pairs with ``u_i = u_j`` count ``tie``.
    ``ref_ties="official"`` (the official ``count_pixels_d`` / ``count_pixels_grad``): every pair counts, and a pair
    with ``ref_i = ref_j`` is a success iff ``u_i = u_j`` too (else a failure); a pair with distinct references
    and equal ``u`` still counts ``tie`` (0 in the official code). All ``n(n−1)/2`` pairs when that is at most
    ``max_pairs``, else ``max_pairs`` pairs drawn uniformly with ``i ≠ j`` (seeded).

    ``chunk > 0`` (the official ``count_pixels_d_chunk``, ``chunk = 100``): only the pairs inside consecutive
    chunks of ``chunk`` values (in the given order) count; the result is the sum of the per-chunk rates divided
    by the number of chunks ``⌈n / chunk⌉`` (a chunk without a usable pair, e.g. a last chunk of one value,
    adds 0).

    Returns:
        float64 scalar in ``[0, 1]``; NaN when no pair has distinct references (``skip``) or ``n < 2``.

    Example:
        >>> ref, u = torch.tensor([1.0, 1.0, 2.0]), torch.tensor([0.5, 0.5, 0.1])
        >>> pair_order_rate(ref, u), pair_order_rate(ref, u, ref_ties="official")
        (tensor(1., dtype=torch.float64), tensor(1., dtype=torch.float64))
        >>> pair_order_rate(ref, torch.tensor([0.5, 0.4, 0.1]), ref_ties="official")  # (0, 1): equal d, u differs
        tensor(0.6667, dtype=torch.float64)
    """
    if ref_ties not in ("skip", "official"):
        raise ConfigError(f"unknown reference-tie rule {ref_ties!r}; use 'skip' or 'official'")
    r, v = reference.flatten().to(torch.float64), u.flatten().to(torch.float64)
    n = r.numel()
    if n < 2:
        return _NAN.clone()
    if chunk > 0:
        rates = [
            pair_order_rate(r[s : s + chunk], v[s : s + chunk], max_pairs, seed, tie, ref_ties)
            for s in range(0, n, chunk)
        ]
        return torch.nan_to_num(torch.stack(rates), nan=0.0).sum() / len(rates)
    if n * (n - 1) // 2 <= max_pairs:
        i, j = torch.triu_indices(n, n, 1)
    else:
        gen = torch.Generator().manual_seed(int(seed))
        i = torch.randint(0, n, (max_pairs,), generator=gen)
        j = torch.randint(0, n - 1, (max_pairs,), generator=gen)
        j = j + (j >= i).long()
    s = -torch.sign(r[i] - r[j]) * torch.sign(v[i] - v[j])
    score = (s > 0).to(torch.float64) + tie * (s == 0).to(torch.float64)
    same_ref = r[i] == r[j]
    if ref_ties == "official":
        return torch.where(same_ref, (v[i] == v[j]).to(torch.float64), score).mean()
    if same_ref.all():
        return _NAN.clone()
    return score[~same_ref].mean()


def _sure_inputs(umap: Tensor, labels: Tensor, spacing, connectivity: str) -> tuple[Tensor, Tensor]:
    _same_shape(umap, labels, "uncertainty map vs labels")
    return _finite(umap, "uncertainty map"), boundary_distance(labels, spacing, connectivity)


def _noise_inputs(
    u_low: Tensor, u_high: Tensor, labels: Tensor, max_distance: float | None, spacing, connectivity: str
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Checked low/high-noise maps, the boundary distance ``d`` and the near-boundary mask ``d <= max_distance``
    (every pixel with a finite ``d`` when ``max_distance`` is ``None``)."""
    lo, d = _sure_inputs(u_low, labels, spacing, connectivity)
    hi = _finite(u_high, "uncertainty map (high noise)")
    _same_shape(lo, hi, "low- vs high-noise maps")
    near = torch.isfinite(d) if max_distance is None else d <= max_distance
    return lo, hi, d, near


@METRICS.register("ucc_gradient", doc="SURE UCC: Spearman(|∇x|, u) on the boundary band d ≤ 1 (expect < 0)")
def ucc_gradient(
    umap: Tensor,
    image: Tensor,
    labels: Tensor,
    band: float = 1.0,
    spacing: Sequence[float] | None = None,
    connectivity: str = "full",
    ranks: RankRule = "average",
) -> Tensor:
    """Spearman correlation between gradient magnitude and uncertainty inside the band ``d ≤ band``.

    Args:
        umap: ``(*spatial)`` uncertainty of one image.
        image: ``(C, *spatial)`` the input image.
        labels: ``(*spatial)`` ground-truth class map.
        band: Band half-width around the boundary.
        spacing: Pixel size (for ``d`` and the gradient).
        connectivity: Boundary-pixel neighbourhood, ``"full"`` (3^ndim cube) or ``"face"``.
        ranks: ``average`` (ties share their mean rank, as scipy) or ``ordinal`` (ties by position, as the
            official code; it also keeps only one band pixel per 0.04 step of |∇x|, which is not done here).

    Returns:
        float64 scalar; SURE's principle 1 predicts a negative value.
    """
    u, g = _gradient_inputs(umap, image, labels, band, spacing, connectivity)
    return spearman(g, u, ranks)


def gradient_band(
    image: Tensor, labels: Tensor, band: float = 1.0, spacing: Sequence[float] | None = None, connectivity: str = "full"
) -> tuple[Tensor, Tensor]:
    """The boundary band ``d ≤ band`` of ``labels`` ``(*spatial)`` bool and the float64 gradient magnitude of
    ``image`` on it ``(n_band,)``: what UCC_g and UR_g of every map of a case share (compute once, then
    :func:`band_ucc_gradient` / :func:`band_ur_gradient` per map). The band is a dilation
    (:func:`~trustseg.metrics.geometry.boundary_band`) and the gradient is float32 (as the image) until it is
    restricted to the band, so no image-sized float64 map is made."""
    if labels.is_floating_point():
        raise DataError("labels must be an integer class map, got a float tensor")
    near = boundary_band(labels, band, spacing, connectivity)
    return near, gradient_magnitude(image, spacing)[near].to(torch.float64)


def band_ucc_gradient(umap: Tensor, near: Tensor, g_near: Tensor, ranks: RankRule = "average") -> Tensor:
    """:func:`ucc_gradient` from :func:`gradient_band`'s ``(near, g_near)``: Spearman(g, u) on the band."""
    return spearman(g_near, _finite(umap[near], "uncertainty map"), ranks)


def band_ur_gradient(
    umap: Tensor,
    near: Tensor,
    g_near: Tensor,
    max_pairs: int = 200_000,
    seed: int = 0,
    tie: float = 0.0,
    ref_ties: RefTies = "skip",
) -> Tensor:
    """:func:`ur_gradient` from :func:`gradient_band`'s ``(near, g_near)``."""
    u = _finite(umap[near], "uncertainty map")
    return pair_order_rate(g_near, u, max_pairs=max_pairs, seed=seed, tie=tie, ref_ties=ref_ties)


def _gradient_inputs(
    umap: Tensor, image: Tensor, labels: Tensor, band: float, spacing, connectivity: str
) -> tuple[Tensor, Tensor]:
    """The checked map and the gradient magnitude on the band, both float64 ``(n_band,)``."""
    _same_shape(umap, labels, "uncertainty map vs labels")
    if umap.is_floating_point() and not bool(torch.isfinite(umap).all()):
        _finite(umap, "uncertainty map")  # raises, naming the count (no float64 copy of a finite map)
    near, g = gradient_band(image, labels, band, spacing, connectivity)
    return _finite(umap[near], "uncertainty map"), g


@METRICS.register("ucc_distance", doc="SURE UCC: Spearman(d, Δu under noise) near the boundary (expect < 0)")
def ucc_distance(
    u_low: Tensor,
    u_high: Tensor,
    labels: Tensor,
    max_distance: float | None = 4.0,
    spacing: Sequence[float] | None = None,
    connectivity: str = "full",
    ranks: RankRule = "average",
) -> Tensor:
    """Spearman correlation between boundary distance ``d`` and the uncertainty increase ``u_high − u_low``.

    Args:
        u_low: ``(*spatial)`` uncertainty at the low noise level (e.g. μ = 0.1).
        u_high: ``(*spatial)`` uncertainty at the high noise level (e.g. μ = 0.9).
        labels: ``(*spatial)`` ground truth.
        max_distance: Only pixels with ``d ≤ max_distance`` (SURE's near-boundary zone, 4); ``None`` = all.
        ranks: ``average`` (ties share their mean rank, as scipy) or ``ordinal`` (ties, frequent in ``d``, ordered by
            position, as the official ``spearman_correlation``). The official evaluation passes
            ``u_low = u(clean)``, ``u_high = u(μ = 0.1)`` (run_count_fold.py).

    Returns:
        float64 scalar; principle 2 predicts a negative value.
    """
    lo, hi, d, near = _noise_inputs(u_low, u_high, labels, max_distance, spacing, connectivity)
    return spearman(d[near], (hi - lo)[near], ranks)


@METRICS.register("ur_gradient", doc="SURE UR: fraction of band pixel pairs with sharper edge -> lower u")
def ur_gradient(
    umap: Tensor,
    image: Tensor,
    labels: Tensor,
    band: float = 1.0,
    max_pairs: int = 200_000,
    seed: int = 0,
    tie: float = 0.0,
    spacing: Sequence[float] | None = None,
    connectivity: str = "full",
    ref_ties: RefTies = "skip",
) -> Tensor:
    """UR, gradient variant: among pixel pairs in the band, the fraction where the higher gradient has lower ``u``.

    See :func:`pair_order_rate` for ties (``ref_ties="official"``: the official rule) and pair sampling. The
    official ``count_pixels_grad`` also keeps only one band pixel per 0.04 step of |∇x| (not done here).
    Returns a float64 scalar in ``[0, 1]``.
    """
    u, g = _gradient_inputs(umap, image, labels, band, spacing, connectivity)
    return pair_order_rate(g, u, max_pairs=max_pairs, seed=seed, tie=tie, ref_ties=ref_ties)


@METRICS.register("ur_distance", doc="SURE UR: fraction of near-boundary pairs where nearer -> larger Δu")
def ur_distance(
    u_low: Tensor,
    u_high: Tensor,
    labels: Tensor,
    max_distance: float | None = 4.0,
    max_pairs: int = 200_000,
    seed: int = 0,
    tie: float = 0.0,
    spacing: Sequence[float] | None = None,
    connectivity: str = "full",
    ref_ties: RefTies = "skip",
    chunk: int = 0,
) -> Tensor:
    """UR, distance variant: among pixel pairs with ``d ≤ max_distance``, the fraction where the pixel nearer the
    boundary gained more uncertainty from ``u_low`` to ``u_high``. Returns a float64 scalar in ``[0, 1]``.

    ``ref_ties="official"``: the official tie rule (pairs with equal ``d`` count, a success iff Δu is equal too);
    ``chunk=100`` with it: the official ``count_pixels_d_chunk`` (pairs only inside consecutive chunks of the
    near-boundary pixels in raster order), the version the official evaluation script uses. See
    :func:`pair_order_rate`."""
    lo, hi, d, near = _noise_inputs(u_low, u_high, labels, max_distance, spacing, connectivity)
    return pair_order_rate(
        d[near], (hi - lo)[near], max_pairs=max_pairs, seed=seed, tie=tie, ref_ties=ref_ties, chunk=chunk
    )


@METRICS.register("ur_mu", doc="SURE UR_μ: fraction of near-boundary pixels whose u rises from noise 0.1 to 0.9")
def ur_mu(
    u_low: Tensor,
    u_high: Tensor,
    labels: Tensor,
    max_distance: float = 4.0,
    spacing: Sequence[float] | None = None,
    connectivity: str = "full",
) -> Tensor:
    """Fraction of pixels with ``d ≤ max_distance`` where ``u_high > u_low`` (strictly).

    This is the official ``count_pixels_sigma`` (a tie is not a rise); :func:`ucc_mu` is its correlation form.

    Returns:
        float64 scalar; NaN when there is no near-boundary pixel (a single-class label map).
    """
    lo, hi, _, near = _noise_inputs(u_low, u_high, labels, max_distance, spacing, connectivity)
    if not near.any():
        return _NAN.clone()
    return (hi[near] > lo[near]).to(torch.float64).mean()


@METRICS.register("ucc_mu", doc="SURE UCC_μ: mean 2-point Spearman(noise level, u) near the boundary")
def ucc_mu(
    u_low: Tensor,
    u_high: Tensor,
    labels: Tensor,
    max_distance: float = 4.0,
    spacing: Sequence[float] | None = None,
    connectivity: str = "full",
) -> Tensor:
    """UCC_μ, the noise-level correlation of SURE, as the official code defines it (``count_corr_sigma``).

    For every pixel ``i`` with ``d_i ≤ max_distance`` the official code takes the Spearman correlation of the two
    points ``(μ_low, u_low,i)`` and ``(μ_high, u_high,i)`` with ordinal ranks (``argsort().argsort()``, a tie
    keeping the first-come order), which is ``+1`` when ``u_high,i ≥ u_low,i`` and ``−1`` otherwise, and averages
    over the pixels:

    ``UCC_μ = (1/N) Σ_i (+1 if u_high,i ≥ u_low,i else −1) = 2·P(u_high ≥ u_low) − 1``,

    so ``UCC_μ = 2·(UR_μ + P(u_high = u_low)) − 1`` (:func:`ur_mu` counts ties as failures, this one as
    successes). Values are compared as given; the official code rounds each ``u`` to float32 first, which
    matters only for float64 maps that differ below float32 resolution. Per image (the official code pools the
    pixels of the batch).

    Args:
        u_low: ``(*spatial)`` uncertainty at the low noise level (e.g. μ = 0.1).
        u_high: ``(*spatial)`` uncertainty at the high noise level (e.g. μ = 0.9).
        labels: ``(*spatial)`` ground truth (for the boundary distance ``d``).
        max_distance: Near-boundary zone ``d ≤ max_distance`` (the official threshold, 4).
        spacing: Pixel size (for ``d``).
        connectivity: Boundary-pixel neighbourhood, ``"full"`` or ``"face"``.

    Returns:
        float64 scalar in ``[−1, 1]``; SURE's principle 2 predicts a positive value. NaN when there is no
        near-boundary pixel (a single-class label map).

    Example:
        >>> labels = torch.tensor([[0, 0, 1, 1]])
        >>> u_low = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
        >>> ucc_mu(u_low, torch.tensor([[0.5, 0.2, 0.1, 0.6]]), labels)  # rises, ties, falls, rises
        tensor(0.5000, dtype=torch.float64)
    """
    lo, hi, _, near = _noise_inputs(u_low, u_high, labels, max_distance, spacing, connectivity)
    if not near.any():
        return _NAN.clone()
    return 2 * (hi[near] >= lo[near]).to(torch.float64).mean() - 1


# -- error detection -------------------------------------------------------------------------------------------
def error_mask(hard: Tensor, labels: Tensor) -> Tensor:
    """Pixels where the hard prediction differs from the label (bool, same shape)."""
    _same_shape(hard, labels, "prediction vs label")
    return hard != labels


def _split(umap: Tensor, error: Tensor, mask: Tensor | None) -> tuple[np.ndarray, np.ndarray]:
    """Checked, pooled (masked) map split into sorted error / correct values (:func:`error_split`)."""
    _same_shape(umap, error, "uncertainty map vs error mask")
    u = umap if umap.dtype in (torch.float32, torch.float64) else umap.to(torch.float64)
    if not bool(torch.isfinite(u).all()):
        _finite(u, "uncertainty map")  # raises, counting the bad values
    e = error.bool()
    if mask is not None:
        _same_shape(u, mask, "uncertainty map vs mask")
        u, e = u[mask.bool()], e[mask.bool()]
    return error_split(u, e)


@METRICS.register("ueo", doc="uncertainty-error overlap: max_t Dice(error, u > t), and the best t")
def ueo(
    umap: Tensor,
    error: Tensor,
    thresholds: int | Tensor = 100,
    mask: Tensor | None = None,
    empty_error: float = math.nan,
) -> tuple[Tensor, Tensor]:
    """Uncertainty-error overlap ``max_t Dice(error, u > t)``.

    Args:
        umap: Uncertainty, any shape (all pixels pooled).
        error: Bool error mask of the same shape (see :func:`error_mask`).
        thresholds: Number of thresholds evenly spaced over ``[min u, max u]`` (inclusive), or explicit ones.
        mask: Optional pixels to use.
        empty_error: Value returned when the error mask is empty (default NaN, skipped in averages).

    Returns:
        ``(ueo, best_t)`` float64 scalars; the lowest threshold wins ties. ``best_t`` is NaN for an empty error.
    """
    pos, neg = _split(umap, error, mask)
    if pos.size == 0:
        return torch.tensor(float(empty_error), dtype=torch.float64), _NAN.clone()
    if isinstance(thresholds, int):
        if thresholds < 1:
            raise ConfigError(f"thresholds must be >= 1, got {thresholds}")
        value, best_t = split_ueo(pos, neg, thresholds)
    else:
        value, best_t = split_ueo(pos, neg, thresholds.to(torch.float64).flatten().numpy())
    return torch.tensor(value, dtype=torch.float64), torch.tensor(best_t, dtype=torch.float64)


def binary_auroc(scores: Tensor, positives: Tensor) -> Tensor:
    """Area under the ROC curve (Mann-Whitney with average ranks; equals ``sklearn.metrics.roc_auc_score``).

    Returns:
        float64 scalar; NaN when only one class is present.
    """
    s, y = scores.flatten().to(torch.float64), positives.flatten().bool()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return _NAN.clone()
    r = average_ranks(s)
    return (r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def average_precision(scores: Tensor, positives: Tensor) -> Tensor:
    """Average precision ``Σ_n (R_n − R_{n−1}) P_n`` over distinct score thresholds, high to low (as
    ``sklearn.metrics.average_precision_score``, tied scores form one threshold). NaN without positives."""
    s, y = scores.flatten().to(torch.float64), positives.flatten().bool()
    n_pos = int(y.sum())
    if n_pos == 0:
        return _NAN.clone()
    order = torch.argsort(s, descending=True, stable=True)
    _, counts = torch.unique_consecutive(s[order], return_counts=True)
    last = torch.cumsum(counts, 0) - 1
    tps = torch.cumsum(y[order].to(torch.float64), 0)[last]
    precision = tps / (last + 1).to(torch.float64)
    recall = tps / n_pos
    d_recall = torch.diff(recall, prepend=recall.new_zeros(1))
    return (d_recall * precision).sum()


@METRICS.register("uncertainty_error_auroc", doc="AUROC of uncertainty separating error pixels (pred ≠ label)")
def uncertainty_error_auroc(umap: Tensor, error: Tensor, mask: Tensor | None = None) -> Tensor:
    """AUROC of ``umap`` as a detector of ``error`` pixels (pooled; ties as scikit-learn). NaN if one class.

    Computed from the sorted values of the error and the correct pixels (:func:`~trustseg.metrics.voxel_stats.
    split_auroc`: one copy of the map, no rank array), equal to :func:`binary_auroc`."""
    return torch.tensor(split_auroc(*_split(umap, error, mask)), dtype=torch.float64)


@METRICS.register("uncertainty_error_auprc", doc="average precision of uncertainty detecting error pixels")
def uncertainty_error_auprc(umap: Tensor, error: Tensor, mask: Tensor | None = None) -> Tensor:
    """Average precision of ``umap`` detecting ``error`` pixels (pooled; ties as scikit-learn). NaN if no error.

    Computed as :func:`~trustseg.metrics.voxel_stats.split_average_precision` (one copy of the map), equal to
    :func:`average_precision`."""
    return torch.tensor(split_average_precision(*_split(umap, error, mask)), dtype=torch.float64)
