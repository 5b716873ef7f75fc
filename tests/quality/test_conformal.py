"""Conformal interval, review rule and OOD p-value: validity over seeded simulations against analytic values,
orientation, round trips and malformed descriptions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.spatial.distance import mahalanobis
from sklearn.covariance import LedoitWolf

from trustseg.core.errors import ConfigError, DataError
from trustseg.quality.conformal import ConformalInterval, ConformalOOD, ReviewRule

A, B, SIGMA, BELOW, CATCH, N_CAL, N_TEST, N_SIM = 6.0, 2.0, 0.05, 0.7, 0.9, 100, 500, 200


def simulate(useless: bool, seed: int = 0) -> dict[str, float]:
    """N_SIM draws of calibration + test sets: true Dice ~ Beta(6, 2); predicted = clip(true + N(0, 0.05²)) or,
    for the useless predictor, an independent Beta(6, 2) draw. Mean coverage, catch and review rates."""
    rng = np.random.default_rng(seed)
    true = rng.beta(A, B, (N_SIM, N_CAL + N_TEST))
    pred = rng.beta(A, B, true.shape) if useless else np.clip(true + rng.normal(0, SIGMA, true.shape), 0, 1)
    cover, catch, review = [], [], []
    for t, p in zip(true, pred):
        ci = ConformalInterval().fit(p[:N_CAL], t[:N_CAL])
        lo, hi = ci.interval(p[N_CAL:], confidence=0.9)
        cover.append(np.mean((lo <= t[N_CAL:]) & (t[N_CAL:] <= hi)))
        flag = ReviewRule().fit(p[:N_CAL], t[:N_CAL], review_below=BELOW, catch=CATCH).flag(p[N_CAL:])
        catch.append(flag[t[N_CAL:] < BELOW].mean())
        review.append(flag.mean())
    return {"coverage": float(np.mean(cover)), "catch": float(np.mean(catch)), "review": float(np.mean(review))}


def expected_rates(useless: bool) -> tuple[float, float]:
    """Exact expected catch and review rates of the rule under the simulation's model.

    With n_f ~ Binomial(N_CAL, π) failing calibration cases (π = P(Dice < 0.7)) and k = ⌈(n_f + 1)·0.9⌉, the
    threshold is the k-th order statistic of n_f continuous draws from F_f (the predicted Dice of failures), so
    U = F_f(threshold) ~ Beta(k, n_f + 1 − k) and, given n_f,
    catch = E[U] = k / (n_f + 1) and review = π·E[U] + (1 − π)·E[F_p(F_f⁻¹(U))], F_p the predicted Dice of
    passing cases (k > n_f: everything flagged, both 1). For the useless predictor F_p = F_f, so review = catch.
    F_f(t) = ∫₀^0.7 Beta(d) Φ((t − d)/σ) dd / π by quadrature (clipping to [0, 1] does not change it on (0, 1)).
    """
    beta = stats.beta(A, B)
    pi = beta.cdf(BELOW)
    t = np.linspace(0.2, 1.0, 801)
    d = np.linspace(0.0, 1.0, 4001)
    joint = beta.pdf(d)[None, :] * stats.norm.cdf((t[:, None] - d[None, :]) / SIGMA)
    F_f = integrate.trapezoid(np.where(d < BELOW, joint, 0.0), d, axis=1) / pi
    F_p = integrate.trapezoid(np.where(d >= BELOW, joint, 0.0), d, axis=1) / (1 - pi)
    u = np.linspace(0.0, 1.0, 2001)
    G = u if useless else np.interp(np.interp(u, F_f, t), t, F_p)  # F_p(F_f⁻¹(u))
    catch = review = 0.0
    for n_f in range(N_CAL + 1):
        w = stats.binom.pmf(n_f, N_CAL, pi)
        k = math.ceil((n_f + 1) * CATCH - 1e-9)
        if k > n_f:
            catch, review = catch + w, review + w
            continue
        dens = stats.beta.pdf(u, k, n_f + 1 - k)
        catch += w * k / (n_f + 1)
        review += w * (pi * k / (n_f + 1) + (1 - pi) * integrate.trapezoid(G * dens, u) / integrate.trapezoid(dens, u))
    return catch, review


@pytest.fixture(scope="module")
def sims():
    return {"good": simulate(False, seed=0), "useless": simulate(True, seed=1)}


def test_interval_coverage_over_200_simulations(sims):
    """crepes uses the ⌈…⌉ = 91st of 100 absolute residuals at confidence 0.9: E[coverage] = 91/101 = 0.901 for
    any predictor (continuous residuals); 200 × 500 cases put the mean within ±0.01 (> 4 standard errors)."""
    for name in ("good", "useless"):
        assert sims[name]["coverage"] >= 0.88
        assert abs(sims[name]["coverage"] - 91 / 101) < 0.01, name


def test_review_rule_catch_and_review_rate_over_200_simulations(sims):
    good_catch, good_review = expected_rates(useless=False)
    bad_catch, bad_review = expected_rates(useless=True)
    assert 0.9 <= good_catch < 0.95 and good_review < 0.45 and bad_review > 0.9  # what the model implies
    for name, catch, review in (("good", good_catch, good_review), ("useless", bad_catch, bad_review)):
        assert sims[name]["catch"] >= 0.88, name
        assert abs(sims[name]["catch"] - catch) < 0.02, name  # ± ~5 standard errors of the 200-simulation mean
        assert sims[name]["review"] < review + 0.02, name  # the bound derived in expected_rates
        assert abs(sims[name]["review"] - review) < 0.02, name
    assert sims["useless"]["review"] > sims["good"]["review"] + 0.4


def test_review_rule_threshold_is_the_order_statistic_and_agrees_with_the_p_value():
    rng = np.random.default_rng(5)
    true = rng.beta(A, B, 300)
    pred = np.clip(true + rng.normal(0, SIGMA, 300), 0, 1)
    rule = ReviewRule().fit(pred, true, review_below=BELOW, catch=CATCH)
    fail_pred = np.sort(pred[true < BELOW])
    n_f = len(fail_pred)
    assert rule.n_failures == n_f and rule.n_cal == 300 and rule.warning is None
    assert rule.threshold == fail_pred[math.ceil((n_f + 1) * CATCH) - 1]
    new = rng.uniform(0, 1, 2000)
    p = rule.p_value(new)
    p_ref = (1 + (fail_pred[None, :] >= new[:, None]).sum(axis=1)) / (n_f + 1)
    np.testing.assert_allclose(p, p_ref, rtol=0, atol=1e-15)
    assert not math.isclose((1 - CATCH) * (n_f + 1) % 1, 0, abs_tol=1e-6)  # no rounding tie at this n_f
    assert np.array_equal(rule.flag(new), p > 1 - CATCH)
    assert "exchangeable" in rule.assumption and f"{n_f} failing" in rule.assumption


def test_review_rule_hd95_is_the_mirror_image():
    """HD95 (lower is better, failures above the threshold) equals the Dice rule on negated values."""
    rng = np.random.default_rng(6)
    true = rng.gamma(2.0, 3.0, 200)
    pred = np.maximum(true + rng.normal(0, 1.0, 200), 0)
    hd = ReviewRule().fit(pred, true, review_below=10.0, catch=0.8, higher_is_better=False, target="HD95")
    mirror = ReviewRule().fit(-pred, -true, review_below=-10.0, catch=0.8)
    new = rng.uniform(0, 30, 1000)
    assert hd.n_failures == int((true > 10.0).sum()) == mirror.n_failures
    assert hd.threshold == -mirror.threshold
    assert np.array_equal(hd.flag(new), mirror.flag(-new)) and np.array_equal(hd.p_value(new), mirror.p_value(-new))
    assert hd.flag([hd.threshold + 1.0, hd.threshold - 1.0]).tolist() == [True, False]
    assert "HD95 is above 10" in hd.assumption


def test_review_rule_with_too_few_failures_flags_everything():
    true = np.r_[np.full(5, 0.5), np.full(95, 0.9)]
    rule = ReviewRule().fit(true + 0.01, true, review_below=0.7, catch=0.9)  # 5 < 9 = 0.9 / 0.1 failures needed
    assert rule.threshold == math.inf and rule.flag([0.0, 0.99, 1.0]).all()
    assert "only 5 of 100" in rule.warning and "at least 9" in rule.warning


def test_interval_too_small_calibration_set_gives_the_whole_range():
    ci = ConformalInterval().fit([0.8, 0.7, 0.9], [0.82, 0.73, 0.85])  # |r| = 0.02, 0.03, 0.05
    lo, hi = ci.interval([0.5, 0.6], confidence=0.9)
    assert lo.tolist() == [0.0, 0.0] and hi.tolist() == [1.0, 1.0] and "too few" in ci.warning
    lo, hi = ci.interval([0.5], confidence=0.5)  # ⌈4·0.5⌉ = 2nd smallest |r| = 0.03
    assert ci.warning is None and np.allclose([lo[0], hi[0]], [0.47, 0.53])
    hd = ConformalInterval((0.0, None)).fit([3.0, 5.0, 2.0, 8.0], [4.0, 5.5, 1.0, 20.0])
    lo, hi = hd.interval([1.0, 100.0], confidence=0.6)  # ⌈5·0.6⌉ = 3rd smallest |r| = 1.0
    assert lo.tolist() == [0.0, 99.0] and hi.tolist() == [2.0, 101.0]


def _ood_data(rng, n, shift=0.0):
    cov = np.array([[1.0, 0.6, 0.0], [0.6, 1.0, 0.3], [0.0, 0.3, 2.0]])
    X = rng.multivariate_normal([0.5, -1.0, 3.0], cov, n)
    return np.column_stack([X, rng.uniform(0, 1, n)]) + shift


def test_ood_p_values_are_uniform_on_exchangeable_rows_and_small_on_shifted_ones():
    """n_cal = 50: p takes the values j/51, j = 1..51, equally likely for an exchangeable row, so
    E[p] = 52/102 and P(p ≤ 0.1) = 5/51 exactly; 100 × 50 rows give means within ±0.025 (≥ 4 standard errors)."""
    rng = np.random.default_rng(7)
    p_in, p_out = [], []
    for _ in range(100):
        ood = ConformalOOD().fit(_ood_data(rng, 100), _ood_data(rng, 50))
        p_in.append(ood.p_value(_ood_data(rng, 50)))
        p_out.append(ood.p_value(_ood_data(rng, 20, shift=3.0)))
    p_in, p_out = np.concatenate(p_in), np.concatenate(p_out)
    assert abs(p_in.mean() - 52 / 102) < 0.025
    assert abs(np.mean(p_in <= 0.1) - 5 / 51) < 0.025
    assert np.mean(p_out <= 0.05) > 0.95 and np.median(p_out) <= 2 / 51


def test_ood_distance_and_p_value_match_references():
    rng = np.random.default_rng(8)
    ref, cal, new = _ood_data(rng, 80), _ood_data(rng, 40), _ood_data(rng, 30, shift=0.5)
    ood = ConformalOOD().fit(ref, cal)
    mean, sd = ref.mean(axis=0), ref.std(axis=0)
    lw = LedoitWolf().fit((ref - mean) / sd)
    d_ref = [mahalanobis((x - mean) / sd, lw.location_, lw.precision_) for x in new]
    np.testing.assert_allclose(ood.distance(new), d_ref, rtol=1e-10)
    d_cal = np.array([mahalanobis((x - mean) / sd, lw.location_, lw.precision_) for x in cal])
    p_ref = (1 + (d_cal[None, :] >= np.asarray(d_ref)[:, None]).sum(axis=1)) / 41
    np.testing.assert_allclose(ood.p_value(new), p_ref, rtol=0, atol=1e-12)
    assert 0 <= ood.shrinkage <= 1


def test_ood_constant_feature_and_input_errors():
    rng = np.random.default_rng(9)
    ref = np.column_stack([rng.normal(size=(50, 2)), np.ones(50)])
    ood = ConformalOOD().fit(ref, np.column_stack([rng.normal(size=(20, 2)), np.ones(20)]))
    assert ood.scale[2] == 1.0 and np.isfinite(ood.p_value(ref)).all()
    with pytest.raises(DataError, match="2 features, the reference 3"):
        ood.p_value(ref[:, :2])
    with pytest.raises(DataError, match="finite"):
        ood.p_value(np.full((1, 3), np.nan))
    with pytest.raises(ConfigError, match="not fitted"):
        ConformalOOD().p_value(ref)


def _json(obj):
    return json.loads(json.dumps(obj.to_dict(), allow_nan=False))


def test_round_trips_give_identical_outputs():
    rng = np.random.default_rng(10)
    true = rng.beta(A, B, 150)
    pred = np.clip(true + rng.normal(0, SIGMA, 150), 0, 1)
    new = rng.uniform(0, 1, 300)
    ci = ConformalInterval().fit(pred, true)
    ci2 = ConformalInterval.from_dict(_json(ci))
    for a, b in zip(ci.interval(new, 0.8), ci2.interval(new, 0.8)):
        assert np.array_equal(a, b)
    hd = ConformalInterval((0.0, None)).fit(10 * pred, 10 * true)
    assert ConformalInterval.from_dict(_json(hd)).y_range == (0.0, math.inf)
    rule = ReviewRule().fit(pred, true, review_below=0.75, catch=0.85)
    rule2 = ReviewRule.from_dict(_json(rule))
    assert rule2.threshold == rule.threshold and rule2.assumption == rule.assumption
    assert np.array_equal(rule.flag(new), rule2.flag(new)) and np.array_equal(rule.p_value(new), rule2.p_value(new))
    X = _ood_data(rng, 120)
    ood = ConformalOOD().fit(X[:80], X[80:])
    ood2 = ConformalOOD.from_dict(_json(ood))
    assert np.array_equal(ood.p_value(X), ood2.p_value(X)) and np.array_equal(ood.distance(X), ood2.distance(X))


@pytest.fixture(scope="module")
def dicts():
    rng = np.random.default_rng(11)
    true = rng.beta(A, B, 60)
    pred = np.clip(true + rng.normal(0, SIGMA, 60), 0, 1)
    X = _ood_data(rng, 60)
    return {
        ConformalInterval: ConformalInterval().fit(pred, true).to_dict(),
        ReviewRule: ReviewRule().fit(pred, true).to_dict(),
        ConformalOOD: ConformalOOD().fit(X[:40], X[40:]).to_dict(),
    }


@pytest.mark.parametrize(
    "cls,key,value,problem",
    [
        (ConformalInterval, "format", "trustseg.quality.review_rule", "not a trustseg.quality.conformal_interval"),
        (ConformalInterval, "format_version", 2, "format_version 2"),
        (ConformalInterval, "residuals", None, "missing keys"),
        (ConformalInterval, "residuals", [], "empty"),
        (ConformalInterval, "residuals", [0.1, float("nan")], "finite"),
        (ConformalInterval, "y_range", [1.0, 0.0], "low < high"),
        (ReviewRule, "true_cal", [0.5, 0.6], "2 values, expected 60"),
        (ReviewRule, "catch", 1.5, "catch must be a number in"),
        (ReviewRule, "higher_is_better", "yes", "true/false"),
        (ReviewRule, "pred_cal", "abc", "flat array"),
        (ConformalOOD, "precision", [[1.0, 0.0], [0.0, 1.0]], "4 x 4 matrix"),
        (ConformalOOD, "scale", [1.0, 1.0], "2 values, expected 4"),
        (ConformalOOD, "cal_distances", [-1.0, 2.0], "non-negative"),
        (ConformalOOD, "shrinkage", 2.0, "shrinkage"),
        (ConformalOOD, "location", [0.0, float("inf"), 0.0, 0.0], "finite"),
    ],
)
def test_malformed_dicts_raise_config_error_naming_the_source(dicts, cls, key, value, problem):
    d = dict(dicts[cls])
    if value is None:
        del d[key]
    else:
        d[key] = value
    with pytest.raises(ConfigError, match=problem) as e:
        cls.from_dict(d, source="qc/conformal.json")
    assert str(e.value).startswith("qc/conformal.json: ")
    for bad in (None, [1, 2], {}):
        with pytest.raises(ConfigError):
            cls.from_dict(bad)


def test_bad_calibration_inputs():
    with pytest.raises(DataError, match="3 values, expected 2"):
        ConformalInterval().fit([0.5, 0.6], [0.5, 0.6, 0.7])
    with pytest.raises(DataError, match="finite"):
        ReviewRule().fit([0.5, np.nan], [0.5, 0.6])
    with pytest.raises(ConfigError, match="confidence"):
        ConformalInterval().fit([0.5], [0.6]).interval([0.5], confidence=1.0)
    with pytest.raises(ConfigError, match="not calibrated"):
        ReviewRule().flag([0.5])
