"""One-pass counts behind the CURVAS, QUBIQ and sample-agreement metrics: fixed-size histograms of per-voxel
codes, accumulated chunk by chunk, from which the metrics of :mod:`trustseg.metrics.curvas` and
:mod:`trustseg.metrics.multirater` follow exactly (integer counts; float64 sums of float32 values, equal up to
the summation order).

Per voxel, for organ c (every foreground class), the code is

* ``v_c = Σ_r 1[y^(r) = c] ∈ {0..R}`` (the vote count: consensus foreground ⟺ v_c = R, consensus background
  ⟺ v_c = 0, dissensus otherwise; the QUBIQ soft label is ``ȳ_c = v_c / R``),
* ``π_c = 1[argmax_k p_k = c]`` (the predicted organ, first maximum on ties),
* ``β_c = #{t ∈ thresholds : p_c > t}`` (decided exactly as in float64: ``clamp(⌈T p_c⌉ − 1, 0, T − 1)`` for
  float32 ``p_c`` and the grid ``t = i / T``, else comparisons with the thresholds rounded down to the dtype),
* the field-of-view bit, and for the challenge-mode Dice the row ``(d, h)`` of a ``(D, H, W)`` volume;

``torch.bincount`` of the combined codes gives :attr:`CaseCounts.organ`, :attr:`CaseCounts.qubiq` and the
per-row counts, a weighted ``bincount`` with weights ``p_c`` the sums behind the consensus confidence and the
predicted volume (:func:`case_counts` has a coded path, all rater labels in one code, and a per-organ path).
The per-rater top-label ECE reads, per confidence slot ``s = ⌊50 c⌋`` (``c = max_k p_k``, exact in float64 for
float32 c; slot 50 holds c = 1), the count of voxels whose top label each rater agrees with and Σ c.

Samples vs raters: the Gram matrix of the ``M + R`` foreground masks (samples ``argmax_k > 0``, raters
``y > 0``), ``G_ij = |m_i ∩ m_j|`` (float32 products of one chunk, exact below 2²⁴ voxels, summed in float64),
holds every pairwise intersection and size GED and the Hungarian IoU need (:func:`sample_gram`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from torch import Tensor

from trustseg.core.errors import DataError
from trustseg.metrics.voxel_stats import CHUNK, float32_floor, single_threaded, spans

#: The QUBIQ thresholds 0.1, 0.2, …, 0.9.
QUBIQ_THRESHOLDS = tuple(k / 10 for k in range(1, 10))
#: Largest histogram (bins) of the coded path: K^R rater-label tuples × K top labels × confidence slots × 2.
MAX_CODED_BINS = 1 << 18
#: Largest per-chunk histogram of the counts by row (the chunk shrinks to fit).
_MAX_ROW_BINS = 1 << 19


@dataclass
class CaseCounts:
    """The histograms of one case (module docstring). O = K − 1 organs, R raters, T thresholds, S = bins + 1.

    Attributes:
        num_raters: R.
        thresholds: The QUBIQ thresholds.
        organ: ``(O, 2, R + 1, 2)`` int64 voxel counts by (outside the field of view, v_c, π_c).
        qubiq: ``(O, R + 1, T + 1)`` int64 voxel counts by (v_c, β_c), every voxel.
        prob_sum: ``(O, 2, R + 1)`` float64 Σ p_c by (outside, v_c).
        rater_volume: ``(O, R)`` int64 voxels of organ c per rater (every voxel).
        rows: ``(O, D, H, R + 1, 2)`` int64 counts by row (d, h) of a ``(D, H, W)`` volume, v_c, π_c (``None``
            unless asked for).
        agree: ``(R, S)`` int64 voxels inside whose top label rater r agrees with, by confidence slot.
        slot_count: ``(S,)`` int64 voxels inside by confidence slot.
        slot_conf: ``(S,)`` float64 Σ top-label confidence inside by slot.
    """

    num_raters: int
    thresholds: tuple[float, ...]
    organ: Tensor
    qubiq: Tensor
    prob_sum: Tensor
    rater_volume: Tensor
    rows: Tensor | None
    agree: Tensor
    slot_count: Tensor
    slot_conf: Tensor


def _check_chunk(y: Tensor, p: Tensor, k: int, start: int, sum_tol: float) -> None:
    """Labels in ``[0, K)``, probabilities ≥ 0 summing to 1 (to ``sum_tol``), as the calibration metrics check."""
    lo, hi = torch.aminmax(y)
    if int(lo) < 0 or int(hi) >= k:
        raise DataError(f"labels must be class indices in [0, {k}), found values in [{int(lo)}, {int(hi)}]")
    total = p[0].clone()
    for i in range(1, k):
        total += p[i]
    dev = float(total.sub_(1).abs_().amax()) if total.numel() else 0.0
    if not dev <= sum_tol:  # NaN fails too
        i = int((~(total.abs() <= sum_tol)).nonzero()[0, 0])
        raise DataError(
            f"probabilities are NaN or do not sum to 1 over the classes (flat voxel {start + i}; tolerance "
            f"{sum_tol:g}); pass probabilities (softmax), not logits, or normalise them"
        )
    if total.numel() and float(p.amin()) < 0:
        raise DataError("probabilities contain negative values")


def _top(p: Tensor) -> tuple[Tensor, Tensor]:
    """Top-label confidence ``max_k p_k`` and prediction ``argmax_k p_k`` (first maximum) of a ``(K, n)`` chunk,
    elementwise (a strided reduction over the short class axis is several times slower)."""
    conf, hard = p[0].clone(), torch.zeros(p.shape[1], dtype=torch.long)
    for i in range(1, p.shape[0]):
        hard.masked_fill_(p[i] > conf, i)
        torch.maximum(conf, p[i], out=conf)
    return conf, hard


def _above(x: Tensor, bounds: Tensor) -> Tensor:
    """``#{i : x > bounds_i}`` (uint8, at most 255 bounds), by comparisons (``torch.bucketize`` is slower for a
    few bounds)."""
    out = torch.zeros(x.shape, dtype=torch.uint8)
    for t in bounds.tolist():
        out += x > t
    return out


def _grid(t: Sequence[float]) -> int | None:
    """``T`` when the thresholds are the grid ``1/T, 2/T, …, (T − 1)/T`` (as float64 values), else ``None``."""
    n = len(t) + 1
    return n if n > 1 and all(float(v) == i / n for i, v in enumerate(t, start=1)) else None


def _beta(pc: Tensor, pcd: Tensor, bounds: Tensor, grid: int | None) -> Tensor:
    """``β = #{i : p_c > t_i}`` of a chunk, int64. For float32 ``p`` and the grid ``t_i = i / T`` this is
    ``clamp(⌈T p⌉ − 1, 0, T − 1)`` from the float64 copy ``pcd`` (``T p`` is exact in float64, and no float32
    lies between i / T and its float64 rounding, so ``p > float64(i / T) ⟺ T p > i``); else comparisons."""
    if grid is not None and pc.dtype == torch.float32 and grid < 1 << 20:
        return (pcd * grid).ceil_().sub_(1).clamp_(0, grid - 1).long()
    return _above(pc, bounds)


def _bounds(t: Sequence[float], dtype: torch.dtype) -> Tensor:
    """Thresholds as values of ``dtype`` with ``x > bound ⟺ x > t`` for every x of that dtype."""
    t64 = torch.tensor(list(t), dtype=torch.float64)
    if dtype == torch.float64:
        return t64
    return torch.from_numpy(float32_floor(t64.numpy())).to(dtype)


def case_counts(
    probs: Tensor,
    labels: Tensor,
    *,
    valid: Tensor | None = None,
    rows: bool = False,
    bins: int = 50,
    thresholds: Sequence[float] = QUBIQ_THRESHOLDS,
    chunk: int = CHUNK,
    sum_tol: float = 1e-4,
    coded: bool | None = None,
    workers: int | None = None,
) -> CaseCounts:
    """The histograms of :class:`CaseCounts` in one pass over the voxels.

    Two ways to the same counts: the *coded* path packs each voxel's rater labels into one code
    ``u = Σ_r y^(r) K^r`` and counts ``(outside, u, argmax, slot)`` in one ``bincount`` (plus one per organ for
    ``(u, β_c)`` and Σ p_c), from which every per-organ and per-rater count follows by tables over the K^R
    codes; the *per-organ* path (many classes or raters) counts ``(v_c, π_c)`` organ by organ.

    Args:
        probs: ``(K, *sp)`` probabilities (float32 or float64), background at index 0.
        labels: ``(R, *sp)`` integer rater maps in ``[0, K)``.
        valid: ``(*sp)`` bool field of view or ``None`` (every voxel inside).
        rows: Also count by row of a ``(D, H, W)`` volume (the challenge-mode Dice); needs 3 spatial dims.
        bins: Confidence slots ``⌊bins · c⌋`` (slot ``bins``: c ≥ 1).
        thresholds: The QUBIQ thresholds.
        chunk: Voxels per pass (rounded down to whole rows; temporaries are a few chunk-sized arrays).
        sum_tol: Tolerance of the check Σ_k p_k = 1.
        coded: Force the coded (``True``) or per-organ (``False``) path; ``None``: coded when its histogram
            has at most :data:`MAX_CODED_BINS` bins.
        workers: Threads, each taking every W-th chunk into its own histograms, summed at the end (default
            ``torch.get_num_threads()``); torch runs single-threaded meanwhile (:func:`single_threaded`).

    Returns:
        The filled :class:`CaseCounts`.

    Raises:
        DataError: shapes that differ, labels outside ``[0, K)``, probabilities that are negative or do not
            sum to 1, ``rows`` without 3 spatial dimensions.
    """
    probs, labels = torch.as_tensor(probs), torch.as_tensor(labels)
    k, r = probs.shape[0], labels.shape[0]
    sp = tuple(labels.shape[1:])
    if tuple(probs.shape[1:]) != sp:
        raise DataError(f"probs {tuple(probs.shape)} and labels {tuple(labels.shape)} differ in spatial shape")
    if rows and len(sp) != 3:
        raise DataError(f"row counts read (D, H, W) volumes; got {len(sp)} spatial dimensions")
    if k < 2:
        raise DataError(f"probs need a background and at least one organ, got {k} class")
    if not probs.is_floating_point():
        probs = probs.float()
    vf = None if valid is None else torch.as_tensor(valid).bool().reshape(-1)
    if vf is not None and vf.numel() != math.prod(sp):
        raise DataError(f"field-of-view mask of {vf.numel()} voxels is not the labels' {sp}")
    n_codes = k**r
    if coded is None:
        coded = 2 * n_codes * k * (bins + 1) <= MAX_CODED_BINS
    width = sp[-1] if rows else 1
    per_row = n_codes * k if coded else 2 * (r + 1)
    chunk = max(1, min(chunk, _MAX_ROW_BINS // per_row * width if rows else chunk) // width) * width
    kind = _Coded if coded else _PerOrgan
    n_rows = sp[0] * sp[1] if rows else 0
    row_hist = torch.zeros(k - 1, n_rows, r + 1, 2, dtype=torch.int64) if rows else None
    pf, yf = probs.reshape(k, -1), labels.reshape(r, -1)
    pieces = spans(yf.shape[1], chunk)
    n_workers = max(1, min(torch.get_num_threads() if workers is None else workers, len(pieces)))

    def work(i: int) -> _Coded | _PerOrgan:  # chunks i, i + W, ... into the worker's own accumulator
        acc = kind(k, r, bins, thresholds, probs.dtype)
        row_base: Tensor | None = None
        for a, b in pieces[i::n_workers]:
            y, p = yf[:, a:b], pf[:, a:b]
            _check_chunk(y, p, k, a, sum_tol)
            conf, hard = _top(p)
            outside = None if vf is None else ~vf[a:b]
            local = acc.add(y, p, conf, hard, outside)
            if row_hist is not None:  # rows of different chunks are disjoint: no race
                n_local = (b - a) // width
                if row_base is None or row_base.numel() != b - a:
                    row_base = torch.arange(n_local, dtype=torch.long).repeat_interleave(width) * per_row
                first = a // width
                row_hist[:, first : first + n_local] = acc.rows(local, row_base, n_local)
        return acc

    with single_threaded(), ThreadPoolExecutor(n_workers) as pool:
        accs = list(pool.map(work, range(n_workers)))
    for other in accs[1:]:
        accs[0].merge(other)
    return accs[0].result(row_hist, sp)


def _merge(a: object, b: object, names: Sequence[str]) -> None:
    for name in names:
        getattr(a, name).add_(getattr(b, name))


class _Coded:
    """The coded path of :func:`case_counts` (its docstring)."""

    def __init__(self, k: int, r: int, bins: int, thresholds: Sequence[float], dtype: torch.dtype):
        self.k, self.r, self.s, self.t1 = k, r, bins + 1, len(thresholds) + 1
        self.bins, self.thresholds, self.bounds = bins, thresholds, _bounds(thresholds, dtype)
        self.grid = _grid(thresholds)
        self.n = k**r
        u = torch.arange(self.n)
        self.rater_label = torch.stack([(u // k**i) % k for i in range(r)])  # (R, K^R): y^(r) of code u
        self.votes = torch.stack([(self.rater_label == c).sum(0) for c in range(1, k)])  # (O, K^R)
        self.main = torch.zeros(2 * self.n * k * self.s, dtype=torch.int64)
        self.qubiq = torch.zeros(k - 1, self.n * self.t1, dtype=torch.int64)
        self.prob_sum = torch.zeros(k - 1, 2 * self.n, dtype=torch.float64)
        self.slot_conf = torch.zeros(2 * self.s, dtype=torch.float64)

    def add(self, y: Tensor, p: Tensor, conf: Tensor, hard: Tensor, outside: Tensor | None) -> Tensor:
        """Fold one chunk in; returns the per-voxel code ``u · K + argmax`` (what the counts by row read)."""
        k, s = self.k, self.s
        u = y[-1].clone() if y.dtype == torch.long else y[-1].long()
        for i in range(self.r - 2, -1, -1):
            u.mul_(k).add_(y[i])  # Horner: u = Σ_r y^(r) K^r
        cd = conf.double()
        slot = (cd * self.bins).long().clamp_(0, self.bins)
        uo = u if outside is None else u + self.n * outside
        self.slot_conf += torch.bincount(slot if outside is None else slot + s * outside, cd, minlength=2 * s)
        uh = u * k + hard
        key = (uh if outside is None else uh + self.n * k * outside) * s + slot
        ut = u * self.t1
        self.main += torch.bincount(key, minlength=self.main.numel())
        for c in range(1, k):
            pc = p[c]
            pcd = pc.double()
            beta = _beta(pc, pcd, self.bounds, self.grid).add_(ut)
            self.qubiq[c - 1] += torch.bincount(beta, minlength=self.n * self.t1)
            self.prob_sum[c - 1] += torch.bincount(uo, pcd, minlength=2 * self.n)
        return uh

    def merge(self, other: _Coded | _PerOrgan) -> None:
        _merge(self, other, ("main", "qubiq", "prob_sum", "slot_conf"))

    def rows(self, uh: Tensor, row_base: Tensor, n_local: int) -> Tensor:
        """``(O, n_local, R + 1, 2)`` counts by row of one chunk from its codes ``u · K + argmax``."""
        per_row = self.n * self.k
        h = torch.bincount(row_base + uh, minlength=n_local * per_row).view(n_local, per_row).double()
        out = (h @ self._row_map()).round_().long()  # float64 products of counts < 2^53: exact
        return out.view(n_local, self.k - 1, self.r + 1, 2).transpose(0, 1)

    def _row_map(self) -> Tensor:
        """``(K^R · K, O · 2(R + 1))`` float64 one-hot map of the code ``u · K + argmax`` to ``(c, v_c, π_c)``."""
        if not hasattr(self, "_map"):
            v = self.votes.repeat_interleave(self.k, 1)  # (O, K^R·K)
            pi = (torch.arange(self.n * self.k) % self.k)[None] == torch.arange(1, self.k)[:, None]
            one_hot = torch.nn.functional.one_hot(v * 2 + pi, 2 * (self.r + 1))  # (O, K^R·K, 2(R + 1))
            self._map = one_hot.transpose(0, 1).reshape(self.n * self.k, -1).double()
        return self._map

    def result(self, row_hist: Tensor | None, sp: tuple[int, ...]) -> CaseCounts:
        k, r, n, s = self.k, self.r, self.n, self.s
        main = self.main.view(2, n, k, s)
        by_code = main.sum(3)  # (2, K^R, K)
        hard_is = torch.arange(k)[None, None, :] == torch.arange(1, k)[:, None, None]  # (O, 1, K)
        organ = torch.zeros(k - 1, 2, r + 1, 2, dtype=torch.int64)
        prob_sum = torch.zeros(k - 1, 2, r + 1, dtype=torch.float64)
        qubiq = torch.zeros(k - 1, r + 1, self.t1, dtype=torch.int64)
        ps = self.prob_sum.view(k - 1, 2, n)
        qb = self.qubiq.view(k - 1, n, self.t1)
        for o in range(k - 1):
            v = self.votes[o]  # (K^R,)
            for pi in (0, 1):
                sel = by_code[:, :, hard_is[o, 0] == bool(pi)].sum(-1)  # (2, K^R)
                organ[o, :, :, pi] = torch.zeros(2, r + 1, dtype=torch.int64).index_add_(1, v, sel)
            prob_sum[o] = torch.zeros(2, r + 1, dtype=torch.float64).index_add_(1, v, ps[o])
            qubiq[o] = torch.zeros(r + 1, self.t1, dtype=torch.int64).index_add_(0, v, qb[o])
        per_code = by_code.sum((0, 2))  # (K^R,) every voxel
        rater_volume = torch.stack(
            [torch.stack([per_code[self.rater_label[i] == c].sum() for i in range(r)]) for c in range(1, k)]
        )
        inside = main[0]  # (K^R, K, S)
        agree = torch.stack([inside[self.rater_label[i][:, None] == torch.arange(k)[None, :]].sum(0) for i in range(r)])
        return CaseCounts(
            num_raters=r,
            thresholds=tuple(float(t) for t in self.thresholds),
            organ=organ,
            qubiq=qubiq,
            prob_sum=prob_sum,
            rater_volume=rater_volume,
            rows=None if row_hist is None else row_hist.view(k - 1, sp[0], sp[1], r + 1, 2),
            agree=agree,
            slot_count=inside.sum((0, 1)),
            slot_conf=self.slot_conf[:s],
        )


class _PerOrgan:
    """The per-organ path of :func:`case_counts`: ``(v_c, π_c)`` counted organ by organ."""

    def __init__(self, k: int, r: int, bins: int, thresholds: Sequence[float], dtype: torch.dtype):
        self.k, self.r, self.s, self.t1 = k, r, bins + 1, len(thresholds) + 1
        self.bins, self.thresholds, self.bounds = bins, thresholds, _bounds(thresholds, dtype)
        self.grid = _grid(thresholds)
        self.organ = torch.zeros(k - 1, 2 * (r + 1) * 2, dtype=torch.int64)
        self.qubiq = torch.zeros(k - 1, (r + 1) * self.t1, dtype=torch.int64)
        self.prob_sum = torch.zeros(k - 1, 2 * (r + 1), dtype=torch.float64)
        self.rater_volume = torch.zeros(k - 1, r, dtype=torch.int64)
        self.agree = torch.zeros(r, self.s, dtype=torch.int64)
        self.slot_count = torch.zeros(self.s, dtype=torch.int64)
        self.slot_conf = torch.zeros(2 * self.s, dtype=torch.float64)

    def add(self, y: Tensor, p: Tensor, conf: Tensor, hard: Tensor, outside: Tensor | None) -> Tensor:
        """Fold one chunk in; returns the ``(O, n)`` per-voxel codes ``2 v_c + π_c`` (what the rows read)."""
        r, s = self.r, self.s
        cd = conf.double()
        slot = (cd * self.bins).long().clamp_(0, self.bins)
        self.slot_conf += torch.bincount(slot if outside is None else slot + s * outside, cd, minlength=2 * s)
        inside = slot if outside is None else slot.masked_fill(outside, s)
        self.slot_count += torch.bincount(inside, minlength=s + 1)[:s]
        for i in range(r):
            self.agree[i] += torch.bincount(inside[y[i] == hard], minlength=s + 1)[:s]
        codes = []
        for c in range(1, self.k):
            eq = y == c
            self.rater_volume[c - 1] += eq.sum(1)
            v = eq.sum(0)
            vp = v * 2 + (hard == c)
            codes.append(vp)
            pc = p[c]
            pcd = pc.double()
            vo = v if outside is None else v + (r + 1) * outside
            self.prob_sum[c - 1] += torch.bincount(vo, pcd, minlength=2 * (r + 1))
            vpo = vp if outside is None else vp + 2 * (r + 1) * outside
            self.organ[c - 1] += torch.bincount(vpo, minlength=self.organ.shape[1])
            beta = _beta(pc, pcd, self.bounds, self.grid).add_(v * self.t1)
            self.qubiq[c - 1] += torch.bincount(beta, minlength=self.qubiq.shape[1])
        return torch.stack(codes)

    def merge(self, other: _Coded | _PerOrgan) -> None:
        names = ("organ", "qubiq", "prob_sum", "rater_volume", "agree", "slot_count", "slot_conf")
        _merge(self, other, names)

    def rows(self, vp: Tensor, row_base: Tensor, n_local: int) -> Tensor:
        per_row = 2 * (self.r + 1)
        h = [torch.bincount(row_base + vp[o], minlength=n_local * per_row) for o in range(self.k - 1)]
        return torch.stack(h).view(self.k - 1, n_local, self.r + 1, 2)

    def result(self, row_hist: Tensor | None, sp: tuple[int, ...]) -> CaseCounts:
        k, r = self.k, self.r
        return CaseCounts(
            num_raters=r,
            thresholds=tuple(float(t) for t in self.thresholds),
            organ=self.organ.view(k - 1, 2, r + 1, 2),
            qubiq=self.qubiq.view(k - 1, r + 1, self.t1),
            prob_sum=self.prob_sum.view(k - 1, 2, r + 1),
            rater_volume=self.rater_volume,
            rows=None if row_hist is None else row_hist.view(k - 1, sp[0], sp[1], r + 1, 2),
            agree=self.agree,
            slot_count=self.slot_count,
            slot_conf=self.slot_conf[: self.s],
        )


def qubiq_from_counts(counts: CaseCounts) -> Tensor:
    """``(O,)`` float64 QUBIQ soft Dice ``mean_t Dice(p_c > t, ȳ_c > t)`` per organ (both empty: 1), as
    :func:`trustseg.metrics.multirater.qubiq_soft_dice` of ``p_c`` and the float32 soft label ``v_c / R``."""
    r, t = counts.num_raters, torch.tensor(counts.thresholds, dtype=torch.float64)
    soft = (torch.arange(r + 1, dtype=torch.float32) / r).double()  # the soft label's float32 values
    soft_above = (soft[:, None] > t[None, :]).to(torch.int64)  # (R + 1, T)
    beta = torch.arange(len(t) + 1)
    pred_above = (beta[:, None] > torch.arange(len(t))[None, :]).to(torch.int64)  # (T + 1, T): β > i ⟺ p > t_i
    h = counts.qubiq  # (O, R + 1, T + 1)
    inter = torch.einsum("ovb,vt,bt->ot", h, soft_above, pred_above)
    n_soft = torch.einsum("ovb,vt->ot", h, soft_above)
    n_pred = torch.einsum("ovb,bt->ot", h, pred_above)
    total = (n_soft + n_pred).double()
    dice = torch.where(total == 0, torch.ones_like(total), 2 * inter.double() / total.clamp_min(1))
    return dice.mean(-1)


def sample_gram(samples: Tensor, labels: Tensor, *, chunk: int = CHUNK, workers: int | None = None) -> Tensor:
    """``(M + R, M + R)`` float64 Gram matrix ``G_ij = |m_i ∩ m_j|`` of the foreground masks of the samples
    (``argmax_k s_k > 0``, i.e. ``max_{k ≥ 1} s_k > s_0``) followed by those of the raters (``y > 0``).

    Args:
        samples: ``(M, K, *sp)`` sample probabilities.
        labels: ``(R, *sp)`` rater maps.
        chunk: Voxels per matrix product (float32, exact for chunks below 2²⁴ voxels).
        workers: Threads (every W-th chunk each), as in :func:`case_counts`.

    Example:
        >>> s = torch.tensor([[[0.9, 0.2, 0.4]], [[0.1, 0.8, 0.6]]]).view(1, 2, 3)  # sample fg {1, 2}
        >>> sample_gram(s, torch.tensor([[0, 1, 0]])).tolist()  # rater fg {1}
        [[2.0, 1.0], [1.0, 1.0]]
    """
    samples, labels = torch.as_tensor(samples), torch.as_tensor(labels)
    if tuple(samples.shape[2:]) != tuple(labels.shape[1:]):
        raise DataError(f"samples {tuple(samples.shape)} and labels {tuple(labels.shape)} differ in spatial shape")
    m, k, r = samples.shape[0], samples.shape[1], labels.shape[0]
    sf, yf = samples.reshape(m, k, -1), labels.reshape(r, -1)
    pieces = spans(yf.shape[1], chunk)
    n_workers = max(1, min(torch.get_num_threads() if workers is None else workers, len(pieces)))

    def work(w: int) -> Tensor:
        gram = torch.zeros(m + r, m + r, dtype=torch.float64)
        masks = torch.empty(m + r, min(chunk, yf.shape[1]), dtype=torch.float32)
        for a, b in pieces[w::n_workers]:
            f = masks[:, : b - a]
            for i in range(m):
                fg = sf[i, 1, a:b].clone()
                for j in range(2, k):
                    torch.maximum(fg, sf[i, j, a:b], out=fg)
                torch.gt(fg, sf[i, 0, a:b], out=f[i])
            torch.gt(yf[:, a:b], 0, out=f[m:])
            gram += (f @ f.T).double()
        return gram

    with single_threaded(), ThreadPoolExecutor(n_workers) as pool:
        return torch.stack(list(pool.map(work, range(n_workers)))).sum(0)
