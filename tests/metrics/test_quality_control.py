"""Quality-control curves, d-AUC, AURC and E-AURC on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trustseg.core.errors import ConfigError, DataError
from trustseg.metrics import METRICS
from trustseg.metrics import quality_control as qc

DICE = torch.tensor([0.9, 0.5, 0.7, 0.3])
PERFECT = torch.tensor([0.1, 0.6, 0.2, 0.9])  # most uncertain = worst Dice
SHUFFLED = torch.tensor([0.9, 0.1, 0.2, 0.6])


def test_qc_curve_hand_computed():
    f, curve = qc.qc_curve(SHUFFLED, DICE)
    # referral order: image 0 (0.9), 3 (0.3), 2 (0.7), 1 (0.5); Σ Dice = 2.4
    torch.testing.assert_close(f, torch.tensor([0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    torch.testing.assert_close(curve, torch.tensor([0.6, 0.625, 0.8, 0.875, 1.0], dtype=torch.float64))
    _, ideal = qc.qc_ideal_curve(DICE)
    torch.testing.assert_close(ideal, torch.tensor([0.6, 0.775, 0.9, 0.975, 1.0], dtype=torch.float64))
    # gaps 0, .15, .1, .1, 0 -> trapezoid 0.25 · 0.35
    assert qc.d_auc(SHUFFLED, DICE) == pytest.approx(0.0875)


def test_perfect_ranking_has_zero_d_auc_and_eaurc():
    assert qc.d_auc(PERFECT, DICE) == pytest.approx(0.0, abs=1e-15)
    assert qc.eaurc(PERFECT, DICE) == pytest.approx(0.0, abs=1e-15)
    assert qc.aurc(PERFECT, DICE) == pytest.approx((0.1 + 0.2 + 0.3 + 0.4) / 4)


def test_aurc_hand_computed():
    # kept first: images 1 (risk .5), 2 (.3), 3 (.7), 0 (.1): selective risks .5, .4, .5, .4
    assert qc.aurc(SHUFFLED, DICE) == pytest.approx(0.45)
    assert qc.eaurc(SHUFFLED, DICE) == pytest.approx(0.45 - 0.25)


def test_ties_give_the_random_expectation_and_fractions_interpolate():
    flat = torch.zeros(4)
    _, curve = qc.qc_curve(flat, DICE)
    f, random = qc.qc_random_curve(DICE)
    torch.testing.assert_close(curve, random)
    fr, part = qc.qc_curve(SHUFFLED, DICE, fractions=torch.tensor([0.125, 1.0]))
    assert part.tolist() == pytest.approx([(0.6 + 0.625) / 2, 1.0])
    # E-AURC of a constant score = AURC of the mean risk minus the optimum
    assert qc.aurc(flat, DICE) == pytest.approx(1 - float(DICE.mean()))


def test_random_curve_is_linear_and_d_auc_of_the_ideal_ranking_is_zero():
    g = torch.Generator().manual_seed(0)
    dice = torch.rand(30, generator=g)
    f, r = qc.qc_random_curve(dice)
    assert r[0] == pytest.approx(float(dice.double().mean())) and r[-1] == pytest.approx(1.0)
    assert torch.allclose(torch.diff(r), torch.diff(r)[0].expand(30))
    assert qc.d_auc(-dice, dice) == pytest.approx(0.0, abs=1e-12)


def test_errors_and_registry():
    with pytest.raises(DataError, match="NaN"):
        qc.d_auc(torch.tensor([0.1, float("nan")]), torch.tensor([0.5, 0.5]))
    with pytest.raises(DataError, match="values"):
        qc.aurc(torch.tensor([0.1]), torch.tensor([0.5, 0.5]))
    assert {"qc_curve", "d_auc", "aurc", "eaurc"} <= set(METRICS.names())


# -- Dice prediction: R², correlations, leave-one-out linear predictor ---------------------------------------------


def test_r2_and_dice_prediction_metrics_match_sklearn_and_scipy():
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import r2_score as sk_r2

    from trustseg.metrics.quality_control import dice_prediction_metrics, r2_score

    g = torch.Generator().manual_seed(0)
    true = torch.rand(40, generator=g, dtype=torch.float64)
    pred = (true + 0.2 * torch.randn(40, generator=g, dtype=torch.float64)).clamp(0, 1)
    m = dice_prediction_metrics(pred, true)
    assert m["r2"] == pytest.approx(sk_r2(true.numpy(), pred.numpy()), abs=1e-12)
    assert m["pearson"] == pytest.approx(pearsonr(pred.numpy(), true.numpy())[0], abs=1e-12)
    assert m["spearman"] == pytest.approx(spearmanr(pred.numpy(), true.numpy())[0], abs=1e-12)
    assert m["mae"] == pytest.approx(float((pred - true).abs().mean())) and m["n"] == 40
    # analytic: exact prediction -> 1; predicting the mean -> 0; worse than the mean -> negative
    assert r2_score(true, true) == 1.0
    assert r2_score(torch.full((40,), float(true.mean()), dtype=torch.float64), true) == pytest.approx(0.0, abs=1e-12)
    assert r2_score(1 - true, true) < 0
    # constant truth: scikit-learn's convention
    const = torch.full((5,), 0.8, dtype=torch.float64)
    assert r2_score(const, const) == 1.0 == sk_r2(const.numpy(), const.numpy())
    assert r2_score(const - 0.1, const) == 0.0 == sk_r2(const.numpy(), (const - 0.1).numpy())


def test_loo_linear_dice_equals_sklearn_leave_one_out():
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import LeaveOneOut, cross_val_predict

    from trustseg.metrics.quality_control import loo_linear_dice

    g = torch.Generator().manual_seed(1)
    score = torch.rand(25, generator=g, dtype=torch.float64) * 3 + 100  # offset: checks the centring
    dice = (0.9 - 0.1 * (score - 100) + 0.05 * torch.randn(25, generator=g, dtype=torch.float64)).clamp(0, 1)
    ref = cross_val_predict(LinearRegression(), score.numpy()[:, None], dice.numpy(), cv=LeaveOneOut())
    got = loo_linear_dice(score, dice, clip=False)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-9)
    assert bool(((loo_linear_dice(score, dice) >= 0) & (loo_linear_dice(score, dice) <= 1)).all())


def test_loo_linear_dice_edge_cases():
    from trustseg.metrics.quality_control import loo_linear_dice

    dice = torch.tensor([0.2, 0.4, 0.9], dtype=torch.float64)
    # all scores equal: each image gets the mean Dice of the others
    got = loo_linear_dice(torch.ones(3), dice)
    torch.testing.assert_close(got, torch.tensor([0.65, 0.55, 0.3], dtype=torch.float64))
    # only the held-out image differs: the other two scores are equal -> their mean
    got = loo_linear_dice(torch.tensor([5.0, 1.0, 1.0]), dice)
    assert float(got[0]) == pytest.approx(0.65)
    with pytest.raises(DataError, match="at least 3"):
        loo_linear_dice(torch.ones(2), dice[:2])
    with pytest.raises(DataError, match="score values contain NaN"):
        loo_linear_dice(torch.tensor([1.0, math.nan, 2.0]), dice)


# -- predicted quality: failure AUROC, interval coverage, review rates, the report --------------------------------


def _seeded(n: int = 50, seed: int = 3):
    rng = np.random.default_rng(seed)
    true = rng.uniform(0.3, 1.0, n)
    pred = true + rng.normal(0, 0.15, n)  # not clipped: no ties (tied scores are averaged, see the QC curve tests)
    return pred, true


def test_failure_auroc_matches_sklearn_and_hand_cases():
    from sklearn.metrics import roc_auc_score

    pred, true = _seeded()
    for t in (0.5, 0.7, 0.9):
        assert qc.failure_auroc(pred, true, t) == pytest.approx(roc_auc_score(true < t, -pred), abs=1e-12)
    ties = np.round(pred, 1)  # tied predictions count one half, as scikit-learn's
    assert qc.failure_auroc(ties, true) == pytest.approx(roc_auc_score(true < 0.7, -ties), abs=1e-12)
    # hand: failures (true < .7) are images 1, 2; predicted .4 < .9, .6 and .8 < .9 but .8 > .6 -> 3 of 4 pairs
    assert qc.failure_auroc([0.9, 0.4, 0.8, 0.6], [0.95, 0.5, 0.6, 0.8]) == 0.75
    assert qc.failure_auroc([0.9, 0.4], [0.95, 0.5]) == 1.0 and qc.failure_auroc([0.4, 0.9], [0.95, 0.5]) == 0.0
    assert math.isnan(qc.failure_auroc([0.9, 0.4], [0.95, 0.8]))  # no failure
    assert math.isnan(qc.failure_auroc([0.9, 0.4], [0.1, 0.2]))  # only failures
    assert qc.failure_auroc([0.5, 0.5, 0.5], [0.2, 0.9, 0.8]) == 0.5  # constant prediction: chance
    with pytest.raises(DataError, match="NaN"):
        qc.failure_auroc([0.5, math.nan], [0.2, 0.9])
    with pytest.raises(DataError, match="NaN"):
        qc.failure_auroc([0.5, 0.4], [math.nan, 0.9])
    with pytest.raises(ConfigError, match="threshold"):
        qc.failure_auroc([0.5, 0.4], [0.2, 0.9], math.nan)


def test_interval_coverage_and_its_errors():
    pred, true = _seeded()
    lo, hi = pred - 0.1, pred + 0.2
    assert qc.interval_coverage(lo, hi, true) == pytest.approx(np.mean((lo <= true) & (true <= hi)))
    # ends included; an interval of width 0 covers its point only
    assert qc.interval_coverage([0.5, 0.6, 0.7], [0.5, 0.8, 0.9], [0.5, 0.8, 0.95]) == pytest.approx(2 / 3)
    assert qc.interval_coverage([0.0], [1.0], [0.3]) == 1.0
    with pytest.raises(DataError, match="lo > hi"):
        qc.interval_coverage([0.6], [0.5], [0.55])
    with pytest.raises(DataError, match="values"):
        qc.interval_coverage([0.1, 0.2], [0.5], [0.3, 0.3])
    with pytest.raises(DataError, match="NaN"):
        qc.interval_coverage([math.nan], [0.5], [0.3])


def test_review_rates_by_hand():
    true = [0.5, 0.6, 0.9, 0.95, 0.65]  # failures (< .7): images 0, 1, 4
    got = qc.review_rates([True, False, True, False, True], true)
    assert got == {"catch_rate": 2 / 3, "review_rate": 3 / 5, "precision": 2 / 3}
    assert qc.review_rates([1, 1, 0, 0, 0], true, threshold=0.55) == {
        "catch_rate": 1.0,
        "review_rate": 0.4,
        "precision": 0.5,
    }
    none = qc.review_rates([False] * 5, true)
    assert none["catch_rate"] == 0.0 and none["review_rate"] == 0.0 and math.isnan(none["precision"])
    no_failure = qc.review_rates([True, False], [0.9, 0.8])
    assert math.isnan(no_failure["catch_rate"]) and no_failure["precision"] == 0.0
    with pytest.raises(DataError, match="true/false"):
        qc.review_rates([0.5, 1.0], [0.9, 0.8])


def test_quality_prediction_report_matches_references():
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import r2_score as sk_r2
    from sklearn.metrics import roc_auc_score

    pred, true = _seeded()
    lo, hi = pred - 0.15, pred + 0.1
    review = pred < 0.75
    r = qc.quality_prediction_report(pred, true, lo, hi, review, threshold=0.7)
    fail = true < 0.7
    assert r["n"] == 50 and r["threshold"] == 0.7 and r["failures"] == int(fail.sum())
    assert r["r2"] == pytest.approx(sk_r2(true, pred), abs=1e-12)
    assert r["pearson"] == pytest.approx(pearsonr(pred, true).statistic, abs=1e-12)
    assert r["spearman"] == pytest.approx(spearmanr(pred, true).statistic, abs=1e-12)
    assert r["mae"] == pytest.approx(np.mean(np.abs(pred - true)), abs=1e-12)
    assert r["failure_auroc"] == pytest.approx(roc_auc_score(fail, -pred), abs=1e-12)
    # referral lowest predicted first = the QC curve of 1 − predicted
    assert r["d_auc"] == pytest.approx(qc.d_auc(torch.from_numpy(1 - pred), torch.from_numpy(true)))
    order = np.argsort(pred, kind="stable")
    curve = (true.sum() + np.concatenate([[0], np.cumsum(1 - true[order])])) / 50
    np.testing.assert_allclose(r["curve"]["dice"], curve, atol=1e-12)
    np.testing.assert_allclose(r["curve"]["fraction"], np.arange(51) / 50)
    risk = 1 - true[np.argsort(-pred, kind="stable")]  # most confident (highest predicted) kept first
    assert r["aurc"] == pytest.approx(np.mean(np.cumsum(risk) / np.arange(1, 51)), abs=1e-12)
    assert r["coverage"] == pytest.approx(np.mean((lo <= true) & (true <= hi))) and r["n_interval"] == 50
    assert r["interval_width"] == pytest.approx(0.25)
    assert r["catch_rate"] == pytest.approx((review & fail).sum() / fail.sum())
    assert r["review_rate"] == pytest.approx(review.mean())
    assert r["review_precision"] == pytest.approx((review & fail).sum() / review.sum()) and r["n_review"] == 50
    # the same five numbers from dice_prediction_metrics with a threshold (without: unchanged, four and n)
    m = qc.dice_prediction_metrics(torch.from_numpy(pred), torch.from_numpy(true), threshold=0.7)
    assert {k: m[k] for k in ("r2", "pearson", "spearman", "mae", "failure_auroc")} == pytest.approx(
        {k: r[k] for k in ("r2", "pearson", "spearman", "mae", "failure_auroc")}
    )
    assert set(qc.dice_prediction_metrics(torch.from_numpy(pred), torch.from_numpy(true))) == {
        "r2",
        "pearson",
        "spearman",
        "mae",
        "n",
    }


def test_quality_prediction_report_optional_parts_and_missing_values():
    base = qc.quality_prediction_report([0.8, 0.6, 0.9], [0.85, 0.5, 0.95])
    assert not {"coverage", "interval_width", "n_interval", "catch_rate", "n_review"} & set(base)
    # NaN in the interval or the flag = that image has none: scored over the others
    r = qc.quality_prediction_report(
        [0.8, 0.6, 0.9],
        [0.85, 0.5, 0.95],
        lo=[0.7, math.nan, 0.8],
        hi=[0.9, 0.7, 0.92],
        review=[math.nan, 1.0, 0.0],
    )
    assert r["n_interval"] == 2 and r["coverage"] == 0.5 and r["interval_width"] == pytest.approx(0.16)
    assert r["n_review"] == 2 and r["catch_rate"] == 1.0 and r["review_rate"] == 0.5 and r["review_precision"] == 1.0
    # constant prediction: correlations NaN, R² by scikit-learn's rule, chance AUROC
    const = qc.quality_prediction_report([0.7, 0.7, 0.7], [0.5, 0.8, 0.9])
    assert math.isnan(const["pearson"]) and math.isnan(const["spearman"]) and const["failure_auroc"] == 0.5
    nothing = qc.quality_prediction_report([0.7], [0.9], lo=[math.nan], hi=[math.nan], review=[math.nan])
    assert nothing["n_interval"] == 0 and math.isnan(nothing["coverage"]) and math.isnan(nothing["catch_rate"])
    with pytest.raises(DataError, match="both ends"):
        qc.quality_prediction_report([0.7], [0.9], lo=[0.5])
    with pytest.raises(DataError, match="at least one"):
        qc.quality_prediction_report([], [])
    with pytest.raises(DataError, match="values"):
        qc.quality_prediction_report([0.7, 0.8], [0.9, 0.5], review=[True])
    assert {"failure_auroc", "interval_coverage", "review_rates", "quality_prediction_report"} <= set(METRICS.names())
