"""CURVAS metrics: hand-derived challenge-mode values, properscoring CRPS, MONAI's Dice read row-wise."""

from __future__ import annotations

import math

import numpy as np
import properscoring
import pytest
import torch
from monai.metrics import DiceMetric
from scipy.integrate import quad
from scipy.stats import norm
from torchmetrics.classification import MulticlassCalibrationError

from trustseg.core.errors import DataError
from trustseg.metrics import METRICS, curvas


def _worked_example():
    """One slice (D=1), H=3 rows, W=4; three raters; organ 1 (see docs/metrics_calibration.md)."""
    r1 = torch.tensor([[[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1]]])
    r2 = torch.tensor([[[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]]])
    r3 = torch.tensor([[[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]])
    pred = torch.tensor([[[0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]]]).bool()
    return torch.stack([r1, r2, r3]), pred


def test_consensus_regions_partition():
    labels, _ = _worked_example()
    fg, bg, dis = curvas.consensus_regions(labels, 1)
    assert fg.sum() == 4 and dis.sum() == 2 and bg.sum() == 6
    assert bool((fg.int() + bg.int() + dis.int() == 1).all())


def test_dice_worked_example_both_modes():
    labels, pred = _worked_example()
    # Dissensus voxels (1,2) and (2,3) are masked out of the prediction: P = {(1,0), (2,0), (2,1)}.
    # Volumetric: G = rows 0 and 1, cols 0-1 (4 voxels); |P∩G| = 1 -> 2·1/(3 + 4) = 2/7.
    assert curvas.consensus_dice(pred, labels, 1) == pytest.approx(2 / 7)
    # Challenge: row h=0 dropped; row 1: 2·1/(1 + 2) = 2/3; row 2: empty consensus -> ignored. Mean 2/3.
    assert curvas.consensus_dice(pred, labels, 1, mode="challenge") == pytest.approx(2 / 3)


def test_challenge_dice_equals_monai_dice_on_unbatched_volume():
    g = torch.Generator().manual_seed(3)
    labels = (torch.rand(3, 4, 6, 7, generator=g) < 0.5).long()
    labels[:, :, 2] = 0  # some rows with empty consensus
    pred = torch.rand(4, 6, 7, generator=g) < 0.5
    fg, _, dis = curvas.consensus_regions(labels, 1)
    metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=True)
    metric((pred & ~dis).to(torch.uint8), fg.to(torch.uint8))  # the script passes (D, H, W) arrays
    assert curvas.consensus_dice(pred, labels, 1, mode="challenge") == pytest.approx(float(metric.aggregate()))


def test_challenge_dice_averages_rows_per_slice_then_slices():
    # Two slices, H = 3 (row 0 dropped), W = 2, all raters identical.
    g = torch.zeros(2, 3, 2, dtype=torch.long)
    g[0, 1] = 1  # slice 0 row 1: G = {both}
    g[0, 2, 0] = 1  # slice 0 row 2: G = {col 0}
    g[1, 1, 1] = 1  # slice 1 row 1: G = {col 1}
    p = torch.zeros(2, 3, 2, dtype=torch.bool)
    p[0, 1] = True  # row Dice 1
    p[0, 2, 1] = True  # row Dice 0
    p[1, 1, 1] = True  # row Dice 1
    labels = torch.stack([g, g, g])
    # slice means 0.5 and 1 -> 0.75 (a pooled mean over the 3 rows would give 2/3)
    assert curvas.consensus_dice(p, labels, 1, mode="challenge") == pytest.approx(0.75)
    # volumetric: |P∩G| = 3, |P| = 4, |G| = 4 -> 0.75 too, by coincidence of sizes; check a row-0 voxel matters:
    g2 = g.clone()
    g2[1, 0, 0] = 1  # row 0: invisible to the challenge mode
    labels2 = torch.stack([g2, g2, g2])
    assert curvas.consensus_dice(p, labels2, 1, mode="challenge") == pytest.approx(0.75)
    assert curvas.consensus_dice(p, labels2, 1) == pytest.approx(2 * 3 / (4 + 5))


def test_dice_empty_label():
    labels = torch.zeros(3, 2, 3, 4, dtype=torch.long)
    empty = torch.zeros(2, 3, 4, dtype=torch.bool)
    assert math.isnan(curvas.consensus_dice(empty, labels, 1))
    assert curvas.consensus_dice(empty, labels, 1, empty=1.0) == 1.0
    assert curvas.consensus_dice(~empty, labels, 1) == 0.0
    assert math.isnan(curvas.consensus_dice(~empty, labels, 1, mode="challenge"))


def test_consensus_confidence_hand_computed():
    labels, _ = _worked_example()
    prob = torch.zeros(1, 3, 4)
    prob[0, :2, :2] = 0.8  # consensus foreground: mean 0.8
    prob[0, 2, 2] = 0.6  # one of six background voxels: mean 0.1
    assert curvas.consensus_confidence(prob, labels, 1) == pytest.approx(0.5 * ((1 - 0.1) + 0.8))
    assert math.isnan(curvas.consensus_confidence(prob, torch.zeros_like(labels), 1))


@pytest.mark.parametrize(
    ("x", "mu", "sigma"), [(10.0, 10.0, 1.5), (13.0, 10.0, 2.0), (-4.0, 3.0, 0.7), (1e4, 9e3, 5e2)]
)
def test_crps_gaussian_matches_properscoring(x, mu, sigma):
    assert curvas.crps_gaussian(x, mu, sigma) == pytest.approx(properscoring.crps_gaussian(x, mu, sigma), rel=1e-10)


def _challenge_by_quadrature(x, mu, sigma):
    """Independent evaluation of the challenge integrand: scipy quad on each smooth piece."""
    grid = np.linspace(norm.ppf(0.01, mu, sigma), norm.ppf(0.99, mu, sigma), 100)
    cdf = norm.cdf(grid, mu, sigma)

    def integrand(v):
        f_tilde = 0.0 if v < grid[0] else 1.0 if v > grid[-1] else np.interp(v, grid, cdf)
        return (f_tilde - float(v > x)) ** 2

    lo, hi = mu - 3 * sigma, mu + 3 * sigma
    cuts = np.unique(np.clip(np.concatenate([[lo, hi, x], grid]), lo, hi))
    return sum(quad(integrand, a, b)[0] for a, b in zip(cuts[:-1], cuts[1:]))


@pytest.mark.parametrize(("x", "mu", "sigma"), [(10.0, 10.0, 1.5), (13.0, 10.0, 2.0), (2.0, 10.0, 1.0)])
def test_crps_challenge_matches_fine_integration(x, mu, sigma):
    assert curvas.crps_challenge(x, mu, sigma) == pytest.approx(_challenge_by_quadrature(x, mu, sigma), rel=1e-9)


def test_crps_challenge_truncation_hand_derived():
    # Far below the interval, H = 1 on all of [μ−3σ, μ+3σ]: ∫ (F̃ − 1)² = ∫ (1 − F̃)²; far above: ∫ F̃².
    # By the symmetry of the interpolated normal CDF these are equal; and both are far below the exact
    # CRPS |x − μ| − σ/√π-ish values the volumetric mode gives, because the tails are cut off.
    lo, hi = curvas.crps_challenge(-1e6, 0.0, 1.0), curvas.crps_challenge(1e6, 0.0, 1.0)
    assert lo == pytest.approx(hi, rel=1e-9)
    # Outside [v_0, v_99] the integrand is 0 or 1: on [−3, v_0) it is 1 (F̃ = 0, H = 1) -> contributes 3 + v_0.
    v0 = norm.ppf(0.01)
    assert lo > 3 + v0
    assert curvas.crps_gaussian(-1e6, 0.0, 1.0) > 1e5 > lo


def test_sigma_zero_and_absent_labels():
    labels = torch.zeros(3, 2, 2, 2, dtype=torch.long)
    labels[:, 0, 0, 0] = 1  # all raters agree: one voxel -> σ = 0
    prob = torch.full((2, 2, 2), 0.25)  # V̂ = 2 voxels
    vol = curvas.volume_crps(prob, labels, 1, spacing=(2.0, 1.0, 1.0))
    assert (vol["mu"], vol["sigma"], vol["predicted_volume"]) == (2.0, 0.0, 4.0)
    assert vol["crps"] == pytest.approx(2.0)
    assert curvas.volume_crps(prob, labels, 1, mode="challenge")["crps"] == 0.0
    absent = curvas.volume_crps(prob, labels, 2)  # nobody marks organ 2
    assert (absent["mu"], absent["sigma"], absent["crps"]) == (0.0, 0.0, 2.0)


def test_volume_crps_population_std():
    labels = torch.zeros(3, 10, dtype=torch.long)
    for r, n in enumerate((2, 4, 9)):
        labels[r, :n] = 1
    prob = torch.full((10,), 0.5)
    out = curvas.volume_crps(prob, labels, 1)
    assert out["sigma"] == pytest.approx(np.std([2, 4, 9]))
    assert out["crps"] == pytest.approx(properscoring.crps_gaussian(5.0, 5.0, np.std([2, 4, 9])))


def test_curvas_metrics_one_rater_identical_raters_and_challenge_ece():
    g = torch.Generator().manual_seed(5)
    organ = torch.softmax(torch.randn(4, 3, 8, 8, generator=g), 0)[1:]  # (O=3, D, H, W); bg = 1 − Σ
    y = torch.randint(0, 4, (3, 8, 8), generator=g)
    same = curvas.curvas_metrics(organ, torch.stack([y, y, y]), includes_background=False)
    one = curvas.curvas_metrics(organ, y[None], includes_background=False)
    for c in ("1", "2", "3"):
        assert same[c]["sigma"] == 0.0 and one[c]["sigma"] == 0.0
        assert same[c]["dice"] == pytest.approx(one[c]["dice"])
    chal = curvas.curvas_metrics(organ, torch.stack([y, y, y]), includes_background=False, mode="challenge")
    full = curvas.with_background(organ)
    ref = MulticlassCalibrationError(num_classes=4, n_bins=50)(full.reshape(4, -1).T, y.reshape(-1))
    assert chal["ece"][0] == pytest.approx(float(ref), abs=1e-6)


def test_errors():
    with pytest.raises(DataError, match="sum to more than 1"):
        curvas.with_background(torch.full((3, 2, 2), 0.5))
    with pytest.raises(DataError, match="rows"):
        flat = torch.zeros(4, 4, dtype=torch.bool)
        curvas.consensus_dice(flat, torch.zeros(3, 4, 4, dtype=torch.long), 1, mode="challenge")
    assert "curvas" in METRICS
