"""Exact nearest-boundary distances for the surface metrics, computed on the boundary band first.

:func:`band_distances` answers, for every query voxel of a cropped mask, the Euclidean distance (spacing units) to
the nearest voxel of a target set (the other mask's boundary), exactly, in three stages:

1. **Band search.** The integer offsets ``o`` with ``‖o · s‖ ≤ ρ`` (``ρ = radius · min(s)``, the band) are
   visited in increasing order of ``‖o · s‖``; a query ``q`` is answered by the first offset with ``q + o`` in
   the target. This is exact: every offset shorter than the answer was visited and missed. The queries of the
   surface metrics mostly lie on or next to the other boundary (two segmentations of one organ), so most are
   answered by the first few offsets, and the cost is a few gathers per boundary voxel, not a pass over the crop.
2. **Outside the band** (no target voxel within ``ρ``; the band search also stops early when the queries left
   are too many for it to pay, as for salt-and-pepper errors far from the organ): the nearest target voxel from
   a KD-tree over the target voxels (few queries) or from the feature transform of
   ``scipy.ndimage.distance_transform_edt(return_indices=True, return_distances=False)`` on the crop (many
   queries; its distances are not computed for the whole crop, only at the queries). Both are exact.
3. Every distance is ``sqrt(Σ_i ((q_i − n_i) s_i)²)`` of the query and its nearest target voxel in float64, the
   same expression on every stage, so the stage that answers a query does not change its value beyond the tie
   between two equidistant nearest voxels (equal up to float round-off).

The choice between the stages only changes the cost, never the value: ``tests/metrics/test_surface_band.py``
checks every stage against the whole-crop EDT and brute force.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

#: Band radius in units of the smallest spacing (offsets up to this many voxels along the finest axis).
BAND_RADIUS = 6.0

#: The band search stops early (queries left × offsets left > :data:`BAND_WORK_PER_VOXEL` × crop size) only while
#: a block of offsets answers less than this fraction of the queries it tried.
BAND_MIN_YIELD = 0.25

#: Stop the band search when ``queries left × offsets left`` exceeds this many times the crop size (the feature
#: transform of the crop is then cheaper).
BAND_WORK_PER_VOXEL = 8

#: Use the feature transform rather than the KD-tree when the queries left exceed ``crop size / FT_DENSITY``.
FT_DENSITY = 64

#: Worker threads of the KD-tree queries.
KDTREE_WORKERS = 2


@functools.lru_cache(maxsize=64)
def band_offsets(spacing: tuple[float, ...], radius: float) -> tuple[np.ndarray, np.ndarray]:
    """The integer offsets of the band, sorted by length, and their lengths.

    Args:
        spacing: Voxel size per axis.
        radius: Band radius in units of ``min(spacing)``.

    Returns:
        ``(offsets (P, ndim) int64, lengths (P,) float64)``, ``offsets[0] = 0``, ``lengths`` non-decreasing and
        ``≤ radius · min(spacing)``; every offset of that length or less is included.

    >>> off, d = band_offsets((1.0, 1.0), 1.0)
    >>> off.tolist(), d.tolist()
    ([[0, 0], [-1, 0], [0, -1], [0, 1], [1, 0]], [0.0, 1.0, 1.0, 1.0, 1.0])
    """
    s = np.asarray(spacing, dtype=np.float64)
    rho = radius * float(s.min())
    half = np.floor(rho / s + 1e-9).astype(np.int64)
    grids = np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij")
    off = np.stack([g.ravel() for g in grids], axis=1)
    d = _lengths(off, s)
    keep = d <= rho * (1 + 1e-12)
    off, d = off[keep], d[keep]
    order = np.argsort(d, kind="stable")
    return off[order], d[order]


def _lengths(diff: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``sqrt(Σ_i (diff_i s_i)²)`` of integer differences ``(P, ndim)``, in float64 (one expression everywhere)."""
    acc = np.zeros(diff.shape[0])
    for i in range(diff.shape[1]):
        acc += (diff[:, i] * s[i]) ** 2
    return np.sqrt(acc)


def _band(qidx: tuple[np.ndarray, ...], target: np.ndarray, s: np.ndarray, radius: float):
    """Band stage: distances of the queries answered within the band, and the indices of those left."""
    off, d_off = band_offsets(tuple(float(x) for x in s), radius)
    half = np.abs(off).max(axis=0) if off.shape[0] > 1 else np.zeros(target.ndim, np.int64)
    tp = np.pad(target, [(int(h), int(h)) for h in half]).ravel()
    strides = np.cumprod((1, *[target.shape[i] + 2 * int(half[i]) for i in range(target.ndim - 1, 0, -1)]))[::-1]
    flat = np.zeros(qidx[0].shape[0], np.int64)
    for i in range(target.ndim):
        flat += (qidx[i].astype(np.int64) + int(half[i])) * int(strides[i])
    off_flat = off @ strides.astype(np.int64)
    out = np.full(flat.shape[0], np.nan)
    rem = np.arange(flat.shape[0])
    pos, block, n_off = 0, 1, off.shape[0]
    while pos < n_off and rem.size:
        o = off_flat[pos : pos + block]
        hits = tp[flat[rem, None] + o[None, :]]
        found = hits.any(axis=1)
        n_before = rem.size
        if found.any():
            first = hits[found].argmax(axis=1)
            out[rem[found]] = d_off[pos + first]
            rem = rem[~found]
        pos += block
        block = min(2 * block, 64)
        # few answers per offset and much work left (queries far from the target): the feature transform is cheaper
        slow = n_before - rem.size < BAND_MIN_YIELD * n_before
        if slow and pos >= 3 and rem.size * (n_off - pos) > BAND_WORK_PER_VOXEL * target.size:
            break
    return out, rem


def _nearest_outside(qidx: tuple[np.ndarray, ...], target: np.ndarray, s: np.ndarray, n_left: int) -> np.ndarray:
    """Integer coordinates ``(n, ndim)`` of a nearest target voxel of each query (KD-tree or feature transform)."""
    q = np.stack(qidx, axis=1)
    if n_left * FT_DENSITY > target.size:
        # isotropic spacing: the same nearest voxels without ``sampling`` (twice as fast in scipy)
        sampling = None if np.all(s == s[0]) else s
        ft = ndimage.distance_transform_edt(~target, sampling=sampling, return_distances=False, return_indices=True)
        return np.stack([ft[i][qidx] for i in range(target.ndim)], axis=1)
    pts = np.argwhere(target)
    _, j = cKDTree(pts * s, leafsize=32).query(q * s, k=1, workers=KDTREE_WORKERS)
    return pts[j]


def band_distances(
    query: np.ndarray, target: np.ndarray, spacing: np.ndarray, radius: float = BAND_RADIUS
) -> np.ndarray:
    """Distance of every query voxel to its nearest target voxel, exact (module docstring).

    Args:
        query: bool ``(*spatial)``, the voxels to answer.
        target: bool ``(*spatial)``, same shape, at least one voxel.
        spacing: ``(ndim,)`` positive voxel size.
        radius: Band radius in units of ``min(spacing)`` (cost only, never the values).

    Returns:
        float64 ``(query.sum(),)`` in the order of ``query[mask]`` (C order), spacing units.

    >>> t = np.zeros((1, 9), bool); t[0, 0] = True
    >>> band_distances(np.ones((1, 9), bool), t, np.array([1.0, 0.5]), radius=2.0).tolist()
    [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
    """
    s = np.asarray(spacing, dtype=np.float64)
    qidx = np.nonzero(query)
    out, rem = _band(qidx, target, s, radius)
    if rem.size:
        sub = tuple(ix[rem] for ix in qidx)
        nearest = _nearest_outside(sub, target, s, rem.size)
        out[rem] = _lengths(nearest - np.stack(sub, axis=1), s)
    return out
