"""From a per-pixel uncertainty map to one score per image, and combining several scores into one.

Aggregators (registered in :data:`AGGREGATORS` with their metadata, see :mod:`trustseg.measures.registry`;
signature ``fn(umap (B, *spatial), mask=None, **kw) -> (B,)``; the image-level score convention, e.g. ``fg_mean``
over the predicted foreground dilated by 2 pixels, is :func:`trustseg.measures.image.image_score`):

=============  ==========================================================================================
mean           mean of ``u`` over the pixels of ``mask`` (all pixels without a mask); empty mask -> NaN
sum            sum of ``u`` over ``mask`` (all pixels without a mask); empty mask -> 0
fg_mean        mean over the foreground ``mask`` dilated by ``dilate`` pixels (max-pooling, a cube of side
               ``2·dilate + 1``); an image whose mask is empty falls back to the whole-image mean
boundary_mean  mean over the band within ``width`` pixels of the foreground boundary (both sides); a mask
               without boundary falls back to the whole-image mean
patch_max      max over sliding ``patch``-sized windows (stride 1, fully inside the image) of the window mean;
               with a mask, the window mean is over masked pixels and windows without any are skipped
frac_above     fraction of (masked) pixels with ``u > threshold``; empty mask -> NaN
=============  ==========================================================================================

Aggregate score over several measures (the segmentation-quality paper's formula is not public; our design):

* :func:`rank_aggregate` - unsupervised: the mean over measures of each image's rank-normalised score
  ``(rank − 1) / (N − 1)`` in ``[0, 1]`` (average ranks for ties). Insensitive to each measure's scale.
* :class:`LinearAggregate` - supervised: ridge regression on standardised scores predicting ``1 − Dice``,
  fitted on validation images; saved/loaded as a plain dict.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from trustseg.core.errors import ConfigError, DataError
from trustseg.measures.registry import AGGREGATORS, register_aggregator


def _flat(umap: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    if umap.dim() < 2:
        raise DataError(f"uncertainty map must be (B, *spatial), got {tuple(umap.shape)}")
    u = umap if umap.is_floating_point() else umap.float()
    if mask is None:
        m = torch.ones_like(u, dtype=torch.bool)
    else:
        if mask.shape != umap.shape:
            raise DataError(f"mask shape {tuple(mask.shape)} does not match the map {tuple(umap.shape)}")
        m = mask.bool()
    return u.flatten(1), m.flatten(1)


@register_aggregator("mean", doc="mean of the map (over mask if given; empty mask -> NaN)")
def agg_mean(umap: Tensor, mask: Tensor | None = None) -> Tensor:
    """``Σ_i m_i u_i / Σ_i m_i`` per image. ``umap``, ``mask``: ``(B, *spatial)``. Returns ``(B,)``."""
    if umap.dim() < 2:
        raise DataError(f"uncertainty map must be (B, *spatial), got {tuple(umap.shape)}")
    u = (umap if umap.is_floating_point() else umap.float()).flatten(1)
    if mask is None:  # no all-true mask, no int64 counts of one: the same sums and counts
        return u.sum(1) / torch.full((u.shape[0],), u.shape[1], dtype=torch.long)
    if mask.shape != umap.shape:
        raise DataError(f"mask shape {tuple(mask.shape)} does not match the map {tuple(umap.shape)}")
    m = mask.bool().flatten(1)
    counts = torch.stack([torch.count_nonzero(row) for row in m])  # a bool .sum() widens the mask to int64
    return torch.where(m, u, 0.0).sum(1) / counts  # = (u · m).sum(1): u where m, else 0


@register_aggregator("sum", doc="sum of the map (over mask if given)")
def agg_sum(umap: Tensor, mask: Tensor | None = None) -> Tensor:
    """``Σ_i m_i u_i`` per image. Returns ``(B,)``."""
    u, m = _flat(umap, mask)
    return (u * m).sum(1)


def dilate_mask(mask: Tensor, dilate: int) -> Tensor:
    """Binary dilation of ``mask`` ``(B, *spatial)`` by ``dilate`` pixels (a cube of side ``2·dilate + 1``)."""
    if dilate <= 0:
        return mask.bool()
    nd = mask.dim() - 1
    pool = {2: F.max_pool2d, 3: F.max_pool3d}.get(nd)
    if pool is None:
        raise DataError(f"dilation needs a 2D or 3D map (B, *spatial), got {tuple(mask.shape)}")
    k = 2 * int(dilate) + 1
    if mask.device.type != "cpu":
        return pool(mask.float().unsqueeze(1), kernel_size=k, stride=1, padding=int(dilate)).squeeze(1) > 0
    # the same cube max-pooling (zero outside the image) as 1-D maxima along each axis, 1 byte per voxel
    out = mask.bool().numpy().view(np.uint8)
    for ax in range(1, mask.dim()):
        out = ndimage.maximum_filter1d(out, size=k, axis=ax, mode="constant", cval=0)
    return torch.from_numpy(out.view(bool))


def foreground_box(mask: Tensor, pad: int | Sequence[int] = 0) -> tuple[slice, ...] | None:
    """The bounding box of the true voxels of ``mask`` ``(*spatial)``, grown by ``pad`` voxels per axis (one int
    or one per axis) and clipped to the array; ``None`` when ``mask`` is empty. One reduction over the mask, then
    over the slab of its first axis' range only.

    Example:
        >>> m = torch.zeros(5, 6, dtype=torch.bool)
        >>> m[2, 3] = True
        >>> foreground_box(m, 1)
        (slice(1, 4, None), slice(2, 5, None))
    """
    pads = [int(pad)] * mask.dim() if isinstance(pad, int) else [int(p) for p in pad]
    if mask.dim() == 0 or not mask.numel():
        return None
    m = mask if mask.dtype == torch.bool else mask != 0
    box: list[slice] = []
    for ax in range(m.dim()):
        prof = m.movedim(ax, 0).reshape(m.shape[ax], -1).any(1) if m.dim() > 1 else m
        hit = torch.nonzero(prof).flatten()
        if not hit.numel():
            return None
        lo, hi = int(hit[0]), int(hit[-1]) + 1
        box.append(slice(max(lo - pads[ax], 0), min(hi + pads[ax], m.shape[ax])))
        if ax == 0:  # the other axes' profiles only over this range
            m = m[box[0]]
    return tuple(box)


@register_aggregator(
    "fg_mean",
    doc="mean over the (dilated) foreground mask; empty mask -> whole-image mean",
    mask="foreground",
    image_kwargs={"dilate": 2},
)
def agg_fg_mean(umap: Tensor, mask: Tensor | None = None, dilate: int = 0) -> Tensor:
    """Mean of ``u`` over the foreground ``mask`` dilated by ``dilate`` pixels.

    Images whose (dilated) mask is empty fall back to the mean over the whole image, so every image gets a score.
    Each image's mask is dilated on the bounding box of its foreground grown by ``dilate`` (:func:`foreground_box`:
    the dilation is zero beyond it), and the mean is a float64 sum over the selected voxels, slab by slab along the
    first axis (rounded to the map's dtype), so the cost follows the foreground's box, not the image.

    Args:
        umap: ``(B, *spatial)``.
        mask: ``(B, *spatial)`` foreground (e.g. the predicted segmentation ``!= 0``). Required.
        dilate: Dilation radius in pixels (max-pooling with a ``2·dilate + 1`` cube).

    Returns:
        ``(B,)``.
    """
    if mask is None:
        raise ConfigError("aggregator 'fg_mean' needs a foreground mask (e.g. the predicted segmentation != 0)")
    if umap.dim() < 2:
        raise DataError(f"uncertainty map must be (B, *spatial), got {tuple(umap.shape)}")
    if mask.shape != umap.shape:
        raise DataError(f"mask shape {tuple(mask.shape)} does not match the map {tuple(umap.shape)}")
    u = umap if umap.is_floating_point() else umap.float()
    whole = agg_mean(u)
    out = whole.clone()
    for b in range(u.shape[0]):
        box = foreground_box(mask[b], max(int(dilate), 0))
        if box is None:
            continue  # empty mask: the whole-image mean
        m, crop = dilate_mask(mask[b][box].bool()[None], dilate)[0], u[b][box]
        total, count = 0.0, 0
        for i in range(m.shape[0]):  # one slab at a time: no selected or float64 copy of a whole noisy map
            sel = crop[i][m[i]]
            total += float(sel.sum(dtype=torch.float64))
            count += sel.numel()
        out[b] = total / count
    return out


def _boundary(m: Tensor) -> Tensor:
    """Voxels of ``m`` ``(B, *spatial)`` with a neighbour of the other value in their 3-cube, on both sides."""
    inner = m & dilate_mask(~m, 1)  # foreground with a background neighbour (the image border does not count)
    outer = ~m & dilate_mask(m, 1)  # background with a foreground neighbour
    return inner | outer


@register_aggregator(
    "boundary_mean",
    doc="mean over the band within `width` pixels of the foreground boundary; no boundary -> whole-image mean",
    mask="foreground",
    image_kwargs={"width": 2},
)
def agg_boundary_mean(umap: Tensor, mask: Tensor | None = None, width: int = 2) -> Tensor:
    """Mean of ``u`` over the band around the boundary of the foreground ``mask``.

    The boundary is every voxel with a neighbour of the other value in its 3-cube (both sides of the contour);
    the band is the boundary dilated by ``width - 1`` voxels (``width = 1``: the boundary itself), so it is
    ``2·width`` voxels wide across a straight contour. An image whose mask has no boundary (all background or all
    foreground) falls back to the whole-image mean.

    Args:
        umap: ``(B, *spatial)``.
        mask: ``(B, *spatial)`` foreground (e.g. the predicted segmentation ``!= 0``). Required.
        width: Half-width of the band in voxels (>= 1).

    Returns:
        ``(B,)``.

    Example:
        >>> u = torch.arange(8.0).repeat(8, 1)[None]  # u = column index
        >>> fg = torch.zeros(1, 8, 8, dtype=torch.bool)
        >>> fg[:, :, :4] = True  # contour between columns 3 and 4
        >>> agg_boundary_mean(u, fg, width=1), agg_boundary_mean(u, fg, width=2)  # columns 3-4, then 2-5
        (tensor([3.5000]), tensor([3.5000]))
    """
    if mask is None:
        raise ConfigError("aggregator 'boundary_mean' needs a foreground mask (e.g. the predicted segmentation != 0)")
    if int(width) < 1:
        raise ConfigError(f"boundary_mean width must be >= 1, got {width}")
    band = dilate_mask(_boundary(mask.bool()), int(width) - 1)
    return torch.where(band.flatten(1).any(1), agg_mean(umap, band), agg_mean(umap))


@register_aggregator("patch_max", doc="max over sliding patches of the patch mean (patch=8)")
def agg_patch_max(umap: Tensor, mask: Tensor | None = None, patch: int | Sequence[int] = 8) -> Tensor:
    """Maximum over all windows of size ``patch`` (stride 1, inside the image) of the mean of ``u`` in the window.

    A patch larger than the image is shrunk to the image size along that axis. With a mask, the window mean is
    ``Σ m u / Σ m`` and windows without masked pixels are ignored (an image with an empty mask gives NaN).

    Args:
        umap: ``(B, H, W)`` or ``(B, D, H, W)``.
        mask: Optional ``(B, *spatial)``.
        patch: Window side (int) or per-axis sizes.

    Returns:
        ``(B,)``.
    """
    nd = umap.dim() - 1
    pool = {2: F.avg_pool2d, 3: F.avg_pool3d}.get(nd)
    if pool is None:
        raise DataError(f"patch_max needs a 2D or 3D map (B, *spatial), got {tuple(umap.shape)}")
    sizes = [int(patch)] * nd if isinstance(patch, int) else [int(s) for s in patch]
    if len(sizes) != nd or min(sizes) < 1:
        raise ConfigError(f"patch must be a positive int or {nd} positive ints, got {patch}")
    k = tuple(min(s, n) for s, n in zip(sizes, umap.shape[1:]))
    u = (umap if umap.is_floating_point() else umap.float()).unsqueeze(1)
    if mask is None:
        return pool(u, kernel_size=k, stride=1).flatten(1).amax(1)
    m = mask.to(u.dtype).unsqueeze(1)
    num = pool(u * m, kernel_size=k, stride=1).flatten(1)
    den = pool(m, kernel_size=k, stride=1).flatten(1)
    ratio = torch.where(den > 0, num / den.clamp_min(torch.finfo(u.dtype).tiny), torch.full_like(num, -torch.inf))
    out = ratio.amax(1)
    return torch.where(torch.isinf(out) & (out < 0), torch.full_like(out, torch.nan), out)


@register_aggregator(
    "frac_above", doc="fraction of pixels with u > threshold (threshold required)", needs=("threshold",)
)
def agg_frac_above(umap: Tensor, mask: Tensor | None = None, threshold: float | None = None) -> Tensor:
    """``Σ_i m_i [u_i > threshold] / Σ_i m_i`` per image. ``threshold`` is required (maps have no common scale).

    Returns:
        ``(B,)``; NaN for an empty mask.
    """
    if threshold is None:
        raise ConfigError("aggregator 'frac_above' needs threshold=<value> (maps have no common scale)")
    u, m = _flat(umap, mask)
    return ((u > threshold) & m).sum(1).to(u.dtype) / m.sum(1)


def aggregate(umap: Tensor, name: str, mask: Tensor | None = None, **kw) -> Tensor:
    """Apply the aggregator registered as ``name`` to ``umap`` ``(B, *spatial)``; returns ``(B,)``."""
    return AGGREGATORS.get(name)(umap, mask=mask, **kw)


# -- combining several image-level scores --------------------------------------------------------------------
def average_ranks(x: Tensor) -> Tensor:
    """1-based ranks of a 1-D tensor with ties given their average rank (as ``scipy.stats.rankdata``)."""
    if x.dim() != 1:
        raise ValueError(f"average_ranks needs a 1-D tensor, got {tuple(x.shape)}")
    n = x.numel()
    order = torch.argsort(x, stable=True)
    _, counts = torch.unique_consecutive(x[order], return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)
    avg = ends - (counts.to(torch.float64) - 1) / 2
    ranks = torch.empty(n, dtype=torch.float64, device=x.device)
    ranks[order] = torch.repeat_interleave(avg, counts)
    return ranks


def _check_scores(scores: dict[str, Tensor]) -> int:
    if not scores:
        raise ValueError("no scores to combine")
    sizes = {k: v.shape for k, v in scores.items()}
    n = next(iter(scores.values())).numel()
    if any(v.dim() != 1 or v.numel() != n for v in scores.values()):
        raise DataError(f"every score must be (N,) with the same N, got {sizes}")
    bad = [k for k, v in scores.items() if not torch.isfinite(v).all()]
    if bad:
        raise DataError(f"scores {bad} contain NaN or infinite values")
    return n


def rank_aggregate(scores: dict[str, Tensor]) -> Tensor:
    """Unsupervised aggregate score: mean over measures of rank-normalised scores.

    For each measure ``j`` with image scores ``s_j`` ``(N,)`` (higher = more uncertain), ``r_j = (rank(s_j) − 1)
    / (N − 1)`` with average ranks for ties (0.5 when ``N == 1``); the aggregate is ``(1/J) Σ_j r_j``.

    Returns:
        ``(N,)`` float64 in ``[0, 1]``; monotone in every input score.
    """
    n = _check_scores(scores)
    if n == 1:
        return torch.full((1,), 0.5, dtype=torch.float64)
    normed = [(average_ranks(v) - 1) / (n - 1) for v in scores.values()]
    return torch.stack(normed).mean(0)


class LinearAggregate:
    """Supervised aggregate score: ridge regression of ``1 − Dice`` on standardised image scores.

    ``ŷ = b + Σ_j w_j (s_j − μ_j) / σ_j`` with ``(μ_j, σ_j)`` the validation mean and population std of measure
    ``j`` (σ = 0 -> 1), ``b`` = mean of ``1 − Dice`` and ``w = (ZᵀZ + λ N I)⁻¹ Zᵀ (y − b)``. Higher = worse.

    Args:
        ridge: λ, the penalty per image (scale-free because scores are standardised).
    """

    def __init__(self, ridge: float = 1e-3):
        if ridge < 0:
            raise ConfigError(f"ridge must be >= 0, got {ridge}")
        self.ridge = float(ridge)
        self.names: list[str] = []
        self.mean: Tensor | None = None
        self.std: Tensor | None = None
        self.coef: Tensor | None = None
        self.intercept: float = 0.0

    def _design(self, scores: dict[str, Tensor]) -> Tensor:
        missing = [n for n in self.names if n not in scores]
        if missing:
            raise DataError(f"scores lack the measures {missing} this aggregate was fitted on")
        _check_scores({n: scores[n] for n in self.names})
        return torch.stack([scores[n].to(torch.float64) for n in self.names], 1)

    def fit(self, scores: dict[str, Tensor], dice: Tensor) -> LinearAggregate:
        """Fit on validation images. ``scores``: name -> ``(N,)``; ``dice``: ``(N,)``. Returns ``self``."""
        self.names = list(scores)
        x = self._design(scores)
        y = 1 - dice.to(torch.float64).flatten()
        if y.numel() != x.shape[0] or not torch.isfinite(y).all():
            raise DataError(f"dice must be (N={x.shape[0]},) and finite, got {tuple(dice.shape)}")
        self.mean = x.mean(0)
        std = x.std(0, correction=0)
        self.std = torch.where(std > 0, std, torch.ones_like(std))
        z = (x - self.mean) / self.std
        self.intercept = float(y.mean())
        a = z.T @ z + self.ridge * x.shape[0] * torch.eye(z.shape[1], dtype=torch.float64)
        self.coef = torch.linalg.lstsq(a, z.T @ (y - self.intercept)).solution
        return self

    def predict(self, scores: dict[str, Tensor]) -> Tensor:
        """Predicted ``1 − Dice`` ``(N,)`` float64 for new images."""
        if self.coef is None:
            raise ValueError("LinearAggregate is not fitted; call fit() or from_dict() first")
        assert self.mean is not None and self.std is not None  # fitted together with coef
        z = (self._design(scores) - self.mean) / self.std
        return self.intercept + z @ self.coef

    def to_dict(self) -> dict:
        """A JSON-able dict of the fitted state."""
        if self.coef is None:
            raise ValueError("LinearAggregate is not fitted")
        assert self.mean is not None and self.std is not None  # fitted together with coef
        return {
            "kind": "linear_aggregate",
            "ridge": self.ridge,
            "names": list(self.names),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
        }

    @classmethod
    def from_dict(cls, d: dict) -> LinearAggregate:
        """Rebuild from :meth:`to_dict` output."""
        try:
            obj = cls(ridge=d["ridge"])
            obj.names = list(d["names"])
            obj.mean = torch.tensor(d["mean"], dtype=torch.float64)
            obj.std = torch.tensor(d["std"], dtype=torch.float64)
            obj.coef = torch.tensor(d["coef"], dtype=torch.float64)
            obj.intercept = float(d["intercept"])
        except KeyError as e:
            raise ConfigError(f"linear aggregate dict lacks key {e}") from None
        if not (len(obj.names) == obj.mean.numel() == obj.std.numel() == obj.coef.numel()):
            raise ConfigError("linear aggregate dict has inconsistent lengths")
        return obj
