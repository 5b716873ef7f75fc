"""Distance-based segmentation metrics: Hausdorff (percentile), HD95, ASSD and NSD, with voxel spacing, in two
conventions that libraries silently disagree on.

Conventions (``convention=``):

- ``"surface"`` (MONAI, MedPy, DeepMind surface-distance without sub-voxel areas): the boundary of a mask is the
  set of foreground voxels with at least one background face-neighbour (``mask XOR erosion(mask)``, erosion by the
  face-connected cross, voxels outside the image counting as background). ``d(A→B)`` holds, for every boundary
  voxel of A, the Euclidean distance (in spacing units) to the nearest boundary voxel of B.
- ``"voxelset"``: ``d(A→B)`` holds, for every foreground voxel of A, the distance to the nearest foreground voxel
  of B (0 inside the overlap).

From the two directed sets:

- Hausdorff at percentile q (``hd95`` is q = 95), percentile by linear interpolation (numpy ``"linear"``, which
  is also ``torch.quantile`` as MONAI uses). ``pooling="union"`` (default, MedPy's ``hd95``): the percentile of
  ``d(A→B) ∪ d(B→A)``; ``pooling="max"`` (MONAI, DeepMind): ``max(P_q(d(A→B)), P_q(d(B→A)))``. q = 100 gives the
  classic Hausdorff distance under both.
- ASSD, ``average="pooled"`` (default, MONAI ``symmetric=True``): ``(Σ d(A→B) + Σ d(B→A)) / (n_A + n_B)``;
  ``average="directed_mean"`` (MedPy ``assd``): ``(mean d(A→B) + mean d(B→A)) / 2``.
- NSD at tolerance τ (MONAI ``compute_surface_dice`` with ``use_subvoxels=False``): ``(#{d(A→B) ≤ τ} +
  #{d(B→A) ≤ τ}) / (n_A + n_B)``, counting voxels rather than surface-element areas.

Empty masks: both empty -> ``empty_both="best"`` (distance 0, NSD 1; default) or ``"nan"``; exactly one empty ->
``empty_one="worst"`` (distance inf, NSD 0; default) or ``"nan"``.

Speed: both masks are cropped to the bounding box of their union plus a one-voxel zero margin (in
:func:`surface_metrics`, class by class from projections of the class maps, without a whole-volume copy), then the
distances come from one of three exact backends: ``backend="band"`` (the default, ``"auto"``): the boundary band
first, the KD-tree or the feature transform only for the voxels outside it
(:func:`trustseg.metrics.surface_distance.band_distances`); ``backend="edt"``:
``scipy.ndimage.distance_transform_edt(sampling=spacing)`` on the whole crop; ``backend="kdtree"``: a KD-tree over
the target's boundary voxels (exact too, since the nearest voxel of B to a point outside B is always a boundary
voxel of B). The three agree up to float round-off (``tests/metrics/test_surface_band.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial import cKDTree

from trustseg.core.errors import DataError
from trustseg.metrics.registry import METRICS
from trustseg.metrics.surface_distance import band_distances

Convention = Literal["surface", "voxelset"]
Backend = Literal["auto", "band", "edt", "kdtree"]


def _as_bool(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if a.dtype != bool:
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise DataError(f"{name} must be a binary mask, got dtype {a.dtype}")
        if a.size and not np.isin(a, (0, 1)).all():
            raise DataError(f"{name} must be a binary mask (0/1 or bool)")
        a = a.astype(bool)
    return a


def _spacing(spacing: float | Sequence[float] | None, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim)
    s = np.asarray(spacing, dtype=np.float64)
    s = np.full(ndim, float(s)) if s.ndim == 0 else s
    if s.shape != (ndim,) or not np.all(s > 0):
        raise DataError(f"spacing must be one positive number or {ndim} of them, got {spacing!r}")
    return s


def crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop two same-shape masks to the bounding box of ``a | b`` and pad one background voxel on every side.

    Returns empty-shaped arrays when both masks are empty. Distances are unchanged: every foreground voxel and
    the background ring that defines the boundaries lie inside the crop.
    """
    union = a | b
    slices = []
    for ax in range(union.ndim):
        other = tuple(i for i in range(union.ndim) if i != ax)
        idx = np.flatnonzero(union.any(axis=other))
        if idx.size == 0:
            return a[(slice(0, 0),) * a.ndim], b[(slice(0, 0),) * b.ndim]
        slices.append(slice(idx[0], idx[-1] + 1))
    s = tuple(slices)
    return np.pad(a[s], 1), np.pad(b[s], 1)


def surface_voxels(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels: foreground voxels with a background face-neighbour (``mask & ~erosion(mask)``).

    Voxels outside the array count as background, as in ``scipy.ndimage.binary_erosion(border_value=0)``.

    Args:
        mask: bool ``(*spatial)``.

    Returns:
        bool ``(*spatial)``.
    """
    m = np.pad(mask, 1)
    core = tuple(slice(1, -1) for _ in range(m.ndim))
    eroded = m[core].copy()
    for ax in range(m.ndim):
        lo = list(core)
        hi = list(core)
        lo[ax], hi[ax] = slice(0, -2), slice(2, None)
        eroded &= m[tuple(lo)]
        eroded &= m[tuple(hi)]
    return mask & ~eroded


def _nearest_edt(query: np.ndarray, target: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    return ndimage.distance_transform_edt(~target, sampling=spacing)[query]


def _nearest_kdtree(query: np.ndarray, target: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    pts_t = np.argwhere(target) * spacing
    pts_q = np.argwhere(query) * spacing
    if pts_q.shape[0] == 0:
        return np.zeros(0)
    return cKDTree(pts_t, leafsize=32).query(pts_q, k=1)[0]


def directed_distances(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    spacing: float | Sequence[float] | None = None,
    convention: Convention = "surface",
    backend: Backend = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """The two directed distance sets ``d(A→B)`` and ``d(B→A)`` (A = pred, B = target), in spacing units.

    Args:
        pred: Binary mask ``(*spatial)``.
        target: Binary mask, same shape.
        spacing: Voxel size per axis (or one number); ``None`` = 1.
        convention: ``"surface"`` (boundary voxels to boundary voxels) or ``"voxelset"`` (every foreground voxel
            to the nearest foreground voxel of the other mask, 0 in the overlap).
        backend: ``"edt"``, ``"kdtree"`` or ``"auto"`` (same values up to float rounding).

    Returns:
        float64 arrays of lengths ``n_A`` and ``n_B`` (boundary or foreground voxel counts). When one mask is
        empty its set is empty and the other set is all ``inf``.
    """
    a, b = _as_bool(pred, "pred"), _as_bool(target, "target")
    if a.shape != b.shape:
        raise DataError(f"pred and target shapes differ: {a.shape} vs {b.shape}")
    if convention not in ("surface", "voxelset"):
        raise ValueError(f"convention must be 'surface' or 'voxelset', got {convention!r}")
    sp = _spacing(spacing, a.ndim)
    a, b = crop_to_union(a, b)
    return _directed_cropped(a, b, sp, convention, backend)


def _directed_cropped(
    a: np.ndarray, b: np.ndarray, sp: np.ndarray, convention: Convention, backend: Backend
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`directed_distances` of two masks already cropped with a background margin of one voxel."""
    sa, sb = surface_voxels(a), surface_voxels(b)
    qa, qb = (sa, sb) if convention == "surface" else (a, b)
    if not a.any() or not b.any():
        return np.full(int(qa.sum()), np.inf), np.full(int(qb.sum()), np.inf)
    if backend in ("auto", "band"):
        if convention == "surface":
            return band_distances(sa, sb, sp), band_distances(sb, sa, sp)
        d_ab = np.zeros(int(a.sum()))
        d_ab[~b[a]] = band_distances(a & ~b, sb, sp)
        d_ba = np.zeros(int(b.sum()))
        d_ba[~a[b]] = band_distances(b & ~a, sa, sp)
        return d_ab, d_ba
    if backend == "edt":
        ta, tb = (sa, sb) if convention == "surface" else (a, b)
        return _nearest_edt(qa, tb, sp), _nearest_edt(qb, ta, sp)
    if backend != "kdtree":
        raise ValueError(f"backend must be 'auto', 'band', 'edt' or 'kdtree', got {backend!r}")
    if convention == "surface":
        return _nearest_kdtree(sa, sb, sp), _nearest_kdtree(sb, sa, sp)
    d_ab = np.zeros(int(a.sum()))
    d_ab[~b[a]] = _nearest_kdtree(a & ~b, sb, sp)
    d_ba = np.zeros(int(b.sum()))
    d_ba[~a[b]] = _nearest_kdtree(b & ~a, sa, sp)
    return d_ab, d_ba


def class_box(pred: np.ndarray, target: np.ndarray, k: int) -> tuple[slice, ...] | None:
    """Bounding box of ``(pred == k) | (target == k)`` from its axis projections (two passes over the maps), or
    ``None`` when class ``k`` is in neither map.

    Args:
        pred: Class map ``(*spatial)``, any integer dtype (numpy: single-threaded byte compares, which stay fast on
            a loaded machine where a multi-threaded reduction waits for its slowest thread).
        target: Class map, same shape.
        k: The class.

    >>> class_box(np.array([[0, 1, 0], [0, 0, 0]]), np.array([[0, 0, 0], [0, 0, 1]]), 1)
    (slice(0, 2, None), slice(1, 3, None))
    """
    m = pred == k
    m |= target == k
    d = m.ndim
    if d == 1:
        projections = [m]
    else:
        rows = m.any(axis=-1)  # (*spatial[:-1]): one pass; the last axis from a second one
        projections = [rows.any(axis=tuple(o for o in range(d - 1) if o != ax)) for ax in range(d - 1)]
        projections.append(m.reshape(-1, m.shape[-1]).any(axis=0))
    slices = []
    for proj in projections:
        idx = np.flatnonzero(proj)
        if idx.size == 0:
            return None
        slices.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(slices)


def _class_crops(pred: np.ndarray, target: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The masks of class ``k`` cropped by :func:`class_box` with a one-voxel background margin (bool)."""
    box = class_box(pred, target, k)
    if box is None:
        empty = np.zeros((0,) * pred.ndim, bool)
        return empty, empty
    return np.pad(pred[box] == k, 1), np.pad(target[box] == k, 1)


def _empty_case(d_ab: np.ndarray, d_ba: np.ndarray, best: float, worst: float, empty_both: str, empty_one: str):
    """Return the policy value when a mask is empty, else None."""
    if empty_both not in ("best", "nan") or empty_one not in ("worst", "nan"):
        raise ValueError(f"empty_both must be best|nan and empty_one worst|nan, got {empty_both!r}, {empty_one!r}")
    if d_ab.size == 0 and d_ba.size == 0:
        return best if empty_both == "best" else float("nan")
    if d_ab.size == 0 or d_ba.size == 0:
        return worst if empty_one == "worst" else float("nan")
    return None


def _hd_from(d_ab, d_ba, percentile, pooling, empty_both, empty_one) -> float:
    e = _empty_case(d_ab, d_ba, 0.0, float("inf"), empty_both, empty_one)
    if e is not None:
        return e
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must lie in [0, 100], got {percentile}")
    if pooling == "union":
        return float(np.percentile(np.concatenate([d_ab, d_ba]), percentile, method="linear"))
    if pooling == "max":
        return float(max(np.percentile(d_ab, percentile), np.percentile(d_ba, percentile)))
    raise ValueError(f"pooling must be 'union' or 'max', got {pooling!r}")


def _assd_from(d_ab, d_ba, average, empty_both, empty_one) -> float:
    e = _empty_case(d_ab, d_ba, 0.0, float("inf"), empty_both, empty_one)
    if e is not None:
        return e
    if average == "pooled":
        return float((d_ab.sum() + d_ba.sum()) / (d_ab.size + d_ba.size))
    if average == "directed_mean":
        return float((d_ab.mean() + d_ba.mean()) / 2)
    raise ValueError(f"average must be 'pooled' or 'directed_mean', got {average!r}")


def _nsd_from(d_ab, d_ba, tolerance, empty_both, empty_one) -> float:
    e = _empty_case(d_ab, d_ba, 1.0, 0.0, empty_both, empty_one)
    if e is not None:
        return e
    return float(((d_ab <= tolerance).sum() + (d_ba <= tolerance).sum()) / (d_ab.size + d_ba.size))


@METRICS.register("hausdorff", doc="percentile Hausdorff distance of binary masks (surface|voxelset convention)")
def hausdorff(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    spacing: float | Sequence[float] | None = None,
    percentile: float = 100.0,
    convention: Convention = "surface",
    pooling: Literal["union", "max"] = "union",
    empty_both: Literal["best", "nan"] = "best",
    empty_one: Literal["worst", "nan"] = "worst",
    backend: Backend = "auto",
) -> torch.Tensor:
    """Hausdorff distance at a percentile of the directed distance sets (module docstring for conventions).

    Args:
        pred: Binary mask ``(*spatial)``.
        target: Binary mask, same shape.
        spacing: Voxel size per axis (or one number).
        percentile: q in [0, 100]; 100 = maximum (classic Hausdorff), 95 = HD95.
        convention: ``"surface"`` or ``"voxelset"``.
        pooling: ``"union"``: ``P_q(d(A→B) ∪ d(B→A))``; ``"max"``: ``max(P_q(d(A→B)), P_q(d(B→A)))``.
        empty_both: Both masks empty -> 0 (``"best"``) or NaN.
        empty_one: One mask empty -> inf (``"worst"``) or NaN.
        backend: Distance computation, see :func:`directed_distances`.

    Returns:
        0-dim float64 tensor, in spacing units.
    """
    d = directed_distances(pred, target, spacing, convention, backend)
    return torch.tensor(_hd_from(*d, percentile, pooling, empty_both, empty_one), dtype=torch.float64)


@METRICS.register("hd95", doc="95th-percentile Hausdorff distance of binary masks (surface|voxelset convention)")
def hd95(pred, target, spacing=None, convention: Convention = "surface", pooling="union", **kwargs) -> torch.Tensor:
    """HD95: :func:`hausdorff` at percentile 95 (same arguments)."""
    return hausdorff(pred, target, spacing, 95.0, convention, pooling, **kwargs)


@METRICS.register("assd", doc="average symmetric surface distance of binary masks (surface|voxelset convention)")
def assd(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    spacing: float | Sequence[float] | None = None,
    convention: Convention = "surface",
    average: Literal["pooled", "directed_mean"] = "pooled",
    empty_both: Literal["best", "nan"] = "best",
    empty_one: Literal["worst", "nan"] = "worst",
    backend: Backend = "auto",
) -> torch.Tensor:
    """Average symmetric surface distance.

    ``"pooled"``: ``(Σ d(A→B) + Σ d(B→A)) / (n_A + n_B)``; ``"directed_mean"``: ``(mean d(A→B) + mean d(B→A)) / 2``.
    Other arguments as :func:`hausdorff`.

    Returns:
        0-dim float64 tensor, in spacing units.
    """
    d = directed_distances(pred, target, spacing, convention, backend)
    return torch.tensor(_assd_from(*d, average, empty_both, empty_one), dtype=torch.float64)


@METRICS.register("nsd", doc="normalised surface Dice at a tolerance (surface|voxelset convention)")
def nsd(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    tolerance: float,
    spacing: float | Sequence[float] | None = None,
    convention: Convention = "surface",
    empty_both: Literal["best", "nan"] = "best",
    empty_one: Literal["worst", "nan"] = "worst",
    backend: Backend = "auto",
) -> torch.Tensor:
    """Normalised surface Dice: ``(#{d(A→B) ≤ τ} + #{d(B→A) ≤ τ}) / (n_A + n_B)``.

    Args:
        tolerance: τ in spacing units (inclusive).
        Others: as :func:`hausdorff`; "best" is 1 and "worst" is 0 here.

    Returns:
        0-dim float64 tensor in [0, 1].
    """
    d = directed_distances(pred, target, spacing, convention, backend)
    return torch.tensor(_nsd_from(*d, tolerance, empty_both, empty_one), dtype=torch.float64)


@METRICS.register("surface_metrics", doc="per-class Hausdorff, HD-percentile, ASSD and NSD of class maps")
def surface_metrics(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    num_classes: int,
    spacing: float | Sequence[float] | None = None,
    convention: Convention = "surface",
    tolerance: float = 1.0,
    percentile: float = 95.0,
    include_background: bool = False,
    pooling: Literal["union", "max"] = "union",
    average: Literal["pooled", "directed_mean"] = "pooled",
    empty_both: Literal["best", "nan"] = "best",
    empty_one: Literal["worst", "nan"] = "worst",
    backend: Backend = "auto",
) -> dict[str, torch.Tensor]:
    """All distance metrics per class of two integer class maps, computing each class's distance sets once.

    Args:
        pred: Predicted class map ``(*spatial)``, ints in ``[0, K)``.
        target: Reference class map, same shape.
        num_classes: K, background included.
        percentile: q of the percentile Hausdorff entry.
        Others: as :func:`hausdorff`, :func:`assd` and :func:`nsd`.

    Returns:
        ``{"hd": (C,), "hd{q}": (C,), "assd": (C,), "nsd": (C,)}`` float64, C = K or K - 1 (class order), e.g.
        key ``"hd95"`` for q = 95.
    """
    p, t = torch.as_tensor(pred), torch.as_tensor(target)
    if p.shape != t.shape:
        raise DataError(f"pred and target shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
    key = f"hd{percentile:g}"
    out: dict[str, list[float]] = {"hd": [], key: [], "assd": [], "nsd": []}
    if convention not in ("surface", "voxelset"):
        raise ValueError(f"convention must be 'surface' or 'voxelset', got {convention!r}")
    sp = _spacing(spacing, p.dim())
    pn, tn = p.detach().cpu().numpy(), t.detach().cpu().numpy()
    for k in range(0 if include_background else 1, num_classes):
        d = _directed_cropped(*_class_crops(pn, tn, k), sp, convention, backend)
        out["hd"].append(_hd_from(*d, 100.0, pooling, empty_both, empty_one))
        out[key].append(_hd_from(*d, percentile, pooling, empty_both, empty_one))
        out["assd"].append(_assd_from(*d, average, empty_both, empty_one))
        out["nsd"].append(_nsd_from(*d, tolerance, empty_both, empty_one))
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}


for _conv in ("surface", "voxelset"):
    METRICS.add(f"hd95_{_conv}", functools.partial(hd95, convention=_conv), f"HD95, {_conv} convention")
    METRICS.add(f"assd_{_conv}", functools.partial(assd, convention=_conv), f"ASSD, {_conv} convention")
    METRICS.add(f"nsd_{_conv}", functools.partial(nsd, convention=_conv), f"NSD, {_conv} convention")
