"""Statistics of the comparison table: mean ± sd over seeds and a paired bootstrap against the baseline.

(:func:`paired_bootstrap_correlation` does the same for a difference of image-level correlations, where a
per-case difference does not exist.)

The paired bootstrap resamples *test cases* with replacement: for per-case values ``a_i`` (method) and ``b_i``
(baseline), each averaged over the seeds first, the difference ``d_i = a_i − b_i`` is resampled ``B`` times and
the interval is the percentile interval of the resampled means ``mean(d*)``::

    diff = mean_i d_i,   low/high = quantiles (α/2, 1 − α/2) of {mean(d*_b)}_b,
    p_better = share of resamples on the better side of 0 (> 0 when higher is better, < 0 when lower is).

Example (identical methods: a zero interval; a constant shift: the interval is the shift):
    >>> a = [0.7, 0.8, 0.9]
    >>> r = paired_bootstrap(a, a)
    >>> (r["diff"], r["low"], r["high"])
    (0.0, 0.0, 0.0)
    >>> r = paired_bootstrap([x + 0.1 for x in a], a)
    >>> round(r["low"], 12), round(r["high"], 12), r["p_better"]
    (0.1, 0.1, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (``ddof = 1``) of the finite values; sd is ``None`` for fewer than two
    values, both ``None`` for none.

    >>> mean_sd([1.0, 3.0])
    (2.0, 1.4142135623730951)
    >>> mean_sd([2.0])
    (2.0, None)
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return None, None
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


def paired_bootstrap(
    method: Sequence[float],
    baseline: Sequence[float],
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    higher_is_better: bool | None = True,
) -> dict[str, Any] | None:
    """Paired percentile bootstrap of ``mean(method − baseline)`` over cases.

    Args:
        method: Per-case values of the method ``(N,)`` (NaN where undefined).
        baseline: The same cases' baseline values ``(N,)``, in the same order.
        resamples: ``B``, the bootstrap resamples.
        confidence: Interval coverage (0.95: the 2.5 % and 97.5 % quantiles).
        seed: Seed of the resampling (``numpy.random.default_rng``).
        higher_is_better: Orientation of ``p_better`` (``None``: ``p_better`` is ``None``).

    Returns:
        ``{"diff", "low", "high", "n_cases", "p_better"}`` over the cases where both are finite, or ``None`` when
        there is no such case.
    """
    a = np.asarray(method, dtype=np.float64)
    b = np.asarray(baseline, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired values need equal lengths, got {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    d = a[keep] - b[keep]
    if d.size == 0:
        return None
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(resamples, d.size))
    means = d[idx].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    if higher_is_better is None:
        p_better = None
    else:
        p_better = float(np.mean(means > 0) if higher_is_better else np.mean(means < 0))
    return {
        "diff": float(d.mean()),
        "low": float(low),
        "high": float(high),
        "n_cases": int(d.size),
        "p_better": p_better,
    }


def paired_bootstrap_correlation(
    groups: Sequence[Mapping[Hashable, tuple[float, float, float]]],
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Paired bootstrap over test cases of the difference of two image-level Pearson correlations with one target.

    Each group (a seed or a fold: one model pair scoring its test images) maps a case id to the method's image
    score ``a``, the baseline's ``b`` and the target ``t`` (e.g. the image's summed rater disagreement). The
    statistic is the mean over groups of ``r_g(a, t) − r_g(b, t)``. Each resample draws the *cases* with
    replacement from the union of the groups' cases, and every group computes its correlations over the drawn
    cases it holds (a case drawn twice counts twice: a Pearson r with integer weights). Groups that share their
    test cases (seeds on one split, folds scored on one test set) are thus resampled together, as the images are
    the source of the variance; resamples where a correlation is undefined (a constant draw) are dropped. With few
    images the interval is wide, as it should be.

    Args:
        groups: ``[{case: (a, b, t)}, ...]``; cases with a non-finite value and groups with fewer than 3 cases are
            left out.
        resamples: ``B``.
        confidence: Interval coverage.
        seed: Seed of the resampling (``numpy.random.default_rng``).

    Returns:
        ``{"diff", "low", "high", "n_cases", "groups", "resamples"}`` (``n_cases``: distinct cases; ``resamples``:
        those kept), or ``None`` when no group has a defined correlation.

    Example (a score equal to the target against a noisy one: r 1 against r 0.886, the interval above 0):
        >>> t = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        >>> noisy = [1.0, 3.0, 2.0, 5.0, 4.0, 6.0]
        >>> r = paired_bootstrap_correlation([{i: (t[i], noisy[i], t[i]) for i in range(6)}], resamples=500)
        >>> round(r["diff"], 4), r["low"] > 0, r["n_cases"]
        (0.1143, True, 6)
    """
    kept: list[dict[Hashable, tuple[float, float, float]]] = []
    for g in groups:
        clean = {}
        for case, v in g.items():
            if len(v) != 3:
                raise ValueError(f"case {case!r}: need (a, b, target), got {len(v)} values")
            if all(math.isfinite(float(x)) for x in v):
                clean[case] = (float(v[0]), float(v[1]), float(v[2]))
        if len(clean) >= 3 and math.isfinite(float(_weighted_corr_diff(_columns(clean), np.ones(len(clean))))):
            kept.append(clean)
    if not kept:
        return None
    union = list(dict.fromkeys(c for g in kept for c in g))
    pos = {c: i for i, c in enumerate(union)}
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, len(union), len(union)), minlength=len(union))
                       for _ in range(resamples)]) if resamples else np.zeros((0, len(union)))  # fmt: skip
    observed, draws = [], np.zeros((counts.shape[0], len(kept)))
    for j, g in enumerate(kept):
        cols = np.asarray([pos[c] for c in g])
        data = _columns(g)
        observed.append(float(_weighted_corr_diff(data, np.ones(len(g)))))
        draws[:, j] = _weighted_corr_diff(data, counts[:, cols].astype(np.float64))
    means = draws.mean(axis=1)
    means = means[np.isfinite(means)]
    if means.size == 0:
        return None
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {
        "diff": float(np.mean(observed)),
        "low": float(low),
        "high": float(high),
        "n_cases": len(union),
        "groups": len(kept),
        "resamples": int(means.size),
    }


def _columns(g: Mapping[Hashable, tuple[float, float, float]]) -> np.ndarray:
    return np.asarray(list(g.values()), dtype=np.float64).T  # (3, N): a, b, t


def _weighted_corr_diff(data: np.ndarray, w: np.ndarray) -> Any:
    """``r_w(a, t) − r_w(b, t)`` for ``data = (3, N)`` and weights ``w = (..., N)`` (NaN where undefined)."""
    total = w.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = (w[..., None, :] * data).sum(axis=-1) / total  # (..., 3)
        c = data - mu[..., :, None]  # (..., 3, N)
        ss = (w[..., None, :] * c * c).sum(axis=-1)  # (..., 3)
        ra = (w * c[..., 0, :] * c[..., 2, :]).sum(axis=-1) / np.sqrt(ss[..., 0] * ss[..., 2])
        rb = (w * c[..., 1, :] * c[..., 2, :]).sum(axis=-1) / np.sqrt(ss[..., 1] * ss[..., 2])
    scale = np.maximum(1.0, np.abs(data).max(axis=-1) ** 2)  # (3,)
    undefined = (ss <= 1e-12 * scale * total).any(axis=-1)
    return np.where(undefined, np.nan, ra - rb)


def seed_average(per_seed: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-case values averaged over seeds: ``[{case: value}, ...]`` -> ``{case: mean}`` over the cases of the
    first seed (a case missing in a seed, or NaN there, is left out of that case's mean).

    >>> seed_average([{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": float("nan")}])
    {'a': 2.0, 'b': 2.0}
    """
    if not per_seed:
        return {}
    out = {}
    for case in per_seed[0]:
        vals = [s[case] for s in per_seed if case in s and s[case] is not None and math.isfinite(s[case])]
        out[case] = float(np.mean(vals)) if vals else math.nan
    return out
