"""The evaluation suite: streamed results equal direct computations; every section is filled."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from trustseg.engine.suite import EvaluationSuite, SuiteConfig, _PooledPearson
from trustseg.metrics.calibration import calibration_metrics, soft_label
from trustseg.metrics.overlap import dice, majority_vote


def _case(seed: int, K: int = 3, R: int = 3, size: int = 24):
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(R, size, size, dtype=torch.long)
    for r in range(R):
        a = 6 + int(torch.randint(0, 3, (1,), generator=g))
        labels[r, a : 18 - r, a:18] = 1
        labels[r, 10 : 13 + r, 10:13] = 2 if K > 2 else 1
    logits = torch.randn(K, size, size, generator=g) + 4 * torch.nn.functional.one_hot(labels[0], K).movedim(-1, 0)
    probs = torch.softmax(logits, 0)
    samples = torch.softmax(logits[None] + torch.randn(4, K, size, size, generator=g), 1)
    return probs, labels, samples


def test_pooled_pearson_matches_scipy():
    rng = np.random.default_rng(0)
    pp = _PooledPearson()
    xs, ys = [], []
    for _ in range(3):
        x = rng.normal(size=50)
        y = 0.5 * x + rng.normal(size=50)
        pp.update(torch.from_numpy(x), torch.from_numpy(y))
        xs.append(x)
        ys.append(y)
    assert pp.value() == pytest.approx(stats.pearsonr(np.concatenate(xs), np.concatenate(ys))[0], abs=1e-10)


def test_suite_sections_and_streamed_calibration_equal_one_shot():
    classes = ["background", "organ", "lesion"]
    suite = EvaluationSuite(classes, num_raters=3, cfg=SuiteConfig())
    all_probs, all_maj = [], []
    for seed in range(4):
        probs, labels, samples = _case(seed)
        ent = -(probs * probs.clamp_min(1e-12).log()).sum(0)
        row = suite.add_case(
            f"c{seed}",
            probs,
            labels,
            spacing=(1.0, 1.0),
            maps={"entropy": ent, "confidence": probs.max(0).values},
            samples=samples,
        )
        maj = majority_vote(labels, 3)
        d = dice(probs.argmax(0), maj, 3, empty="nan")
        assert row["dice_majority"] == pytest.approx(float(torch.nanmean(d)))
        assert 0 <= row["ged_iou"] and math.isfinite(row["entropy/pixel_pearson"])
        all_probs.append(probs)
        all_maj.append(maj)
    res = suite.result()
    # calibration streamed over cases equals one shot over the concatenated voxels
    one_shot = calibration_metrics(torch.cat(all_probs, 1), torch.cat(all_maj, 0))
    assert res["calibration"]["majority"]["ece_toplabel"] == pytest.approx(one_shot["ece_toplabel"], abs=1e-9)
    assert res["calibration"]["majority"]["nll"] == pytest.approx(one_shot["nll"], rel=1e-6)
    assert set(res["calibration"]) == {"majority", "soft", "rater_0", "rater_1", "rater_2"}
    assert set(res["uncertainty"]) == {"entropy", "confidence"}
    assert "image_spearman" in res["uncertainty"]["entropy"]
    assert set(res["quality_control"]) >= {"entropy:mean", "entropy:fg_mean"}
    curve = res["quality_control"]["entropy:mean"]["curve"]
    assert curve["dice"][-1] == pytest.approx(1.0) and len(curve["fraction"]) == len(curve["ideal"])
    # Dice predicted from the score (linear, leave-one-out) against the QC Dice of the case rows
    from trustseg.metrics.quality_control import dice_prediction_metrics, loo_linear_dice

    rows = [r for r in suite.rows() if "entropy:mean" in r]
    score = torch.tensor([r["entropy:mean"] for r in rows], dtype=torch.float64)
    truth = torch.tensor([r["dice_qc"] for r in rows], dtype=torch.float64)
    expected = dice_prediction_metrics(loo_linear_dice(score, truth), truth)
    got = res["quality_control"]["entropy:mean"]["dice_prediction_loo"]
    assert got["n"] == 4 and got["mae"] == pytest.approx(expected["mae"])
    assert got["r2"] == pytest.approx(expected["r2"]) or (math.isnan(got["r2"]) and math.isnan(expected["r2"]))
    assert res["summary"]["ged_iou"] >= 0 and res["cases"] == ["c0", "c1", "c2", "c3"]
    assert soft_label is not None


def test_suite_rejects_mismatched_shapes_and_nan_maps():
    suite = EvaluationSuite(["bg", "fg"], num_raters=2)
    probs = torch.full((2, 8, 8), 0.5)
    with pytest.raises(ValueError, match="do not match"):
        suite.add_case("x", probs, torch.zeros(2, 8, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="non-finite"):
        suite.add_case(
            "y", probs, torch.zeros(2, 8, 8, dtype=torch.long), maps={"entropy": torch.full((8, 8), math.nan)}
        )
