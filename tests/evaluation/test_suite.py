"""The evaluation suite: streamed results equal direct computations, every section is filled, names are checked."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from trustseg.core.errors import DataError
from trustseg.data.targets import majority_vote
from trustseg.evaluation import SUITE, CaseInputError, EvaluationSuite, SuiteConfig, flatten
from trustseg.evaluation.components.uncertainty import pooled_pearson, pooled_sums
from trustseg.metrics.calibration import calibration_metrics
from trustseg.metrics.overlap import dice


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


def _maps(probs):
    return {"entropy": -(probs * probs.clamp_min(1e-12).log()).sum(0), "confidence": probs.max(0).values}


def test_pooled_pearson_matches_scipy():
    rng = np.random.default_rng(0)
    sums, xs, ys = torch.zeros(6, dtype=torch.float64), [], []
    for _ in range(3):
        x = rng.normal(size=50)
        y = 0.5 * x + rng.normal(size=50)
        sums = sums + pooled_sums(torch.from_numpy(x), torch.from_numpy(y))
        xs.append(x)
        ys.append(y)
    assert pooled_pearson(sums) == pytest.approx(stats.pearsonr(np.concatenate(xs), np.concatenate(ys))[0], abs=1e-10)
    assert math.isnan(pooled_pearson(pooled_sums(torch.ones(5), torch.arange(5.0))))  # constant input


def test_suite_sections_and_streamed_calibration_equal_one_shot():
    classes = ["background", "organ", "lesion"]
    suite = EvaluationSuite(classes, 3, cfg=SuiteConfig())
    all_probs, all_maj = [], []
    for seed in range(4):
        probs, labels, samples = _case(seed)
        row = suite.add_case(f"c{seed}", probs, labels, spacing=(1.0, 1.0), maps=_maps(probs), samples=samples)
        maj = majority_vote(labels, 3)
        d = dice(probs.argmax(0), maj, 3, empty="nan")
        assert row["dice"]["majority"]["mean"] == pytest.approx(float(torch.nanmean(d)))
        assert row["sqrt_ged2_iou"]["raters"]["all"] == pytest.approx(math.sqrt(row["ged2_iou"]["raters"]["all"]))
        all_probs.append(probs)
        all_maj.append(maj)
    res = suite.result()
    # calibration streamed over cases equals one shot over the concatenated voxels
    one_shot = calibration_metrics(torch.cat(all_probs, 1), torch.cat(all_maj, 0))
    assert res["calibration"]["majority"]["ece_toplabel"] == pytest.approx(one_shot["ece_toplabel"], abs=1e-9)
    assert res["calibration"]["majority"]["nll"] == pytest.approx(one_shot["nll"], rel=1e-6)
    assert res["summary"]["ece_toplabel"]["majority"]["all"] == res["calibration"]["majority"]["ece_toplabel"]
    assert set(res["calibration"]) == {"majority", "soft", "rater_0", "rater_1", "rater_2"}
    assert set(res["uncertainty"]) == {"entropy", "one_minus_confidence"}  # the oriented name of confidence
    assert "image_spearman" in res["uncertainty"]["entropy"]
    assert set(res["quality_control"]["entropy"]) == {"mean", "fg_mean"}
    curve = res["quality_control"]["entropy"]["mean"]["curve"]
    assert curve["dice"][-1] == pytest.approx(1.0) and len(curve["fraction"]) == len(curve["ideal"])
    assert res["quality_control"]["entropy"]["mean"]["dice_prediction_loo"]["n"] == 4
    assert res["cases"] == ["c0", "c1", "c2", "c3"] and res["num_cases"] == 4
    assert res["summary"]["ged2_iou"]["raters"]["all"] == pytest.approx(
        np.mean([r["ged2_iou"]["raters"]["all"] for r in suite.rows()])
    )
    assert res["higher_is_better"]["hd95"] is False and res["higher_is_better"]["dice"] is True


def test_merge_of_halves_equals_the_whole():
    classes = ["background", "organ", "lesion"]
    whole, first, second = (EvaluationSuite(classes, 3) for _ in range(3))
    for seed in range(6):
        probs, labels, samples = _case(seed)
        kw = {"spacing": (1.0, 2.0), "maps": _maps(probs), "samples": samples}
        whole.add_case(f"c{seed}", probs, labels, **kw)
        (first if seed < 3 else second).add_case(f"c{seed}", probs, labels, **kw)
    a, b = flatten(whole.result()), flatten(first.merge(second).result())
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert (
            (v == b[k]) or (isinstance(v, float) and math.isnan(v) and math.isnan(b[k])) or v == pytest.approx(b[k])
        ), k


def test_every_registered_component_declares_its_metrics():
    probs, labels, samples = _case(0)
    suite = EvaluationSuite(["background", "organ", "lesion"], 3)
    img = torch.randn(1, *probs.shape[1:])
    row = suite.add_case("c", probs, labels, maps=_maps(probs), samples=samples, image=img)
    declared = suite.higher_is_better()
    assert set(row) - {"case"} <= set(declared)
    assert {c.name for c in suite.components} | {a.name for a in suite.analyses} == set(SUITE.names())
    for entry in SUITE:
        assert entry.meta["kind"] in ("case", "dataset") and isinstance(entry.meta["requires"], frozenset)


def test_suite_rejects_mismatched_shapes_and_nan_maps_with_structured_errors():
    suite = EvaluationSuite(["bg", "fg"], 2)
    probs = torch.full((2, 8, 8), 0.5)
    with pytest.raises(CaseInputError, match="do not match") as err:
        suite.add_case("x", probs, torch.zeros(2, 8, 9, dtype=torch.long))
    assert (err.value.case_id, err.value.source) == ("x", "probs")
    with pytest.raises(CaseInputError, match="non-finite") as err:
        suite.add_case(
            "y", probs, torch.zeros(2, 8, 8, dtype=torch.long), maps={"entropy": torch.full((8, 8), math.nan)}
        )
    assert (err.value.source, err.value.measure) == ("map", "entropy")
    bad = probs.clone()
    bad[0, 0, 0] = 0.9  # sums to 1.4: the calibration component's own check, reported as the probabilities
    with pytest.raises(CaseInputError) as err:
        suite.add_case("z", bad, torch.zeros(2, 8, 8, dtype=torch.long))
    assert err.value.source == "probs" and "case z" in str(err.value)
    assert suite.rows() == []


@pytest.mark.parametrize("name", ["kidney/left", "mean", "majority"])
def test_class_and_rater_names_that_would_corrupt_keys_are_rejected(name):
    with pytest.raises(DataError, match="dataset.json: class name"):
        EvaluationSuite(["background", name], 2, names_from="data/dataset.json")
    with pytest.raises(DataError, match="rater name"):
        EvaluationSuite(["background", "organ"], ["r0", name])


def test_a_class_named_with_a_colon_no_longer_makes_quality_control_scores():
    """Review 3.4: ``kidney:left`` turned 13 per-class metrics into bogus QC scores when keys were parsed."""
    suite = EvaluationSuite(["background", "kidney:left", "lesion"], 3)
    for seed in range(4):
        probs, labels, samples = _case(seed)
        suite.add_case(f"c{seed}", probs, labels, maps={"entropy": _maps(probs)["entropy"]}, samples=samples)
    res = suite.result()
    assert set(res["quality_control"]) == {"entropy"} and set(res["quality_control"]["entropy"]) == {"mean", "fg_mean"}
    assert res["mean"]["dice"]["majority"]["kidney:left"] == pytest.approx(
        np.mean([r["dice"]["majority"]["kidney:left"] for r in suite.rows()])
    )
