"""One-pass counts of CURVAS, QUBIQ and sample agreement: equal to the per-metric (exact) functions, chunked or
whole, on the coded and the per-organ path, with and without a field of view, on hand cases and edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from trustseg.core.errors import DataError
from trustseg.data.targets import soft_label
from trustseg.evaluation.context import background_outside
from trustseg.metrics.curvas import curvas_from_counts, curvas_metrics
from trustseg.metrics.multirater import (
    ged,
    ged_from_gram,
    hungarian_from_gram,
    hungarian_iou,
    pairwise_overlap,
    qubiq_soft_dice,
)
from trustseg.metrics.multirater_counts import case_counts, qubiq_from_counts, sample_gram

CURVAS_KEYS = ("dice", "confidence", "crps", "predicted_volume", "mu", "sigma")


def _case(seed, k=3, r=3, shape=(5, 6, 7), fov=False, agree_rows=True):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(3 * torch.randn(k, *shape, generator=g), 0)
    probs[:, 0, 0, :3] = torch.eye(k)[0][:, None]  # confidence exactly 1: torchmetrics' extra bin
    labels = torch.randint(0, k, (r, *shape), generator=g)
    if agree_rows:
        labels[:, 1] = labels[0, 1].clone()  # consensus rows
    valid = None
    if fov:
        valid = torch.rand(shape, generator=g) < 0.75
        probs, labels = background_outside(probs, ~valid), labels.masked_fill(~valid, 0)
    return probs, labels, valid


def _close(a, b, rel=1e-12):
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= rel * max(1.0, abs(a))


def _assert_curvas_equal(ref, new, organs):
    for c in organs:
        for key in CURVAS_KEYS:
            assert _close(ref[str(c)][key], new[str(c)][key]), (c, key, ref[str(c)][key], new[str(c)][key])
    assert len(ref["ece"]) == len(new["ece"])
    for a, b in zip(ref["ece"], new["ece"]):
        assert _close(a, b)
    assert _close(ref["ece_mean"], new["ece_mean"])


@pytest.mark.parametrize("coded", [True, False])
@pytest.mark.parametrize("fov", [False, True])
@pytest.mark.parametrize(("k", "r"), [(3, 3), (4, 3), (3, 1), (2, 4)])
def test_curvas_from_counts_equals_curvas_metrics(coded, fov, k, r):
    probs, labels, valid = _case(k * 10 + r, k, r, fov=fov)
    counts = case_counts(probs, labels, valid=valid, rows=True, coded=coded, chunk=35)  # 5 rows of 7 per chunk
    for mode in ("volumetric", "challenge"):
        ref = curvas_metrics(probs, labels, mode=mode, valid=valid, spacing=(0.5, 1.0, 2.0))
        _assert_curvas_equal(ref, curvas_from_counts(counts, mode=mode, spacing=(0.5, 1.0, 2.0)), range(1, k))


def test_many_classes_and_raters_take_the_per_organ_path():
    # K^R · K · 51 · 2 bins = 3.3 M > MAX_CODED_BINS: the automatic choice counts organ by organ, same numbers
    probs, labels, valid = _case(9, 8, 4, shape=(3, 5, 6), fov=True)
    counts = case_counts(probs, labels, valid=valid, rows=True)
    for mode in ("volumetric", "challenge"):
        _assert_curvas_equal(
            curvas_metrics(probs, labels, mode=mode, valid=valid), curvas_from_counts(counts, mode=mode), range(1, 8)
        )


def test_chunked_counts_equal_whole_and_paths_agree():
    probs, labels, valid = _case(7, 4, 3, shape=(4, 9, 11), fov=True)
    whole = case_counts(probs, labels, valid=valid, rows=True, chunk=10**6, workers=1)
    for chunk, coded, workers in ((11, True, 3), (11 * 3, False, 2), (1, True, 1), (10**6, False, 2), (22, False, 5)):
        part = case_counts(probs, labels, valid=valid, rows=True, chunk=chunk, coded=coded, workers=workers)
        for name in ("organ", "qubiq", "rater_volume", "rows", "agree", "slot_count"):
            assert torch.equal(getattr(whole, name), getattr(part, name)), (name, chunk, coded)
        torch.testing.assert_close(whole.prob_sum, part.prob_sum, rtol=1e-13, atol=1e-12)
        torch.testing.assert_close(whole.slot_conf, part.slot_conf, rtol=1e-13, atol=1e-12)


def test_hand_counts():
    # one row of 4 voxels, 2 raters: fg {1, 3}, bg {0}, dissensus {2}; predicted organ {1, 2, 3}
    probs = torch.tensor([[0.9, 0.2, 0.4, 0.1], [0.1, 0.8, 0.6, 0.9]]).view(2, 1, 1, 4)
    labels = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 1]]).view(2, 1, 1, 4)
    c = case_counts(probs, labels)
    assert c.organ[0, 0].tolist() == [[1, 0], [0, 1], [0, 2]]  # (v, π): v = 0 unpredicted; v = 1, 2 predicted
    assert c.rater_volume.tolist() == [[3, 2]]
    assert c.prob_sum[0, 0].tolist() == pytest.approx([0.1, 0.6, 1.7])
    # float32 confidences 0.9, 0.8, 0.6, 0.9 -> slots 44 (float32(0.9) < 0.9), 40, 30, 44 (exact edges b / 50);
    # rater 0 agrees everywhere, rater 1 not at voxel 2
    assert {i: n for i, n in enumerate(c.slot_count.tolist()) if n} == {30: 1, 40: 1, 44: 2}
    assert c.agree[0].sum() == 4 and c.agree[1].sum() == 3 and c.agree[1, 30] == 0
    # QUBIQ: votes (0, 2, 1, 2); float32 p_1 = (0.1, 0.8, 0.6, 0.9) lie above, at and below the thresholds as
    # float32(0.1) > 0.1, float32(0.8) > 0.8, float32(0.6) > 0.6, float32(0.9) < 0.9: β = (1, 8, 6, 8)
    assert c.qubiq[0, 2].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 2, 0] and c.qubiq[0, 1, 6] == 1
    assert c.qubiq[0, 0, 1] == 1


def test_ece_slots_match_torchmetrics_and_float32_edges():
    # challenge ECE = torchmetrics (extra bin for confidence 1) up to the documented float32-edge difference
    probs, labels, _ = _case(3, 4, 3, shape=(3, 8, 8))
    counts = case_counts(probs, labels, rows=True)
    out = curvas_from_counts(counts, mode="challenge")
    for r in range(3):
        tm = MulticlassCalibrationError(num_classes=4, n_bins=50)(probs.reshape(4, -1).T, labels[r].reshape(-1))
        assert out["ece"][r] == pytest.approx(float(tm), abs=1e-6)
    # float32(0.7) < 0.7 lies in bin 34 (the exact edges), as calibration_metrics bins it
    conf = torch.tensor([0.7] * 10 + [0.69] * 10, dtype=torch.float32)
    p = torch.stack([1 - conf, conf]).view(2, 1, 1, 20)
    y = torch.tensor([1] * 10 + [0] * 10).view(1, 1, 1, 20)
    c = case_counts(p, y, rows=True)
    assert c.slot_count[34] == 20 and c.slot_count[35] == 0
    ref = curvas_metrics(p, y, mode="challenge")
    assert curvas_from_counts(c, mode="challenge")["ece"][0] == pytest.approx(ref["ece"][0], abs=1e-12)


def test_absent_organ_one_rater_identical_raters():
    probs, labels, _ = _case(5, 3, 3, agree_rows=False)
    labels[labels == 2] = 0  # nobody marks organ 2
    labels[1, labels[1] == 1] = 0  # rater 1 lacks organ 1: no consensus foreground
    for r in (labels, labels[:1], torch.stack([labels[0]] * 3)):
        counts = case_counts(probs, r, rows=True)
        for mode in ("volumetric", "challenge"):
            _assert_curvas_equal(curvas_metrics(probs, r, mode=mode), curvas_from_counts(counts, mode=mode), (1, 2))
    out = curvas_from_counts(case_counts(probs, labels, rows=True), mode="challenge")
    assert out["1"]["dice"] == 0.0 and math.isnan(out["1"]["confidence"]) and out["2"]["mu"] == 0.0


@pytest.mark.parametrize("r", [3, 10])
def test_qubiq_from_counts_equals_qubiq_soft_dice(r):
    g = torch.Generator().manual_seed(r)
    probs = torch.softmax(2 * torch.randn(3, 4, 5, 6, generator=g), 0)
    # values exactly at (the float32 roundings of) the thresholds: strict ">" decided as in float64
    probs[1, 0, 0, :5] = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9])
    probs[0, 0, 0, :5] = 1 - probs[1, 0, 0, :5]
    probs[2, 0, 0, :5] = 0
    labels = torch.randint(0, 3, (r, 4, 5, 6), generator=g)
    soft = soft_label(labels, 3)
    ref = torch.stack([qubiq_soft_dice(probs[c], soft[c]) for c in (1, 2)])
    for coded in (True, False):
        got = qubiq_from_counts(case_counts(probs, labels, coded=coded, chunk=17))
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("thresholds", [(0.25, 0.5, 0.75), (0.05, 0.3, 0.3000001, 0.65), (0.1, 0.2, 0.3, 0.4)])
def test_qubiq_other_thresholds_and_dtypes(dtype, thresholds):
    # the grid i / T (first) takes the ⌈T p⌉ shortcut for float32; the others (and float64) compare
    g = torch.Generator().manual_seed(2)
    probs = torch.softmax(2 * torch.randn(2, 40, 50, generator=g), 0).to(dtype)
    probs[1, 0, : len(thresholds)] = torch.tensor(thresholds, dtype=dtype)  # exactly at the thresholds
    probs[0] = 1 - probs[1]
    labels = torch.randint(0, 2, (4, 40, 50), generator=g)
    soft = soft_label(labels, 2)
    ref = qubiq_soft_dice(probs[1], soft[1], thresholds=thresholds)
    got = qubiq_from_counts(case_counts(probs, labels, thresholds=thresholds))
    assert float(got[0]) == pytest.approx(float(ref), abs=1e-15)


def test_qubiq_empty_everywhere_is_one():
    probs = torch.zeros(2, 3, 4)
    probs[0] = 1
    labels = torch.zeros(2, 3, 4, dtype=torch.long)
    assert qubiq_from_counts(case_counts(probs, labels)).tolist() == [1.0]


@pytest.mark.parametrize(("m", "r"), [(2, 3), (5, 2), (3, 3), (1, 4)])
def test_sample_gram_ged_and_hungarian_equal_the_exact_functions(m, r):
    g = torch.Generator().manual_seed(m * 7 + r)
    k = 3
    samples = torch.softmax(2 * torch.randn(m, k, 4, 5, 6, generator=g), 1)
    samples[0, 0] = 1.0  # an empty sample mask
    samples[0, 1:] = 0.0
    labels = torch.randint(0, k, (r, 4, 5, 6), generator=g)
    labels[-1] = 0  # an empty rater mask
    gram = sample_gram(samples, labels, chunk=13)
    assert torch.equal(gram, sample_gram(samples, labels, workers=1))
    s_hard = samples.argmax(1)
    masks = torch.cat([(s_hard > 0).reshape(m, -1), (labels > 0).reshape(r, -1)])
    inter, _, _ = pairwise_overlap(masks, masks)
    assert torch.equal(gram, inter)
    ref = ged(s_hard, labels, num_classes=k)
    got = ged_from_gram(gram, m)
    for key in ("ged2", "ged", "e_d_sy", "e_d_ss", "e_d_yy"):
        torch.testing.assert_close(got[key], ref[key], rtol=0, atol=1e-15)
    torch.testing.assert_close(hungarian_from_gram(gram, m), hungarian_iou(s_hard > 0, labels > 0), rtol=0, atol=0)


def test_sample_gram_two_classes_and_ties():
    s = torch.tensor([[0.5, 0.4, 0.6], [0.5, 0.6, 0.4]]).view(1, 2, 3)  # tie at voxel 0 goes to background
    gram = sample_gram(s, torch.tensor([[1, 1, 0]]))
    assert gram.tolist() == [[1.0, 1.0], [1.0, 2.0]]
    assert np.isclose(float(hungarian_from_gram(gram, 1)), 0.5)


def test_bad_input():
    probs, labels, _ = _case(1)
    with pytest.raises(DataError, match=r"\[0, 3\)"):
        case_counts(probs, labels + 1)
    with pytest.raises(DataError, match="sum to 1"):
        case_counts(probs * 2, labels)
    with pytest.raises(DataError, match="negative"):
        bad = probs.clone()
        bad[:, 0, 0, 0] = torch.tensor([1.5, -0.5, 0.0])
        case_counts(bad, labels)
    with pytest.raises(DataError, match="row counts"):
        case_counts(probs[:, 0], labels[:, 0], rows=True)
    with pytest.raises(DataError, match="spatial shape"):
        case_counts(probs, labels[:, :2])
    with pytest.raises(DataError, match="by row"):
        curvas_from_counts(case_counts(probs, labels), mode="challenge")
