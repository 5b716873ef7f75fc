"""Mean ± sd over seeds and the paired bootstrap (known answers, scipy reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from trustseg.compare.stats import mean_sd, paired_bootstrap, seed_average


def test_mean_sd_known_answers():
    assert mean_sd([0.5, 0.7]) == pytest.approx((0.6, math.sqrt(0.02)))
    assert mean_sd([0.5]) == (0.5, None)
    assert mean_sd([]) == (None, None)
    assert mean_sd([1.0, float("nan"), 3.0]) == pytest.approx((2.0, math.sqrt(2.0)))


def test_identical_methods_give_a_zero_interval():
    a = np.random.default_rng(1).uniform(0.4, 0.9, 30)
    r = paired_bootstrap(a, a)
    assert r == {"diff": 0.0, "low": 0.0, "high": 0.0, "n_cases": 30, "p_better": 0.0}


@pytest.mark.parametrize("higher", [True, False])
def test_a_constant_shift_is_the_interval(higher):
    b = np.random.default_rng(2).uniform(0.4, 0.9, 25)
    r = paired_bootstrap(b - 0.05, b, higher_is_better=higher)
    assert r["diff"] == pytest.approx(-0.05) and r["low"] == pytest.approx(-0.05) and r["high"] == pytest.approx(-0.05)
    assert r["p_better"] == (0.0 if higher else 1.0)


def test_cases_undefined_in_either_method_are_left_out():
    r = paired_bootstrap([1.0, float("nan"), 3.0, 4.0], [0.0, 1.0, float("nan"), 3.0])
    assert r["n_cases"] == 2 and r["diff"] == pytest.approx(1.0)
    assert paired_bootstrap([float("nan")], [1.0]) is None
    with pytest.raises(ValueError):
        paired_bootstrap([1.0], [1.0, 2.0])


def test_percentile_interval_matches_scipy_bootstrap_of_the_differences():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 0.9, 60)
    method = base + rng.normal(0.02, 0.05, 60)
    ours = paired_bootstrap(method, base, resamples=20000, seed=3)
    ref = stats.bootstrap(
        (method, base), lambda x, y, axis: np.mean(x - y, axis=axis), paired=True, n_resamples=20000,
        method="percentile", confidence_level=0.95, random_state=4, vectorized=True,
    ).confidence_interval  # fmt: skip
    width = ref.high - ref.low
    assert ours["low"] == pytest.approx(ref.low, abs=0.05 * width)
    assert ours["high"] == pytest.approx(ref.high, abs=0.05 * width)
    assert ours["diff"] == pytest.approx(np.mean(method - base))


def test_seeded_and_reproducible():
    a, b = [0.1, 0.5, 0.9, 0.3], [0.2, 0.4, 0.6, 0.3]
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)


def test_seed_average_per_case():
    avg = seed_average([{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 4.0}])
    assert avg == {"a": 2.0, "b": 3.0}
