"""Calibration metrics against torchmetrics, MONAI, scikit-learn and hand-computed cases.

Every test runs twice: on the compiled kernel (skipped where it is not built) and on the pure-torch path.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import CalibrationErrorMetric
from monai.metrics.calibration import calibration_binning
from sklearn.metrics import brier_score_loss, log_loss
from torchmetrics.functional.classification import binary_calibration_error, multiclass_calibration_error

from trustseg.core.errors import DataError
from trustseg.metrics import METRICS, calibration_kernel
from trustseg.metrics import calibration as cal


@pytest.fixture(autouse=True, params=["kernel", "torch"])
def backend(request, monkeypatch):
    """Run the test on one backend: "kernel" needs the compiled kernel; "torch" hides it."""
    if request.param == "kernel" and not calibration_kernel.available():
        pytest.skip(f"compiled calibration kernel: {calibration_kernel.why_unavailable()}")
    if request.param == "torch":
        monkeypatch.setattr(calibration_kernel, "available", lambda: False)
    return request.param


def _multi(k=4, sp=(6, 10, 12), seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(scale * torch.randn(k, *sp, generator=g), 0)
    y = torch.randint(0, k, sp, generator=g)
    return p, y


def _binary(sp=(7, 9, 11), seed=1):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(sp, generator=g)
    y = (torch.rand(sp, generator=g) < p).long()
    return p, y


@pytest.mark.parametrize("bins", [5, 15])
def test_toplabel_matches_torchmetrics_multiclass(bins):
    p, y = _multi()
    flat_p, flat_y = p.reshape(4, -1).T, y.reshape(-1)
    m = cal.calibration_metrics(p, y, bins=bins)
    ref_l1 = multiclass_calibration_error(flat_p, flat_y, num_classes=4, n_bins=bins, norm="l1")
    ref_max = multiclass_calibration_error(flat_p, flat_y, num_classes=4, n_bins=bins, norm="max")
    assert m["ece_toplabel"] == pytest.approx(float(ref_l1), abs=1e-6)
    assert m["mce_toplabel"] == pytest.approx(float(ref_max), abs=1e-6)
    assert cal.ece_toplabel(p, y, bins=bins) == pytest.approx(float(ref_l1), abs=1e-6)


def test_foreground_ece_matches_torchmetrics_binary():
    p, y = _binary()
    for norm, key in (("l1", "ece_foreground"), ("max", "mce_foreground")):
        ref = binary_calibration_error(p, y, n_bins=15, norm=norm)
        m = cal.calibration_metrics(p, y, binary=True)
        assert m[key] == pytest.approx(float(ref), abs=1e-6)
    assert cal.ece_foreground(p, y) == pytest.approx(float(binary_calibration_error(p, y, n_bins=15)), abs=1e-6)


def test_classwise_matches_monai():
    p, y = _multi(k=3)
    onehot = torch.nn.functional.one_hot(y, 3).movedim(-1, 0)[None].float()
    # right=True is MONAI's [lo, hi) binning (its default right=False bins are (lo, hi]).
    for reduction, key in (("expected", "ece_classwise_per_class"), ("maximum", "mce_classwise_per_class")):
        kw = dict(calibration_reduction=reduction, metric_reduction="none", right=True)
        metric = CalibrationErrorMetric(num_bins=10, **kw)
        metric(p[None], onehot)
        ref = metric.aggregate()[0]
        got = torch.tensor(cal.calibration_metrics(p, y, bins=10)[key], dtype=torch.float64)
        torch.testing.assert_close(got, ref.double(), atol=1e-6, rtol=0)
    metric = CalibrationErrorMetric(num_bins=10, right=True)
    metric(p[None], onehot)
    assert cal.ece_classwise(p, y, bins=10) == pytest.approx(float(metric.aggregate()), abs=1e-6)


def test_reliability_matches_monai_binning_and_right_closed_convention():
    p, y = _multi(k=2, sp=(40, 40))
    onehot = torch.nn.functional.one_hot(y, 2).movedim(-1, 0)[None].float()
    mean_p, mean_gt, counts = calibration_binning(p[None], onehot, num_bins=8, right=True)
    rel = cal.reliability_diagram(p, y, bins=8, convention="classwise")
    torch.testing.assert_close(rel["count"], counts[0].double())
    torch.testing.assert_close(rel["confidence"], mean_p[0].double(), atol=1e-6, rtol=0, equal_nan=True)
    torch.testing.assert_close(rel["accuracy"], mean_gt[0].double(), atol=1e-6, rtol=0, equal_nan=True)


def test_edge_conventions_hand_computed():
    # Two bins; confidences exactly on the edges 0.5 and 1.0 (foreground convention).
    p = torch.tensor([0.5, 0.25, 1.0, 0.75])
    y = torch.tensor([1, 0, 1, 0])
    left = cal.reliability_diagram(p, y, bins=2, binary=True, convention="foreground", closed="left")
    right = cal.reliability_diagram(p, y, bins=2, binary=True, convention="foreground", closed="right")
    tmx = cal.reliability_diagram(p, y, bins=2, binary=True, convention="foreground", closed="torchmetrics")
    assert left["count"].tolist() == [1, 3]  # [0, .5) ∪ [.5, 1]
    assert right["count"].tolist() == [2, 2]  # [0, .5] ∪ (.5, 1]
    assert tmx["count"].tolist() == [1, 2, 1]  # [0, .5), [.5, 1), {1}
    # left: bin0 {0.25: y 0} gap .25; bin1 {.5, 1, .75; y 1, 1, 0} conf .75 acc 2/3 -> ECE = (.25 + 3 * (1/12)) / 4
    assert cal.ece_foreground(p, y, bins=2) == pytest.approx((0.25 + 0.25) / 4)
    # torchmetrics places 1.0 in its own bin: its value equals our "torchmetrics" convention.
    ref = float(binary_calibration_error(p, y, n_bins=2))
    assert cal.ece_foreground(p, y, bins=2, closed="torchmetrics") == pytest.approx(ref, abs=1e-7)
    assert cal.ece_foreground(p, y, bins=2, closed="torchmetrics") == pytest.approx((0.25 + 2 * 0.125 + 0) / 4)


def test_toplabel_and_classwise_differ_and_binary_inputs_agree():
    p, y = _binary()
    two = torch.stack([1 - p, p])
    a = cal.calibration_metrics(p, y, binary=True)
    b = cal.calibration_metrics(two, y)
    for key in ("ece_toplabel", "ece_classwise", "nll", "brier", "ece_foreground"):
        assert a[key] == pytest.approx(b[key], abs=1e-9)
    assert a["ece_toplabel"] != pytest.approx(a["ece_foreground"], abs=1e-3)


def test_nll_and_brier_match_sklearn():
    p, y = _multi(k=3, scale=1.0)
    flat = p.reshape(3, -1).T.double().numpy()
    flat = flat / flat.sum(1, keepdims=True)
    assert cal.nll(p, y) == pytest.approx(log_loss(y.reshape(-1).numpy(), flat, labels=[0, 1, 2]), rel=1e-6)
    onehot = np.eye(3)[y.reshape(-1).numpy()]
    assert cal.brier(p, y) == pytest.approx(((flat - onehot) ** 2).sum(1).mean(), rel=1e-6)
    pb, yb = _binary()
    ref = brier_score_loss(yb.reshape(-1).numpy(), pb.reshape(-1).double().numpy())
    assert cal.brier(pb, yb, binary=True, reduction="mean") == pytest.approx(ref, rel=1e-6)
    assert cal.brier(pb, yb, binary=True) == pytest.approx(2 * ref, rel=1e-6)


def test_soft_label_conventions_hand_computed():
    # One voxel, K = 2, p = (0.3, 0.7), soft label ȳ = (0.5, 0.5).
    p = torch.tensor([[0.3], [0.7]])
    ybar = torch.tensor([[0.5], [0.5]])
    m = cal.calibration_metrics(p, ybar, bins=10)
    assert m["ece_toplabel"] == pytest.approx(abs(0.5 - 0.7))  # accuracy = ȳ at argmax
    assert m["ece_classwise"] == pytest.approx((abs(0.5 - 0.3) + abs(0.5 - 0.7)) / 2)
    assert m["nll"] == pytest.approx(-(0.5 * math.log(0.3) + 0.5 * math.log(0.7)), rel=1e-6)
    assert m["brier"] == pytest.approx(0.2**2 + 0.2**2, rel=1e-6)


def test_vs_raters_soft_equals_mean_of_onehots():
    p, _ = _multi(k=3, sp=(5, 6))
    raters = torch.stack([_multi(k=3, sp=(5, 6), seed=s)[1] for s in (1, 2, 3)])
    out = cal.calibration_vs_raters(p, raters)
    assert set(out) == {"rater_0", "rater_1", "rater_2", "soft"}
    assert out["rater_1"]["ece_toplabel"] == pytest.approx(cal.ece_toplabel(p, raters[1]))
    # NLL is linear in the label: soft-label NLL = mean of the per-rater NLLs.
    assert out["soft"]["nll"] == pytest.approx(np.mean([out[f"rater_{r}"]["nll"] for r in range(3)]), rel=1e-6)
    # Brier is quadratic: mean_r Brier_r = Brier(soft) + mean over voxels of Σ_k Var_r(y_rk).
    onehots = torch.nn.functional.one_hot(raters, 3).double()
    rater_var = onehots.var(0, unbiased=False).sum(-1).mean()
    mean_brier = np.mean([out[f"rater_{r}"]["brier"] for r in range(3)])
    assert mean_brier == pytest.approx(out["soft"]["brier"] + float(rater_var), rel=1e-6)


def test_one_rater_and_identical_raters():
    p, y = _multi(k=3, sp=(4, 5))
    one = cal.calibration_vs_raters(p, y[None])
    assert one["soft"]["ece_toplabel"] == pytest.approx(one["rater_0"]["ece_toplabel"])
    same = cal.calibration_vs_raters(p, torch.stack([y, y]))
    assert same["soft"]["ece_classwise"] == pytest.approx(same["rater_1"]["ece_classwise"])


def test_streaming_chunks_equal_one_shot_and_merge_equals_union():
    p, y = _multi(k=3, sp=(9, 11, 13))
    whole = cal.calibration_state(p, y)
    chunked = cal.calibration_state(p, y, chunk_size=97)
    for key in whole:
        torch.testing.assert_close(whole[key], chunked[key], atol=1e-9, rtol=1e-12)
    acc_a, acc_b = cal.CalibrationAccumulator(3), cal.CalibrationAccumulator(3, chunk_size=50)
    acc_a.update(p[:, :4], y[:4])
    acc_b.update(p[:, 4:], y[4:])
    merged = acc_a.merge(acc_b).compute()
    one_shot = cal.calibration_metrics(p, y)
    for key, value in one_shot.items():
        assert merged[key] == pytest.approx(value, abs=1e-12), key


def test_batched_equals_concatenation():
    p, y = _multi(k=3, sp=(2, 6, 7))
    batched = cal.calibration_metrics(p.movedim(1, 0), y, batched=True)
    acc = cal.CalibrationAccumulator(3)
    for b in range(2):
        acc.update(p[:, b], y[b])
    assert batched["ece_toplabel"] == pytest.approx(acc.compute()["ece_toplabel"], abs=1e-12)


def test_ace_exact_hand_computed_and_approximation():
    # Foreground class of 4 voxels, 2 equal-mass ranges: {0.1, 0.2} with labels {0, 1}; {0.6, 0.9} with {1, 1}.
    p = torch.tensor([0.9, 0.1, 0.6, 0.2])
    y = torch.tensor([1, 0, 1, 1])
    two = torch.stack([1 - p, p])
    # class 1: |0.5 - 0.15| and |1 - 0.75|; class 0 (p0 = .1,.4 | .8,.9 with y0 = 0,0 | 1,0): |0 - .25|, |.5 - .85|
    expected = ((0.35 + 0.25) / 2 + (0.25 + 0.35) / 2) / 2
    assert cal.ace(two, y, bins=2) == pytest.approx(expected, abs=1e-7)
    q, z = _multi(k=3, sp=(20, 30, 30), scale=1.0)
    approx = cal.calibration_metrics(q, z)["ace_classwise_approx"]
    assert approx == pytest.approx(cal.ace(q, z), abs=2e-3)
    top = cal.calibration_metrics(q, z)["ace_toplabel_approx"]
    assert top == pytest.approx(cal.ace(q, z, convention="toplabel"), abs=2e-3)


def test_errors_name_the_problem():
    p, y = _multi(k=3, sp=(4, 4))
    bad = p.clone()
    bad[1, 2, 3] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        cal.ece_toplabel(bad, y)
    with pytest.raises(ValueError, match="do not sum to 1"):
        cal.ece_toplabel(p * 1.1, y)
    with pytest.raises(DataError, match="labels must lie"):
        cal.ece_toplabel(p, y + 3)
    with pytest.raises(DataError, match="NaN"):
        cal.ece_foreground(torch.tensor([0.5, float("nan")]), torch.tensor([0, 1]))
    with pytest.raises(DataError, match="outside"):
        cal.ece_foreground(torch.tensor([0.5, 1.5]), torch.tensor([0, 1]))
    with pytest.raises(DataError, match="shape"):
        cal.ece_toplabel(p, y[:2])


def test_empty_foreground_label_is_fine():
    p, _ = _binary()
    m = cal.calibration_metrics(p, torch.zeros_like(p, dtype=torch.long), binary=True)
    # every voxel's accuracy is 0 in the foreground convention: ECE = mean p
    assert m["ece_foreground"] == pytest.approx(float(p.double().mean()), abs=1e-7)


def test_registered():
    for name in ("ece_toplabel", "ece_classwise", "ece_foreground", "ace", "mce_toplabel", "nll", "brier"):
        assert name in METRICS


def test_toplabel_ties_follow_first_argmax_like_torchmetrics():
    # Voxel 0: classes 0 and 1 tie at 0.4 (argmax 0, label 1 -> wrong); voxel 2: classes 1 and 2 tie (argmax 1).
    p = torch.tensor([[0.4, 0.5, 0.2, 0.25], [0.4, 0.5, 0.4, 0.25], [0.2, 0.0, 0.4, 0.25], [0.0, 0.0, 0.0, 0.25]])
    y = torch.tensor([1, 1, 2, 3])
    ref = multiclass_calibration_error(p.T, y, num_classes=4, n_bins=5)
    assert cal.ece_toplabel(p, y, bins=5) == pytest.approx(float(ref), abs=1e-7)
    soft = torch.nn.functional.one_hot(y, 4).T.float()  # the soft path uses argmax directly
    assert cal.ece_toplabel(p, soft, bins=5) == pytest.approx(float(ref), abs=1e-7)
