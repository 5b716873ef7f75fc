"""Statistics of the comparison table: mean ± sd over seeds and a paired bootstrap against the baseline.

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
