"""Quality-control curves, d-AUC, AURC and E-AURC on hand-computed cases."""

from __future__ import annotations

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


def test_random_curve_is_linear_and_d_auc_nonnegative():
    g = torch.Generator().manual_seed(0)
    dice, u = torch.rand(30, generator=g), torch.rand(30, generator=g)
    f, r = qc.qc_random_curve(dice)
    assert r[0] == pytest.approx(float(dice.double().mean())) and r[-1] == pytest.approx(1.0)
    assert torch.allclose(torch.diff(r), torch.diff(r)[0].expand(30))
    assert qc.d_auc(u, dice) >= 0 and qc.eaurc(u, dice) >= 0
    assert qc.d_auc(-dice, dice) == pytest.approx(0.0, abs=1e-12)


def test_errors_and_registry():
    with pytest.raises(DataError, match="NaN"):
        qc.d_auc(torch.tensor([0.1, float("nan")]), torch.tensor([0.5, 0.5]))
    with pytest.raises(DataError, match="values"):
        qc.aurc(torch.tensor([0.1]), torch.tensor([0.5, 0.5]))
    assert {"qc_curve", "d_auc", "aurc", "eaurc"} <= set(METRICS.names())
