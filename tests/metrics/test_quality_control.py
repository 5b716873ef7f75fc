"""Quality-control curves, d-AUC, AURC and E-AURC on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trustseg.core.errors import DataError
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
