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
from collections.abc import Sequence
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
    groups: Sequence[tuple[Sequence[float], Sequence[float], Sequence[float]]],
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any] | None:
    """Paired, stratified bootstrap of the difference of two image-level Pearson correlations with one target.

    Each group (a seed or fold: one model pair scoring its own test images) holds per-image scores ``a`` (method)
    and ``b`` (baseline) and the target ``t`` (e.g. the image's summed rater disagreement). The statistic is the
    mean over groups of ``r(a, t) − r(b, t)``; each resample redraws the images of every group with replacement
    (the same draw for ``a`` and ``b``, so the pairing is kept), and resamples where a correlation is undefined
    (a constant draw) are dropped. With few images per group the interval is wide, as it should be.

    Args:
        groups: ``[(a, b, t), ...]``, three equal-length ``(N_g,)`` sequences per group; images with a non-finite
            value are left out; groups with fewer than 3 images are left out.
        resamples: ``B``.
        confidence: Interval coverage.
        seed: Seed of the resampling (``numpy.random.default_rng``).

    Returns:
        ``{"diff", "low", "high", "n_cases", "groups", "resamples"}`` (``resamples``: those kept), or ``None`` when
        no group has a defined correlation.

    Example (a score equal to the target against a noisy one: r 1 against r < 1, the interval above 0):
        >>> t = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        >>> r = paired_bootstrap_correlation([(t, [1.0, 3.0, 2.0, 5.0, 4.0, 6.0], t)], resamples=500)
        >>> round(r["diff"], 4), r["low"] > 0, r["n_cases"]
        (0.1143, True, 6)
    """
    data = []
    for a, b, t in groups:
        lengths = [len(a), len(b), len(t)]
        if len(set(lengths)) != 1:
            raise ValueError(f"each group needs three equal-length sequences (a, b, target), got lengths {lengths}")
        g = np.asarray([a, b, t], dtype=np.float64).reshape(3, -1)
        g = g[:, np.isfinite(g).all(axis=0)]
        if g.shape[1] >= 3:
            data.append(g)
    observed = [_corr_diff(g) for g in data]
    kept = [g for g, d in zip(data, observed, strict=True) if math.isfinite(d)]
    if not kept:
        return None
    rng = np.random.default_rng(seed)
    draws = np.zeros((resamples, len(kept)))
    for j, g in enumerate(kept):
        idx = rng.integers(0, g.shape[1], size=(resamples, g.shape[1]))
        draws[:, j] = _corr_diff(g[:, idx])
    means = draws.mean(axis=1)
    means = means[np.isfinite(means)]
    if means.size == 0:
        return None
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return {
        "diff": float(np.mean([d for d in observed if math.isfinite(d)])),
        "low": float(low),
        "high": float(high),
        "n_cases": int(sum(g.shape[1] for g in kept)),
        "groups": len(kept),
        "resamples": int(means.size),
    }


def _corr_diff(g: np.ndarray) -> Any:
    """``r(a, t) − r(b, t)`` along the last axis of ``g = (3, ..., N)`` (NaN where a correlation is undefined)."""
    c = g - g.mean(axis=-1, keepdims=True)
    ss = (c * c).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ra = (c[0] * c[2]).sum(axis=-1) / np.sqrt(ss[0] * ss[2])
        rb = (c[1] * c[2]).sum(axis=-1) / np.sqrt(ss[1] * ss[2])
    tol = 1e-12 * np.maximum(1.0, np.abs(g).max(axis=-1) ** 2)
    undefined = (ss[0] <= tol[0]) | (ss[1] <= tol[1]) | (ss[2] <= tol[2])
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
