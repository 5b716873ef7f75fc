"""The shared tester of every registered suite component (torchmetrics' MetricTester, for the suite).

For each name in ``SUITE`` (a new component is picked up automatically and must pass):

* per case = the component called directly on the case context = the suite's row;
* streaming over all cases = the merge of two suites over the halves;
* agreement with an independent reference (the known-answer case for case components; scipy, scikit-learn and
  numpy over several cases for the dataset analyses);
* NaN policy: NaN or infinite probabilities / maps are an error naming the input; empty policy: a class absent
  from every map gives NaN (never inf, never a crash) and is left out of the ``mean`` items;
* float32 and float64 inputs give the same values.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import r2_score, roc_auc_score

from tests.evaluation.test_known_answer import CLASSES, RATERS, SPACING, build_case, expected_row
from trustseg.evaluation import SUITE, CaseInputError, EvaluationSuite, SuiteConfig, flatten
from trustseg.evaluation.results import leaves

CASE = [e.name for e in SUITE if e.meta["kind"] == "case"]
DATASET = [e.name for e in SUITE if e.meta["kind"] == "dataset"]


def _cases(n: int = 6, dtype=torch.float32, empty_lesion: bool = False):
    """``n`` seeded 3D cases with 3 classes, 3 raters, samples, maps, an image and a predicted quality ``qc`` (the
    lesion absent if asked)."""
    out = []
    for seed in range(n):
        g = torch.Generator().manual_seed(seed)
        labels = torch.zeros(3, 4, 10, 10, dtype=torch.long)
        for r in range(3):
            a = 2 + int(torch.randint(0, 2, (1,), generator=g))
            labels[r, 1:3, a : 8 - r, a:8] = 1
            if not empty_lesion:
                labels[r, 1:3, 4 : 6 + r, 4:6] = 2
        logits = torch.randn(3, 4, 10, 10, generator=g) + 4 * torch.nn.functional.one_hot(labels[seed % 3], 3).movedim(
            -1, 0
        )
        if empty_lesion:
            logits[2] = -20.0
        probs = torch.softmax(logits.double(), 0)
        samples = torch.softmax(logits[None].double() + torch.randn(3, 3, 4, 10, 10, generator=g).double(), 1)
        maps = {
            "entropy": -(probs * probs.log()).sum(0),
            "confidence": probs.max(0).values,
            "variance": samples.var(0).sum(0),
        }
        image = torch.randn(1, 4, 10, 10, generator=g).double() + labels.double().mean(0)
        pred, width, score, ood_p = (float(v) for v in torch.rand(4, generator=g, dtype=torch.float64))
        pred = 0.5 + 0.5 * pred
        qc = {"predicted_dice": pred, "dice_low": pred - 0.2 * width, "dice_high": pred + 0.05, "review": pred < 0.75}
        qc.update({"uncertainty_score": score, "ood_p": ood_p, "reason": "", "target": "dice"})
        out.append(
            {
                "case_id": f"c{seed}",
                "probs": probs.to(dtype),
                "labels": labels,
                "spacing": (2.0, 1.0, 0.5),
                "maps": {k: v.to(dtype) for k, v in maps.items()},
                "samples": samples.to(dtype),
                "image": image.to(dtype),
                "qc": qc,
            }
        )
    return out


def _suite(name: str) -> EvaluationSuite:
    names = (name,) if name in CASE else (*CASE, name)  # an analysis reads the case components' rows
    return EvaluationSuite(["background", "organ", "lesion"], ["r0", "r1", "r2"], SuiteConfig(components=names))


def _same(a, b, rel=1e-9, abs_=1e-12):
    fa, fb = flatten(a), flatten(b)
    assert fa.keys() == fb.keys()
    for k, v in fa.items():
        if isinstance(v, float) and math.isnan(v):
            assert isinstance(fb[k], float) and math.isnan(fb[k]), k
        elif isinstance(v, (int, float)):
            assert fb[k] == pytest.approx(v, rel=rel, abs=abs_), k
        else:
            assert fb[k] == v, k


@pytest.mark.parametrize("name", SUITE.names())
def test_per_case_streaming_and_merged_halves_agree(name):
    cases = _cases()
    whole, first, second = _suite(name), _suite(name), _suite(name)
    for i, c in enumerate(cases):
        row = whole.add_case(**c)
        (first if i < 3 else second).add_case(**c)
        if name in CASE:  # the functional call on the case context is the suite's row
            comp = whole.components[0]
            ctx = whole.context(c["case_id"], c["probs"], c["labels"], spacing=c["spacing"], maps=c["maps"],
                                samples=c["samples"], image=c["image"], qc=c["qc"])  # fmt: skip
            _same({"case": c["case_id"], **comp.per_case(ctx)}, row)
            assert set(row) - {"case"}, f"{name} produced nothing on a case meeting its requirements"
    _same(whole.result(), first.merge(second).result())


@pytest.mark.parametrize("exact", [False, True], ids=["streaming", "exact"])
@pytest.mark.parametrize("name", CASE)
def test_case_components_agree_with_the_known_answers(name, exact):
    labels, maj, probs, hard, samples, maps, image = inputs = build_case()
    suite = EvaluationSuite(CLASSES, RATERS, SuiteConfig(components=(name,), exact=exact))
    row = suite.add_case(
        "c",
        torch.from_numpy(probs),
        torch.from_numpy(labels),
        spacing=SPACING,
        maps={k: torch.from_numpy(v) for k, v in maps.items()},
        samples=torch.from_numpy(samples),
        image=torch.from_numpy(image),
        qc={"predicted_dice": 0.8, "dice_low": 0.6, "dice_high": 0.9, "ood_p": 0.25, "review": True, "reason": "x"},
    )
    exp = expected_row(*inputs)
    exp.update({"predicted_quality/dice/predicted": 0.8, "predicted_quality/dice/low": 0.6})  # the qc entry, copied
    exp.update(
        {"predicted_quality/dice/high": 0.9, "predicted_quality/ood/p": 0.25, "predicted_quality/review/flag": 1}
    )
    got = {k: v for k, v in flatten(row).items() if k != "case"}
    assert got and set(got) <= set(exp)
    for key, value in got.items():
        assert value == pytest.approx(exp[key], rel=1e-5, abs=1e-6), key


def _aurc(score, dice):
    risk = 1 - dice[np.argsort(score, kind="stable")]
    return np.mean(np.cumsum(risk) / np.arange(1, risk.size + 1))


def _loo(score, dice):
    pred = []
    for i in range(score.size):
        keep = np.arange(score.size) != i
        a, b = np.polyfit(score[keep], dice[keep], 1)
        pred.append(np.clip(a * score[i] + b, 0, 1))
    return np.array(pred)


@pytest.mark.parametrize("name", DATASET)
def test_dataset_analyses_agree_with_references(name):
    suite = _suite(name)
    for c in _cases():
        suite.add_case(**c)
    rows, res = suite.rows(), suite.result()
    dis = np.array([r["rater_disagreement_sum"]["raters"]["all"] for r in rows])
    qc = np.array([r["qc_dice"]["majority"]["mean"] for r in rows])
    checked = 0
    for m in ("entropy", "one_minus_confidence", "variance"):
        u = res["uncertainty"].get(m, {})
        mean_score = np.array([r["image_score"][m]["mean"] for r in rows])
        if name == "image_correlation":
            assert u["image_pearson"] == pytest.approx(stats.pearsonr(mean_score, dis).statistic, rel=1e-9)
            assert u["image_spearman"] == pytest.approx(stats.spearmanr(mean_score, dis).statistic, rel=1e-9)
            checked += 1
        if name == "uncertainty_summary":
            assert u["pixel_pearson_mean"] == pytest.approx(
                np.nanmean([r["pixel_pearson"][m]["disagreement"] for r in rows])
            )
            assert u["ueo"] == pytest.approx(np.nanmean([r["ueo"][m]["error"] for r in rows]))
            checked += 1
        for agg in ("mean", "fg_mean"):
            score = np.array([r["image_score"][m][agg] for r in rows])
            q = res["quality_control"].get(m, {}).get(agg, {})
            if name == "quality_control":
                assert q["aurc"] == pytest.approx(_aurc(score, qc), rel=1e-9)
                assert q["eaurc"] == pytest.approx(_aurc(score, qc) - _aurc(-qc, qc), rel=1e-9, abs=1e-12)
                c = q["curve"]
                assert q["d_auc"] == pytest.approx(np.trapezoid(np.subtract(c["ideal"], c["dice"]), c["fraction"]))
                checked += 1
            if name == "dice_prediction_loo":
                loo = q["dice_prediction_loo"]
                assert loo["n"] == len(rows) and loo["r2"] == pytest.approx(r2_score(qc, _loo(score, qc)), rel=1e-6)
                assert loo["mae"] == pytest.approx(np.mean(np.abs(_loo(score, qc) - qc)), rel=1e-6)
                checked += 1
    if name == "quality_prediction":  # scikit-learn, scipy and numpy on the cases' qc entries
        cases = _cases()
        pred, lo, hi = (np.array([c["qc"][k] for c in cases]) for k in ("predicted_dice", "dice_low", "dice_high"))
        review, fail = np.array([c["qc"]["review"] for c in cases]), qc < 0.7
        q = res["quality_prediction"]["dice"]
        assert q["n"] == len(rows) and q["failures"] == fail.sum() and 0 < fail.sum() < len(rows)
        assert q["r2"] == pytest.approx(r2_score(qc, pred), rel=1e-9)
        assert q["pearson"] == pytest.approx(stats.pearsonr(pred, qc).statistic, rel=1e-9)
        assert q["spearman"] == pytest.approx(stats.spearmanr(pred, qc).statistic, rel=1e-9)
        assert q["mae"] == pytest.approx(np.mean(np.abs(pred - qc)), rel=1e-9)
        assert q["failure_auroc"] == pytest.approx(roc_auc_score(fail, -pred), rel=1e-9)
        assert q["aurc"] == pytest.approx(_aurc(1 - pred, qc), rel=1e-9)
        assert q["coverage"] == np.mean((lo <= qc) & (qc <= hi)) and q["n_interval"] == len(rows)
        assert q["catch_rate"] == pytest.approx((review & fail).sum() / fail.sum())
        assert q["review_rate"] == pytest.approx(review.mean())
        checked += 1
    assert checked, f"no reference for dataset analysis {name!r}: add one here"


@pytest.mark.parametrize("name", CASE)
def test_nan_inputs_are_errors_naming_the_input(name):
    c = _cases(1)[0]
    probs = c["probs"].clone()
    probs[0, 0, 0, 0] = math.nan
    with pytest.raises(CaseInputError, match="probabilities") as err:
        _suite(name).add_case(**{**c, "probs": probs})
    assert err.value.source == "probs"
    bad = {**c["maps"], "entropy": c["maps"]["entropy"].clone().fill_(math.inf)}
    with pytest.raises(CaseInputError, match="map 'entropy'") as err:
        _suite(name).add_case(**{**c, "maps": bad})
    assert (err.value.source, err.value.measure) == ("map", "entropy")


@pytest.mark.parametrize("name", SUITE.names())
def test_an_empty_class_gives_nan_and_is_left_out_of_means(name):
    suite = _suite(name)
    for c in _cases(4, empty_lesion=True):
        row = suite.add_case(**c)
        for path, value in leaves(row):
            if path == ("case",):
                continue
            assert not math.isinf(value), path
            if len(path) == 3 and path[2] == "lesion" and path[0] in ("dice", "iou", "hd95", "assd", "nsd"):
                assert math.isnan(value), path  # the one policy: empty-vs-empty is NaN ...
                assert row[path[0]][path[1]]["mean"] == row[path[0]][path[1]]["organ"]  # ... left out of the mean
        if "qc_dice" in row:
            assert not math.isnan(row["qc_dice"]["majority"]["mean"])  # the QC Dice counts it as 1
    for path, value in leaves(suite.result()):
        assert not (isinstance(value, float) and math.isinf(value)), path


@pytest.mark.parametrize("name", SUITE.names())
def test_float32_and_float64_inputs_agree(name):
    r32, r64 = _suite(name), _suite(name)
    for c32, c64 in zip(_cases(4, torch.float32), _cases(4, torch.float64)):
        r32.add_case(**c32)
        r64.add_case(**c64)
    _same(r32.result(), r64.result(), rel=1e-5, abs_=1e-6)
