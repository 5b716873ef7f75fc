"""Low-memory exact voxel statistics for whole 3D volumes: chunked sums, Pearson and Spearman correlation, and
error-detection scores (UEO, AUROC, average precision) from two sorted value arrays.

The per-voxel formulas of :mod:`trustseg.metrics.uncertainty_quality` and :mod:`trustseg.metrics.multirater`
build float64 copies, rank arrays and index permutations of the whole volume (tens of bytes per voxel). The
functions here give the same numbers (up to float64 round-off of the summation order) with temporaries bounded
by ``chunk`` voxels, plus for the rank/sort-based ones one sorted copy of the values:

* :func:`chunked_pearson`: two passes (means, then centred sums), float64 accumulators, ``O(chunk)`` temporaries;
* :func:`lowmem_spearman`: Pearson of the average ranks, from one argsort of ``x`` (8 bytes/voxel) and its sorted
  values (4 bytes/voxel for float32), the ranks of ``y`` from its distinct values (a table of them);
* :func:`error_split`: the values of the error voxels and of the correct voxels, each sorted (one copy of the
  map in all); :func:`split_ueo`, :func:`split_auroc`, :func:`split_average_precision` count from them with
  binary searches. AUROC = Mann–Whitney ``Σ_pos (#neg < v + ½ #neg = v) / (n_pos n_neg)`` (equal to the
  average-rank formula); AP = ``Σ_v (n_pos(v) / n_pos) · #pos(≥ v) / #all(≥ v)`` over the distinct positive values.

Float32 values are compared with float64 thresholds exactly: ``x > t`` ⟺ ``x > ↓t`` with ``↓t`` the largest
float32 ≤ t (:func:`float32_floor`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

#: Voxels per chunk of the chunked passes (float64 temporaries of 2 MB; per-chunk temporaries stay ~20 MB).
CHUNK = 1 << 18


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Torch ops single-threaded inside (the chunks of a pass run on a thread pool instead); the setting is restored.

    Many short intra-op parallel regions (one per op and chunk) are slow, and on a busy machine very slow: a
    region waits for its last thread (measured on the shared 2-core machine: 5–60× the CPU time of one thread);
    coarse-grained parallelism over chunks is not.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def spans(n: int, chunk: int = CHUNK) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in pieces of ``chunk``.

    Example:
        >>> spans(5, 2)
        [(0, 2), (2, 4), (4, 5)]
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    return [(a, min(a + chunk, n)) for a in range(0, n, chunk)]


def chunked_argmax(probs: Tensor, chunk: int = CHUNK) -> Tensor:
    """``argmax_k probs_k`` of ``(K, *spatial)`` (ties to the lower class) as ``(*spatial)``, uint8 for
    ``K ≤ 256`` (else int64), chunk by chunk: no int64 or transposed copy of the volume.

    Example:
        >>> chunked_argmax(torch.tensor([[0.2, 0.5, 0.9], [0.8, 0.5, 0.1]]), chunk=2).tolist()
        [1, 0, 0]
    """
    flat = probs.reshape(probs.shape[0], -1)
    out = torch.empty(flat.shape[1], dtype=torch.uint8 if probs.shape[0] <= 256 else torch.long)
    for a, b in spans(flat.shape[1], chunk):
        out[a:b] = flat[:, a:b].argmax(0)
    return out.view(probs.shape[1:])


def masked_mean(x: Tensor, mask: Tensor, chunk: int = CHUNK) -> float:
    """float64 mean of ``x[mask]`` (same shapes), summed chunk by chunk: no float64 or selected copy of the
    volume (NaN for an empty mask).

    Example:
        >>> masked_mean(torch.tensor([1.0, 2.0, 4.0]), torch.tensor([True, False, True]), chunk=1)
        2.5
    """
    xf, mf = x.reshape(-1), mask.reshape(-1)
    total, n = 0.0, 0
    for a, b in spans(xf.numel(), chunk):
        sel = xf[a:b][mf[a:b]]
        total += float(sel.sum(dtype=torch.float64))
        n += sel.numel()
    return total / n if n else math.nan


def _flat(x: Tensor | np.ndarray) -> np.ndarray:
    a = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    a = a.reshape(-1)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    return a


def chunked_sum(x: Tensor | np.ndarray, chunk: int = CHUNK) -> float:
    """``Σ x`` accumulated in float64 over chunks."""
    a = _flat(x)
    return float(sum(a[s:e].sum(dtype=np.float64) for s, e in spans(a.size, chunk)))


def chunked_pearson(x: Tensor | np.ndarray, y: Tensor | np.ndarray, chunk: int = CHUNK) -> float:
    """Pearson correlation over all voxels (``pearson`` of :mod:`~trustseg.metrics.uncertainty_quality`):
    ``Σ(x − x̄)(y − ȳ) / √(Σ(x − x̄)² Σ(y − ȳ)²)``, clamped to [−1, 1]; NaN for ``n < 2`` or a constant input.

    Example:
        >>> round(chunked_pearson(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 7.0]), chunk=2), 6)
        0.993399
    """
    a, b = _flat(x), _flat(y)
    n = a.size
    if n < 2 or a.min() == a.max() or b.min() == b.max():
        return math.nan
    ma, mb = chunked_sum(a, chunk) / n, chunked_sum(b, chunk) / n
    sab = saa = sbb = 0.0
    for s, e in spans(n, chunk):
        ca, cb = a[s:e].astype(np.float64) - ma, b[s:e].astype(np.float64) - mb
        sab += float(ca @ cb)
        saa += float(ca @ ca)
        sbb += float(cb @ cb)
    return min(1.0, max(-1.0, sab / math.sqrt(saa * sbb)))


def _rank_table(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of ``a`` (ascending) and their average 1-based ranks."""
    values, counts = np.unique(a, return_counts=True)
    ends = np.cumsum(counts).astype(np.float64)
    return values, ends - (counts - 1) / 2


def lowmem_spearman(x: Tensor | np.ndarray, y: Tensor | np.ndarray, chunk: int = CHUNK) -> float:
    """Spearman correlation (Pearson of average ranks, ties as ``scipy.stats.rankdata``) without rank arrays.

    ``x`` is argsorted once; the average rank of each sorted position comes from binary searches in the sorted
    values, the rank of ``y`` from the table of its distinct values (few for a rater-disagreement map). The mean
    rank is ``(n + 1) / 2`` exactly, so the centred sums are accumulated in one chunked pass. NaN for ``n < 2`` or
    a constant input.

    Example:
        >>> lowmem_spearman(torch.tensor([0.1, 0.4, 0.4, 0.9]), torch.tensor([0.0, 1.0, 1.0, 0.5]), chunk=3)
        0.3333333333333333
    """
    a, b = _flat(x), _flat(y)
    n = a.size
    if n < 2:
        return math.nan
    b_values, b_ranks = _rank_table(b)
    if b_values.size < 2:
        return math.nan
    order = np.argsort(a, kind="stable")
    sa = a[order]
    if sa[0] == sa[-1]:
        return math.nan
    m = (n + 1) / 2
    sab = saa = sbb = 0.0
    for s, e in spans(n, chunk):
        v = sa[s:e]
        ra = (np.searchsorted(sa, v, "left") + np.searchsorted(sa, v, "right") + 1) / 2 - m
        rb = b_ranks[np.searchsorted(b_values, b[order[s:e]])] - m
        sab += float(ra @ rb)
        saa += float(ra @ ra)
        sbb += float(rb @ rb)
    return min(1.0, max(-1.0, sab / math.sqrt(saa * sbb)))


def float32_floor(t: np.ndarray) -> np.ndarray:
    """The largest float32 ≤ each float64 ``t`` (so ``x > t`` ⟺ ``x > float32_floor(t)`` for float32 ``x``).

    Example:
        >>> float(float32_floor(np.array([0.1]))[0]) <= 0.1
        True
    """
    t32 = t.astype(np.float32)
    return np.where(t32.astype(np.float64) > t, np.nextafter(t32, np.float32(-np.inf)), t32).astype(np.float32)


def _thresholds_for(values: np.ndarray, t: np.ndarray) -> np.ndarray:
    return float32_floor(t) if values.dtype == np.float32 else t.astype(values.dtype)


def error_split(umap: Tensor | np.ndarray, error: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sorted values at error voxels, sorted values at correct voxels)`` of a map (float32 or float64)."""
    u = _flat(umap)
    e = (error.detach().cpu().numpy() if isinstance(error, Tensor) else np.asarray(error)).reshape(-1).astype(bool)
    pos, neg = u[e], u[~e]
    pos.sort()
    neg.sort()
    return pos, neg


def _count_le(sorted_values: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``#values ≤ t`` for each float64 threshold ``t``, exactly."""
    return np.searchsorted(sorted_values, _thresholds_for(sorted_values, t), "right").astype(np.int64)


def split_ueo(pos: np.ndarray, neg: np.ndarray, thresholds: int | np.ndarray = 100) -> tuple[float, float]:
    """UEO ``max_t Dice(error, u > t)`` and the best t (lowest among ties) from :func:`error_split`; thresholds
    evenly spaced over ``[min u, max u]`` (float64) when an int. Needs at least one error voxel."""
    if isinstance(thresholds, int):
        lo = min(float(pos[0]), float(neg[0])) if neg.size else float(pos[0])
        hi = max(float(pos[-1]), float(neg[-1])) if neg.size else float(pos[-1])
        t = torch.linspace(lo, hi, thresholds, dtype=torch.float64).numpy()
    else:
        t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    n_err = pos.size
    tp = n_err - _count_le(pos, t)
    n_pred = tp + neg.size - _count_le(neg, t)
    dice = 2 * tp.astype(np.float64) / (n_pred + n_err).astype(np.float64)
    best = int(np.argmax(dice))
    return float(dice[best]), float(t[best])


def split_auroc(pos: np.ndarray, neg: np.ndarray, chunk: int = CHUNK) -> float:
    """AUROC of the values as a detector of the error voxels (Mann–Whitney, ties count ½); NaN for one class."""
    if pos.size == 0 or neg.size == 0:
        return math.nan
    total = 0
    for s, e in spans(pos.size, chunk):
        v = pos[s:e]
        total += int(np.searchsorted(neg, v, "left").sum()) + int(np.searchsorted(neg, v, "right").sum())
    return total / 2 / (pos.size * neg.size)


def split_average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """Average precision (scikit-learn's: tied values form one threshold) of the values detecting the error
    voxels; NaN without error voxels."""
    if pos.size == 0:
        return math.nan
    values, counts = np.unique(pos, return_counts=True)
    tps = pos.size - np.searchsorted(pos, values, "left")
    everything = tps + neg.size - np.searchsorted(neg, values, "left")
    terms = (counts / pos.size) * (tps / everything)
    return float(terms[::-1].sum())  # high to low, the order of the threshold sweep
