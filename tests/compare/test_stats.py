"""Mean ± sd over seeds and the paired bootstrap (known answers, scipy reference)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from trustseg.compare.stats import mean_sd, paired_bootstrap, paired_bootstrap_correlation, seed_average


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


# -- paired_bootstrap_correlation: image-level r differences -------------------------------------------------
def _groups(seed: int, sizes: list[int], noise_a: float, noise_b: float) -> list[dict]:
    """Groups with disjoint case ids ``g<j>c<i>``: target t, scores t + noise."""
    rng = np.random.default_rng(seed)
    out = []
    for j, n in enumerate(sizes):
        t = rng.normal(size=n)
        a, b = t + noise_a * rng.normal(size=n), t + noise_b * rng.normal(size=n)
        out.append({f"g{j}c{i}": (a[i], b[i], t[i]) for i in range(n)})
    return out


def _arrays(g: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b, t = np.asarray(list(g.values())).T
    return a, b, t


def test_correlation_difference_is_the_mean_over_groups_of_scipys_pearson_differences():
    groups = _groups(0, [6, 9, 30], 0.5, 1.5)
    r = paired_bootstrap_correlation(groups, resamples=200)
    want = np.mean([stats.pearsonr(a, t)[0] - stats.pearsonr(b, t)[0] for a, b, t in map(_arrays, groups)])
    assert r["diff"] == pytest.approx(want, rel=1e-12)
    assert r["n_cases"] == 45 and r["groups"] == 3 and r["resamples"] <= 200
    assert r["low"] <= r["diff"] <= r["high"]


def test_a_resample_weighs_a_case_drawn_twice_twice():
    """The bootstrap statistic is scipy's r on the drawn cases, repetitions included (same draws, seed 0)."""
    (g,) = _groups(6, [15], 0.5, 1.0)
    a, b, t = _arrays(g)
    r = paired_bootstrap_correlation([g], resamples=1, confidence=0.0)  # one resample: low = high = its value
    idx = np.random.default_rng(0).integers(0, 15, 15)
    want = stats.pearsonr(a[idx], t[idx])[0] - stats.pearsonr(b[idx], t[idx])[0]
    assert r["low"] == pytest.approx(want, rel=1e-10) and r["high"] == pytest.approx(want, rel=1e-10)


def test_groups_that_share_their_test_cases_are_resampled_together():
    """Five folds scoring the same six images (QUBIQ) are not five independent samples: the interval of five
    identical groups is the interval of one."""
    (g,) = _groups(3, [6], 0.4, 1.0)
    one = paired_bootstrap_correlation([g], resamples=500)
    five = paired_bootstrap_correlation([g] * 5, resamples=500)
    assert (five["low"], five["high"], five["n_cases"]) == pytest.approx((one["low"], one["high"], 6))
    assert five["groups"] == 5


def test_identical_scores_give_a_zero_interval_and_a_clear_winner_an_interval_above_zero():
    (g,) = _groups(1, [40], 0.5, 0.5)
    same = {c: (v[0], v[0], v[2]) for c, v in g.items()}
    r = paired_bootstrap_correlation([same], resamples=300)
    assert (r["diff"], r["low"], r["high"]) == (0.0, 0.0, 0.0)
    strong = paired_bootstrap_correlation(_groups(2, [200], 0.2, 3.0), resamples=300)
    assert strong["low"] > 0.3


def test_few_images_give_a_wide_interval():
    """Six images (a QUBIQ fold) cannot separate r 0.9 from r 0.6; two hundred can."""
    few = paired_bootstrap_correlation(_groups(3, [6], 0.4, 1.0), resamples=1000)
    many = paired_bootstrap_correlation(_groups(3, [200], 0.4, 1.0), resamples=1000)
    assert (few["high"] - few["low"]) > 3 * (many["high"] - many["low"])


def test_undefined_images_and_groups_are_left_out():
    (g,) = _groups(4, [10], 0.5, 1.0)
    first = next(iter(g))
    g[first] = (float("nan"), *g[first][1:])
    tiny = {"x": (1.0, 1.0, 2.0), "y": (2.0, 2.0, 1.0)}
    r = paired_bootstrap_correlation([g, tiny], resamples=100)
    assert r["n_cases"] == 9 and r["groups"] == 1
    a, b, t = _arrays({c: v for c, v in g.items() if c != first})
    assert r["diff"] == pytest.approx(stats.pearsonr(a, t)[0] - stats.pearsonr(b, t)[0], rel=1e-12)
    constant = {c: (1.0, v[1], v[2]) for c, v in g.items() if c != first}
    assert paired_bootstrap_correlation([constant]) is None  # a constant score: r undefined
    assert paired_bootstrap_correlation([]) is None


def test_correlation_bootstrap_is_seeded_and_checks_values():
    g = _groups(5, [12, 12], 0.5, 1.0)
    assert paired_bootstrap_correlation(g, seed=3) == paired_bootstrap_correlation(g, seed=3)
    with pytest.raises(ValueError, match="need \\(a, b, target\\)"):
        paired_bootstrap_correlation([{"c": (1.0, 2.0)}])
