"""CURVAS metrics: hand-derived challenge-mode values, properscoring CRPS, MONAI's Dice read row-wise."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import properscoring
import pytest
import scipy
import torch
from monai.metrics import DiceMetric
from scipy.integrate import quad
from scipy.interpolate import interp1d
from scipy.stats import norm
from torchmetrics.classification import MulticlassCalibrationError

from trustseg.core.errors import DataError
from trustseg.metrics import METRICS, curvas, overlap
from trustseg.metrics.calibration import calibration_metrics
from trustseg.metrics.calibration_state import calibration_state, reliability_from_state


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
    assert curvas.consensus_dice(~empty, labels, 1, mode="challenge") == 0.0  # no valid row: 0, as the script


@pytest.mark.parametrize("predicted", [True, False])
def test_challenge_dice_without_consensus_row_is_zero_as_monai(predicted):
    # One rater lacks the organ: no voxel is consensus foreground, every row is ignored (NaN) by MONAI, and its
    # "mean" reduction then returns 0: the script counts the organ as Dice 0 (review F1).
    g = torch.Generator().manual_seed(4)
    labels = (torch.rand(3, 3, 5, 6, generator=g) < 0.6).long()
    labels[1] = 0
    pred = (torch.rand(3, 5, 6, generator=g) < 0.5) if predicted else torch.zeros(3, 5, 6, dtype=torch.bool)
    fg, _, dis = curvas.consensus_regions(labels, 1)
    assert not bool(fg.any())
    metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=True)
    metric((pred & ~dis).to(torch.uint8), fg.to(torch.uint8))
    assert float(metric.aggregate()) == 0.0
    assert curvas.consensus_dice(pred, labels, 1, mode="challenge") == 0.0
    # volumetric mode keeps its own policy: 0 when something is predicted outside the dissensus, else `empty`
    vol = curvas.consensus_dice(pred, labels, 1)
    assert vol == 0.0 if bool((pred & ~dis).any()) else math.isnan(vol)


def test_volumetric_dice_is_the_overlap_consensus_dice():
    # one implementation: the CURVAS volumetric Dice of organ c is overlap.consensus_dice's class-c entry
    g = torch.Generator().manual_seed(8)
    for _ in range(20):
        labels = torch.randint(0, 4, (3, 4, 5, 6), generator=g)
        labels[:, :2] = labels[0, :2]
        pred = torch.randint(0, 4, (4, 5, 6), generator=g)
        ref = overlap.consensus_dice(pred, labels, 4, empty="nan")
        for c in (1, 2, 3):
            assert curvas.consensus_dice(pred == c, labels, c) == pytest.approx(float(ref[c - 1]), nan_ok=True)


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


# -- challenge mode vs the official script: the documented differences (docs/metrics_calibration.md) ----------
def _script_crps(x, mu, sigma):
    """The script's CRPS as it computes it: interp1d CDF, Heaviside via sign, scipy quad over μ ± 3σ."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quad's IntegrationWarning (subdivisions exhausted); σ = 0: NaN grid
        dist = norm(loc=mu, scale=sigma)
        grid = np.linspace(dist.ppf(0.01), dist.ppf(0.99), 100)
        cdf = interp1d(grid, dist.cdf(grid), bounds_error=False, fill_value=(0, 1))
        return quad(lambda v: (cdf(v) - 0.5 * (np.sign(v - x) + 1)) ** 2, mu - 3 * sigma, mu + 3 * sigma)[0]


def _script_ece(organ_probs, gt):
    """The script's ECE: background 1 − Σ organs in the input dtype, torchmetrics, 4 classes, 50 bins."""
    full = torch.cat([1 - organ_probs.sum(0, keepdim=True), organ_probs])
    return float(MulticlassCalibrationError(num_classes=4, n_bins=50)(full.reshape(4, -1).T, gt.reshape(-1)))


def test_script_crps_quad_is_inexact_and_sigma_zero_depends_on_scipy():
    # F2: quad on the discontinuous integrand misses the exact value (which test_crps_challenge_matches_fine_
    # integration checks piece by piece) by more than rounding, up to ~1e-3 relative in small cases.
    for x, mu, sigma in [(1000.0, 1010.0, 30.0), (31.3, 30.0, 2.0)]:
        exact = curvas.crps_challenge(x, mu, sigma)
        assert 1e-7 < abs(_script_crps(x, mu, sigma) - exact) / exact < 2e-3
    # F3: σ = 0 makes the script's grid NaN; scipy >= 1.17 returns 0 for an empty interval, older scipy NaN.
    script = _script_crps(5.0, 5.0, 0.0)
    if tuple(int(v) for v in scipy.__version__.split(".")[:2]) >= (1, 17):
        assert script == 0.0
    else:
        assert math.isnan(script)
    assert curvas.crps_challenge(5.0, 5.0, 0.0) == 0.0


def test_script_ece_softmaxes_everything_when_float32_organs_sum_above_one():
    # F5: one voxel whose float32 organ probabilities sum to 1 + 2^-23 (0.5 and 0.5 + 2 ulp) makes the script's
    # background −1.2e-7; torchmetrics then reads all inputs as logits and softmaxes every voxel. trustseg clips
    # that background to 0.
    g = torch.Generator().manual_seed(2)
    logits = 8 * torch.randn(4, 2, 6, 6, generator=g)
    organ = (0.999 * torch.softmax(logits.double(), 0)[1:]).float()  # Σ organs < 1 everywhere ...
    gt = logits.argmax(0)
    organ[:, 0, 0, 0] = torch.tensor([0.5, 0.50000012, 0.0])  # ... except at this voxel
    background = 1 - organ.sum(0)
    assert float(background[0, 0, 0]) < 0 and bool((background.flatten()[1:] > 0).all())
    ours = curvas.curvas_metrics(organ, gt[None], includes_background=False, mode="challenge")["ece"][0]
    full = torch.cat([1 - organ.sum(0, keepdim=True), organ]).reshape(4, -1).T
    softmaxed = MulticlassCalibrationError(num_classes=4, n_bins=50)(torch.softmax(full, 1), gt.reshape(-1))
    assert _script_ece(organ, gt) == pytest.approx(float(softmaxed), abs=1e-7)
    assert _script_ece(organ, gt) - ours > 0.1
    clipped = torch.cat([background.clamp_min(0)[None], organ]).reshape(4, -1).T  # what trustseg scores
    intended = MulticlassCalibrationError(num_classes=4, n_bins=50)(clipped, gt.reshape(-1))
    assert ours == pytest.approx(float(intended), abs=1e-6)


def test_torchmetrics_bins_float32_edges_below_b_over_n_one_bin_higher():
    # F7: float32(0.7) = 0.69999999 equals torchmetrics' float32 edge 35 and goes to its bin 35; trustseg compares
    # with the exact 35/50 and puts it in bin 34 with the 0.69 voxels. 100 hits at 0.7, 100 misses at 0.69:
    # separate bins give ½(1 − 0.7) + ½ 0.69 = 0.495, one merged bin |0.5 − 0.695| = 0.195.
    conf32 = torch.tensor([0.7] * 100 + [0.69] * 100, dtype=torch.float32)
    y = torch.tensor([1] * 100 + [0] * 100)
    for conf, merged in ((conf32, True), (torch.tensor([0.7] * 100 + [0.69] * 100, dtype=torch.float64), False)):
        probs = torch.stack([1 - conf, conf])
        tm = float(MulticlassCalibrationError(num_classes=2, n_bins=50)(probs.T, y))
        ours = calibration_metrics(probs, y, bins=50, closed="torchmetrics", classes=False)["ece_toplabel"]
        assert tm == pytest.approx(0.495, abs=1e-6)
        assert ours == pytest.approx(0.195 if merged else 0.495, abs=1e-6)
    # the float32 confidences binned differently are exactly torchmetrics' float32 edges e_k below k/50
    edges = torch.linspace(0, 1, 51)
    below = [k for k in range(1, 50) if Fraction(float(edges[k])) < Fraction(k, 50)]
    assert len(below) == 31 and 35 in below
    for k in range(1, 50):
        one = edges[k : k + 1]  # one voxel, foreground probability e_k
        state = calibration_state(one, torch.ones(1, dtype=torch.long), binary=True, bins=50, closed="torchmetrics")
        ours = int(reliability_from_state(state, 50, "torchmetrics", "foreground")["count"].argmax())
        theirs = int(torch.bucketize(one, edges, right=True)) - 1
        assert theirs == k and ours == (k - 1 if k in below else k)


def test_torchmetrics_float32_bin_sums_drift_on_repeated_confidences():
    # F6: torchmetrics sums each bin in float32; 20 000 equal confidences 0.95 drift by ~1e-5 from the exact
    # bin mean, which trustseg keeps (float64 sums). The exact ECE is |accuracy − float32(0.95)|.
    n = 20_000
    conf = torch.full((n,), 0.95)
    y = (torch.rand(n, generator=torch.Generator().manual_seed(0)) < 0.9).long()
    probs = torch.stack([1 - conf, conf])
    exact = abs(float(y.double().mean()) - float(conf[0]))
    tm = float(MulticlassCalibrationError(num_classes=2, n_bins=50)(probs.T, y))
    ours = calibration_metrics(probs, y, bins=50, closed="torchmetrics", classes=False)["ece_toplabel"]
    assert ours == pytest.approx(exact, abs=1e-12)
    assert 1e-6 < abs(tm - exact) < 1e-4
