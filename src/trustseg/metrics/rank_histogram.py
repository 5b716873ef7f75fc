"""One-pass rank statistics of a float map against a discrete target, from a fine joint histogram.

The exact functions of :mod:`trustseg.metrics.voxel_stats` sort the map (8–12 bytes per voxel, ``O(n log n)``).
Here a map ``u`` (float32) is read once, chunk by chunk, into a fixed-size, sum-mergeable state
(:class:`RankHistogram`):

* **bins**: each value's order-preserving integer key (:func:`monotone_key`, the float32 bit pattern, so equal
  values share a key and ``u < v ⟺ key(u) < key(v)``) shifted right by ``shift`` bits, offset by the case's
  smallest key: a relative bin width of ``2^(shift − 23)`` (≤ 2^16 bins, so ``2^−11`` over 24 binades).
  For a map ``≥ 0`` that holds zeros, 0 has a bin of its own (bin 0) and the bins start at the smallest positive
  value, so a background of zeros is an exact atom and the empty range of tiny values costs no bins;
* **counts** ``(bins, L, 2)``: per bin, per target level ``l`` and per error flag; the target levels are exact
  (the rater disagreement ``1 − Σ_k c_k²/R²`` has the integer level ``Σ_k c_k²``, :func:`disagreement_levels`);
* **key range** per bin (smallest and largest key): a bin whose values are all equal is *exact* (a tie), the
  others hold several values whose order is unknown, which the error bounds account for;
* **sums** (float64, centred at a per-case constant): Pearson correlation exactly (no sort needed).

Statistics (each returned with a bound ``|streaming − exact| ≤ bound`` computed from the state; the bound is 0,
and the value equals the exact one up to float64 round-off, when every bin holding both classes / several
levels is a tie; ``N`` voxels, ``P`` error and ``Q`` correct voxels, per bin ``n_b = p_b + q_b``; "multi" =
bins holding more than one distinct value):

* Spearman: bins get their exact average rank ``r_b`` (the mid-rank of their rank span: the mean of the exact
  ranks of their voxels whatever their order), levels their exact average rank ``ρ_l``. Writing an exact rank as
  ``r_b + δ_i`` (``Σ_{i∈b} δ_i = 0``, ``Σ δ_i² ≤ V_b = n_b(n_b² − 1)/12``, 0 for a tie), the exact covariance is
  the binned one plus ``Σ_b Σ_{i∈b} δ_i (ρ_i − ρ̄_b)``, at most ``E = Σ_multi √V_b · √W_b`` in size
  (Cauchy–Schwarz; ``W_b`` the within-bin sum of squares of the level ranks), and the exact variance of the map
  ranks lies in ``[D_lo, D_lo + Σ_multi V_b]``. The streaming value takes the upper end (distinct values inside a
  bin, the continuous case); the bound is the largest change over the corners ``(±E, D_lo or D_hi)``.
* AUROC (Mann–Whitney, ties ½): a bin's pairs count ½; bound ``Σ_multi p_b q_b / (2 P Q)``.
* AUPRC (scikit-learn's average precision, one threshold per bin): a multi bin's term
  ``(p_b/P) · (P_a + p_b)/(A_a + n_b)`` (``P_a``, ``A_a``: error and all voxels above the bin) against the exact
  per-positive precision, which lies in ``[(P_a + 1)/(A_a + 1 + q_b), (P_a + p_b)/(A_a + p_b)]``; bound the sum
  of ``(p_b/P) · max(hi − s, s − lo)``.
* UEO ``max_t Dice(error, u > t)``, 100 thresholds over ``[min u, max u]``: exact counts at a threshold unless it
  falls strictly inside a multi bin's key range; there the bin's above-part is taken as half and the Dice range
  over all splits bounds the change (``|max_t a_t − max_t b_t| ≤ max_t |a_t − b_t|``).

Example:
    >>> u = torch.tensor([0.0, 0.0, 0.2, 0.5, 0.9, 0.9])
    >>> error = torch.tensor([False, False, False, True, True, True])
    >>> h = RankHistogram.for_map(u, levels=1)
    >>> h.update(u, error.long())
    >>> h.auroc()
    (1.0, 0.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from trustseg.metrics.voxel_stats import float32_floor

#: At most ``2^BIN_BITS + 2`` value bins per map (the shift grows with the key range of the case).
BIN_BITS = 16
#: The finest shift: a relative bin width of ``2^(MIN_SHIFT − 23)``.
MIN_SHIFT = 0
_EMPTY_MIN, _EMPTY_MAX = 2**62, -(2**62)


def monotone_key(x: Tensor) -> Tensor:
    """Order-preserving int64 keys of float32 values: ``x < y ⟺ key(x) < key(y)``, equal values (``−0 = +0``)
    equal keys. For ``x ≥ 0`` the key is the float32 bit pattern read as an integer.

    Example:
        >>> monotone_key(torch.tensor([-1.0, -0.0, 0.0, 1e-30, 1.0])).tolist()
        [-1065353217, 0, 0, 228737632, 1065353216]
    """
    raw = (x.float() + 0.0).view(torch.int32).long()  # + 0.0 turns −0 into +0
    return raw ^ ((raw >> 31) & 0x7FFFFFFF)


def disagreement_levels(raters: int, classes: int) -> np.ndarray:
    """The sorted reachable values of ``S = Σ_k c_k²`` over vote counts ``c`` of ``raters`` into ``classes``
    (the rater disagreement is ``1 − S/R²``: its distinct values, in decreasing order of ``S``).

    Example:
        >>> disagreement_levels(3, 3).tolist()
        [3, 5, 9]
    """
    r = raters
    reach = np.zeros((r + 1, r * r + 1), bool)  # reach[used, S]
    reach[0, 0] = True
    for _ in range(classes):
        new = np.zeros_like(reach)
        for c in range(r + 1):
            new[c:, c * c :] |= reach[: r + 1 - c, : r * r + 1 - c * c]
        reach = new
    return np.flatnonzero(reach[r])


class DisagreementCodes:
    """Maps the float32 rater disagreement ``d = 1 − S/R²`` and the error flag to the target code
    ``2 · level + error``, levels ordered by increasing ``d`` (exact: ``S = round((1 − d) R²)``).

    Example:
        >>> codes = DisagreementCodes(3, 2)
        >>> codes.levels, codes(torch.tensor([0.0, 4 / 9]), torch.tensor([True, False])).tolist()
        (2, [1, 2])
    """

    def __init__(self, raters: int, classes: int):
        self.r2 = raters * raters
        s = disagreement_levels(raters, classes)
        lut = np.zeros(self.r2 + 1, np.int64)
        lut[s] = 2 * (len(s) - 1 - np.arange(len(s)))  # largest S = smallest d = level 0
        self.lut, self.levels = torch.from_numpy(lut), len(s)

    def __call__(self, d: Tensor, error: Tensor) -> Tensor:
        s = torch.round((1.0 - d.double()) * self.r2).long().clamp_(0, self.r2)
        return self.lut[s].add_(error.long())


@dataclass
class RankHistogram:
    """The sum-mergeable joint state of one map (module docstring): value bins × target levels × error flag.

    Build it with :meth:`for_map` (the binning from the map's range), feed chunks with :meth:`update`, combine
    two states of the same binning with :meth:`merge`.

    Attributes:
        base: Key of the lower edge of bin 1 (bin 0 holds the keys below: the zeros of a map ``≥ 0``).
        shift: Bits dropped from ``key − base``.
        nbins: Value bins.
        levels: Target levels ``L``.
        centre: ``(c_u, c_d)``, subtracted before the Pearson sums.
        counts: ``(nbins, L, 2)`` int64.
        kmin, kmax: ``(nbins,)`` int64 smallest / largest key per bin.
        sums: float64 ``(Σu', Σu'², Σu'd', Σd', Σd'², n)`` with ``u' = u − c_u``, ``d' = d − c_d``.
        umin, umax: The map's range (float).
    """

    base: int
    shift: int
    nbins: int
    levels: int
    umin: float
    umax: float
    centre: tuple[float, float] = (0.0, 0.0)
    counts: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    kmin: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    kmax: Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    sums: Tensor = field(default_factory=lambda: torch.zeros(6, dtype=torch.float64))

    def __post_init__(self) -> None:
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        if self.counts.numel() == 0:
            self.counts = torch.zeros(self.nbins * self.levels * 2, dtype=torch.long)
            self.kmin = torch.full((self.nbins,), _EMPTY_MIN, dtype=torch.long)
            self.kmax = torch.full((self.nbins,), _EMPTY_MAX, dtype=torch.long)

    @classmethod
    def for_map(
        cls,
        u: Tensor | None = None,
        levels: int = 1,
        *,
        umin: float | None = None,
        umax: float | None = None,
        umin_positive: float | None = None,
        centre: tuple[float, float] | None = None,
    ) -> RankHistogram:
        """The empty state for a map with values in ``[umin, umax]`` (from ``u`` when given); for a map ``≥ 0``
        with zeros, ``umin_positive`` (its smallest positive value) starts the bins above the zero bin. ``centre``
        ``(c_u, c_d)``: subtracted before the Pearson sums (the means are best; default the mid-range and 0)."""
        if u is not None:
            lo_t, hi_t = torch.aminmax(u.float())
            umin, umax = float(lo_t), float(hi_t)
            pos = u[u > 0]
            umin_positive = float(pos.min()) if pos.numel() else None
        assert umin is not None and umax is not None
        start = umin_positive if umin == 0 and umin_positive is not None else umin
        keys = monotone_key(torch.tensor([start, umax], dtype=torch.float32)).tolist()
        base, span = keys[0], max(0, keys[1] - keys[0])
        shift = max(MIN_SHIFT, (span >> BIN_BITS).bit_length())
        centre = ((umin + umax) / 2, 0.0) if centre is None else centre
        return cls(base, shift, (span >> shift) + 2, levels, umin, umax, centre)

    def bins_of(self, keys: Tensor) -> Tensor:
        """Bin index of each key (keys below ``base`` go to bin 0, keys above the range to the last bin)."""
        return ((keys - self.base) >> self.shift).clamp_(-1, self.nbins - 2).add_(1)

    def update(self, u: Tensor, codes: Tensor, d: Tensor | None = None) -> None:
        """Add a chunk: values ``u`` (float32, flat), target codes ``2 · level + error`` (int64, same length) and
        the target values ``d`` for the Pearson sums (optional)."""
        self._cache = None
        keys = monotone_key(u)
        b = self.bins_of(keys)
        self.kmin.scatter_reduce_(0, b, keys, "amin")
        self.kmax.scatter_reduce_(0, b, keys, "amax")
        idx = b.mul_(2 * self.levels).add_(codes)
        self.counts += torch.bincount(idx, minlength=self.counts.numel())
        x = u.double().sub_(self.centre[0])
        if d is None:
            self.sums += torch.stack([x.sum(), x.dot(x), x.new_zeros(()), *x.new_zeros(2), x.new_tensor(x.numel())])
        else:
            y = d.double().sub_(self.centre[1])
            self.sums += torch.stack([x.sum(), x.dot(x), x.dot(y), y.sum(), y.dot(y), x.new_tensor(x.numel())])

    def merge(self, other: RankHistogram) -> RankHistogram:
        """The state of both chunk sets (same binning: sums and min/max)."""
        same = (self.base, self.shift, self.nbins, self.levels, self.centre)
        if same != (other.base, other.shift, other.nbins, other.levels, other.centre):
            raise ValueError("RankHistogram.merge needs two states of the same binning")
        return RankHistogram(
            *same[:4],
            min(self.umin, other.umin),
            max(self.umax, other.umax),
            self.centre,
            self.counts + other.counts,
            torch.minimum(self.kmin, other.kmin),
            torch.maximum(self.kmax, other.kmax),
            self.sums + other.sums,
        )

    # -- the statistics -------------------------------------------------------------------------------------
    def _compact(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(indices of the non-empty bins, their counts (bins', L, 2) float64, multi-valued flags)``: every
        statistic reads only the non-empty bins, in order (cached until the next :meth:`update`)."""
        if self._cache is not None:
            return self._cache
        n_b = self.counts.view(self.nbins, -1).sum(1)
        nz = torch.nonzero(n_b).flatten()
        t = self.counts.view(self.nbins, self.levels, 2)[nz].numpy().astype(np.float64)
        self._cache = (nz.numpy(), t, (self.kmax[nz] > self.kmin[nz]).numpy())
        return self._cache

    def _table(self) -> np.ndarray:
        return self._compact()[1]

    def raw_sums(self) -> Tensor:
        """``(Σu, Σd, Σu², Σd², Σud, n)`` float64 (the pooled Pearson sums of the suite)."""
        sx, sxx, sxy, sy, syy, n = self.sums.tolist()
        cx, cy = self.centre
        return torch.tensor(
            [
                sx + n * cx,
                sy + n * cy,
                sxx + 2 * cx * sx + n * cx * cx,
                syy + 2 * cy * sy + n * cy * cy,
                sxy + cy * sx + cx * sy + n * cx * cy,
                n,
            ],
            dtype=torch.float64,
        )

    def pearson(self) -> float:
        """Pearson correlation of ``u`` and ``d`` from the centred float64 sums (exact up to round-off), clamped
        to [−1, 1]; NaN for ``n < 2`` or a constant input."""
        sx, sxx, sxy, sy, syy, n = self.sums.tolist()
        levels_present = int((self._table().sum((0, 2)) > 0).sum())
        if n < 2 or self.umin == self.umax or levels_present < 2:
            return math.nan
        vx, vy = sxx - sx * sx / n, syy - sy * sy / n
        if vx <= 0 or vy <= 0:
            return math.nan
        return min(1.0, max(-1.0, (sxy - sx * sy / n) / math.sqrt(vx * vy)))

    def spearman(self) -> tuple[float, float]:
        """``(Spearman correlation of u and the target level, bound)`` (module docstring); NaN for fewer than
        two voxels, a constant map or a single level."""
        t = self._table().sum(2)  # (bins, L)
        n_b, n_l = t.sum(1), t.sum(0)
        n = float(n_b.sum())
        if n < 2 or self.umin == self.umax or int((n_l > 0).sum()) < 2:
            return math.nan, 0.0
        m = (n + 1) / 2
        r_b = np.cumsum(n_b) - (n_b - 1) / 2 - m  # centred mid-ranks
        rho = np.cumsum(n_l) - (n_l - 1) / 2 - m
        num = float(r_b @ t @ rho)
        dy = float(n_l @ (rho * rho))
        d_lo = float(n_b @ (r_b * r_b))
        multi = self._compact()[2] & (n_b > 1)
        v = np.where(multi, n_b * (n_b * n_b - 1) / 12, 0.0)
        mean_l = np.divide(t @ rho, n_b, out=np.zeros_like(n_b), where=n_b > 0)
        w = np.maximum(t @ (rho * rho) - n_b * mean_l * mean_l, 0.0)
        e = float(np.sqrt(v * w).sum())
        d_hi = d_lo + float(v.sum())
        value = _clip(num / math.sqrt(d_hi * dy))
        corners = [
            _clip((num + s * e) / math.sqrt(dd * dy)) if dd > 0 else s for s in (-1.0, 1.0) for dd in (d_lo, d_hi)
        ]
        return value, max(abs(c - value) for c in corners)

    def _classes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(error counts, correct counts, multi flags, bin indices)`` of the non-empty bins."""
        nz, t, multi = self._compact()
        pos_neg = t.sum(1)
        return pos_neg[:, 1], pos_neg[:, 0], multi, nz

    def auroc(self) -> tuple[float, float]:
        """``(AUROC of u detecting the error voxels, bound)``; NaN without error or without correct voxels."""
        pos, neg, multi, _ = self._classes()
        p, q = float(pos.sum()), float(neg.sum())
        if p == 0 or q == 0:
            return math.nan, 0.0
        below = np.cumsum(neg) - neg
        value = float(pos @ (below + neg / 2)) / (p * q)
        return value, float((pos * neg)[multi].sum()) / (2 * p * q)

    def average_precision(self) -> tuple[float, float]:
        """``(average precision of u detecting the error voxels, bound)`` (scikit-learn's, a bin = one
        threshold); NaN without error voxels."""
        pos, neg, multi, _ = self._classes()
        p = float(pos.sum())
        if p == 0:
            return math.nan, 0.0
        n_b = pos + neg
        p_above = pos[::-1].cumsum()[::-1] - pos  # voxels of the bins above
        a_above = n_b[::-1].cumsum()[::-1] - n_b
        has = pos > 0
        s = np.divide(p_above + pos, a_above + n_b, out=np.zeros_like(pos), where=has)
        value = float((pos * s).sum() / p)
        hi = np.divide(p_above + pos, a_above + pos, out=np.zeros_like(pos), where=has)
        lo = np.divide(p_above + 1, a_above + 1 + neg, out=np.zeros_like(pos), where=has)
        dev = np.where(has & multi, np.maximum(hi - s, s - lo), 0.0)
        return value, float((pos * dev).sum() / p)

    def ueo(self, thresholds: int = 100) -> tuple[float, float]:
        """``(max_t Dice(error, u > t), bound)``, thresholds evenly spaced over ``[min u, max u]`` (float64, as
        :func:`~trustseg.metrics.voxel_stats.split_ueo`); NaN without error voxels."""
        pos, neg, _, nz = self._classes()
        e = float(pos.sum())
        if e == 0:
            return math.nan, 0.0
        t = torch.linspace(self.umin, self.umax, thresholds, dtype=torch.float64).numpy()
        keys = monotone_key(torch.from_numpy(float32_floor(t)))
        b = self.bins_of(keys.clone()).numpy()
        j = np.minimum(np.searchsorted(nz, b), nz.size - 1)  # the threshold's bin, or the next non-empty one
        kmin, kmax, k = self.kmin.numpy()[nz[j]], self.kmax.numpy()[nz[j]], keys.numpy()
        pos_above = np.concatenate([pos[::-1].cumsum()[::-1], [0.0]])  # from non-empty bin j up
        neg_above = np.concatenate([neg[::-1].cumsum()[::-1], [0.0]])
        whole = kmin > k  # bin j lies above the threshold
        inside = ~whole & (kmax > k)  # straddles: part of bin j above
        tp_lo = pos_above[j + 1] + np.where(whole, pos[j], 0.0)
        fp_lo = neg_above[j + 1] + np.where(whole, neg[j], 0.0)
        dp, dq = np.where(inside, pos[j], 0.0), np.where(inside, neg[j], 0.0)

        def dice(tp: np.ndarray, fp: np.ndarray) -> np.ndarray:
            return 2 * tp / (tp + fp + e)

        est = dice(tp_lo + dp / 2, fp_lo + dq / 2)
        hi, lo = dice(tp_lo + dp, fp_lo), dice(tp_lo, fp_lo + dq)
        return float(est.max()), float(np.maximum(hi - est, est - lo).max())


def _clip(x: float) -> float:
    return min(1.0, max(-1.0, x))
