"""A field-of-view mask leaves the voxels outside it out of every metric.

Known answer: a case whose field of view is a rectangle scores exactly like the same case cropped to that
rectangle (every structure lies well inside it), whatever the predictions, labels and maps say outside.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.evaluation.test_evaluate import pred_folder
from trustseg.data.case import Case
from trustseg.data.dataset import write_dataset
from trustseg.evaluation import evaluate_predictions
from trustseg.evaluation.context import CaseInputError, SuiteConfig
from trustseg.evaluation.results import flatten
from trustseg.evaluation.suite import EvaluationSuite

K, R, M = 3, 3, 4
H, W = 22, 26
INSIDE = (slice(4, 17), slice(5, 21))


def _case(seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(R, H, W, dtype=torch.long)
    for r in range(R):  # raters disagree by a voxel or two; every structure >= 3 voxels from the rectangle's edge
        labels[r, 8 : 12 + r % 2, 9 : 14 + r] = 1
        labels[r, 12 - r % 2 : 14, 15:18] = 2
    # outside the rectangle: labels the mask must hide
    noise = torch.randint(0, K, (R, H, W), generator=g)
    inside = torch.zeros(H, W, dtype=torch.bool)
    inside[INSIDE] = True
    labels = torch.where(inside, labels, noise)
    logits = torch.randn(M, K, H, W, generator=g) + 3 * torch.nn.functional.one_hot(labels[0], K).movedim(-1, 0)
    samples = torch.softmax(logits, 1)
    probs = samples.mean(0)
    maps = {"entropy": -(probs * probs.clamp_min(1e-8).log()).sum(0), "confidence": probs.max(0).values}
    image = torch.randn(1, H, W, generator=g)
    return probs, labels, samples, maps, image, inside


def _crop(t):
    return t[(..., *INSIDE)]


def _rows(cases, exact=False):
    suite = EvaluationSuite(["bg", "a", "b"], [f"r{i}" for i in range(R)], SuiteConfig(exact=exact))
    for cid, (probs, labels, samples, maps, image, valid) in cases.items():
        suite.add_case(cid, probs, labels, maps=maps, samples=samples, image=image, valid=valid)
    return suite


@pytest.mark.parametrize("exact", [False, True], ids=["streaming", "exact"])
def test_a_rectangular_field_of_view_scores_as_the_cropped_case(exact):
    probs, labels, samples, maps, image, inside = _case()
    masked = _rows({"c": (probs, labels, samples, maps, image, inside)}, exact)
    crop_maps = {k: _crop(v) for k, v in maps.items()}
    cropped = _rows({"c": (_crop(probs), _crop(labels), _crop(samples), crop_maps, _crop(image), None)}, exact)
    a, b = flatten(masked.rows()[0]), flatten(cropped.rows()[0])
    assert a.keys() == b.keys()
    differ = {k: (a[k], b[k]) for k in a if k != "case" and not _same(a[k], b[k])}
    assert not differ
    # ... and the pooled sections too (calibration is streamed over voxels)
    ra, rb = masked.result(), cropped.result()
    assert _same(ra["calibration"]["majority"]["ece_toplabel"], rb["calibration"]["majority"]["ece_toplabel"])
    assert _same(ra["calibration"]["soft"]["nll"], rb["calibration"]["soft"]["nll"])
    # without the mask, the garbage outside changes the numbers (the test can fail)
    unmasked = flatten(_rows({"c": (probs, labels, samples, maps, image, None)}).rows()[0])
    assert not _same(unmasked["dice/majority/a"], a["dice/majority/a"]) or not _same(
        unmasked["ece_toplabel/majority/all"], a["ece_toplabel/majority/all"]
    )


def _same(x, y):
    if isinstance(x, float) and isinstance(y, float):
        return (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-5, abs=1e-6)
    return x == y


def test_a_mask_of_the_wrong_shape_or_empty_is_named():
    probs, labels, samples, maps, image, inside = _case()
    suite = EvaluationSuite(["bg", "a", "b"], [f"r{i}" for i in range(R)])
    with pytest.raises(CaseInputError, match="field-of-view mask"):
        suite.add_case("c", probs, labels, valid=inside[:, :-1])
    with pytest.raises(CaseInputError, match="empty"):
        suite.add_case("c", probs, labels, valid=torch.zeros_like(inside))


def test_evaluate_reads_each_cases_mask_from_the_dataset(tmp_path):
    """Pipeline: a dataset whose case has a field of view; the prediction's false positives outside it do not
    count (Dice 1 instead of 2·4/(4+8))."""
    lab = np.zeros((6, 6), np.int64)
    lab[1:3, 1:3] = 1
    pred = lab.copy()
    pred[4:6, 4:6] = 1  # 4 false-positive pixels outside the field of view
    fov = np.ones((6, 6), bool)
    fov[4:, 4:] = False
    cases = [Case("a", np.zeros((1, 6, 6), np.float32), np.stack([lab, lab]), mask=fov)]
    cases.append(Case("b", np.zeros((1, 6, 6), np.float32), np.stack([lab, lab])))  # no mask: all pixels count
    root = write_dataset(cases, tmp_path / "data", ["background", "organ"], ext=".npy")
    folder = pred_folder(tmp_path / "pred", {"a": pred, "b": pred})
    res = evaluate_predictions(folder, root, tmp_path / "ev" / "results.json")
    dice = {r["case"]: r["dice"]["majority"]["organ"] for r in res["per_case"]}
    assert dice == {"a": 1.0, "b": pytest.approx(2 * 4 / (4 + 8))}
