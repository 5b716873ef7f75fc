"""Evaluation of a prediction folder: Dice vs each rater and the majority vote on hand-built cases."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from tests.engine.test_train import make_data
from trustseg.core.atomic import atomic_write_json
from trustseg.core.errors import DataError
from trustseg.data.case import Case
from trustseg.data.dataset import load_dataset, write_dataset
from trustseg.data.io import write_label
from trustseg.engine.evaluate import evaluate_predictions


def pred_folder(path, segs: dict[str, np.ndarray], ext: str = ".npy"):
    """A prediction folder as predict_folder writes it (index + seg maps)."""
    cases = []
    for cid, seg in segs.items():
        write_label(path / f"{cid}_seg{ext}", seg)
        cases.append({"id": cid, "files": {"seg": f"{cid}_seg{ext}", "measures": {}}})
    atomic_write_json(path / "predictions.json", {"method": "hand", "classes": [], "cases": cases})
    return path


@pytest.fixture
def hand(tmp_path):
    """Two 4x4 cases, 3 classes, 2 raters, and a hand-made prediction."""
    z = np.zeros((4, 4), np.int64)
    r0, r1, pa = z.copy(), z.copy(), z.copy()
    r0[0, :] = 1
    r0[3, 3] = 2
    r1[0, :2] = 1
    pa[0, :3] = 1
    pa[3, 3] = 2
    rb = z.copy()
    rb[0, 0] = 1
    cases = [
        Case("a", np.zeros((1, 4, 4), np.float32), np.stack([r0, r1])),
        Case("b", np.zeros((1, 4, 4), np.float32), np.stack([rb, rb])),
    ]
    splits = {"fixed": {"train": [], "val": ["b"], "test": ["a"]}}
    root = write_dataset(cases, tmp_path / "data", ["background", "organ", "lesion"], ext=".npy", splits=splits)
    return root, pred_folder(tmp_path / "pred", {"a": pa, "b": rb})


def test_dice_by_hand(hand, tmp_path):
    root, pred = hand
    res = evaluate_predictions(pred, root, tmp_path / "ev" / "metrics.json")
    a, b = res["per_case"]
    assert a["case"] == "a" and b["case"] == "b" and res["num_cases"] == 2 and res["cases"] == ["a", "b"]
    # organ: pred 3 px of row 0; rater0 4 px; rater1 2 px; majority keeps the 2 px both agree on (ties -> background)
    assert a["dice/organ/rater0"] == pytest.approx(2 * 3 / 7)
    assert a["dice/organ/rater1"] == pytest.approx(2 * 2 / 5)
    assert a["dice/organ/majority"] == pytest.approx(0.8)
    # lesion: one pixel predicted; rater0 has it, rater1 and the majority vote (a 1-1 tie) do not
    assert a["dice/lesion/rater0"] == 1.0 and a["dice/lesion/rater1"] == 0.0 and a["dice/lesion/majority"] == 0.0
    assert a["dice/mean/majority"] == pytest.approx(0.4)
    assert a["dice/mean/raters"] == pytest.approx((6 / 7 + 0.8 + 1 + 0) / 4)
    assert b["dice/organ/majority"] == 1.0 and b["dice/lesion/majority"] == 1.0  # absent from both: empty -> 1
    assert res["mean"]["dice/organ/majority"] == pytest.approx(0.9) and res["count"]["dice/organ/majority"] == 2
    on_disk = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    finite = {k: v for k, v in res["mean"].items() if math.isfinite(v)}
    assert {k: on_disk["mean"][k] for k in finite} == pytest.approx(finite)
    assert all(on_disk["mean"][k] is None for k in res["mean"] if k not in finite)  # NaN is written as null
    assert res["summary"]["dice_majority"] == pytest.approx((0.4 + 1.0) / 2)
    assert res["summary"]["dice_majority/organ"] == pytest.approx(0.9)
    rows = list(csv.DictReader((tmp_path / "ev" / "metrics.csv").open()))
    assert [r["case"] for r in rows] == ["a", "b"]
    assert float(rows[0]["dice/organ/rater0"]) == pytest.approx(6 / 7, abs=1e-5)


def test_empty_policy_nan_and_split(hand, tmp_path):
    root, pred = hand
    res = evaluate_predictions(pred, root, tmp_path / "m.json", empty="nan")
    b = res["per_case"][1]
    assert math.isnan(b["dice/lesion/majority"]) and b["dice/mean/majority"] == 1.0  # NaN left out of the mean
    assert res["mean"]["dice/lesion/majority"] == 0.0 and res["count"]["dice/lesion/majority"] == 1
    assert json.loads((tmp_path / "m.json").read_text())["per_case"][1]["dice/lesion/majority"] is None
    only_test = evaluate_predictions(pred, root, tmp_path / "t.json", split="test")
    assert [r["case"] for r in only_test["per_case"]] == ["a"]


def test_majority_vote_prediction_scores_one(tmp_path):
    root = make_data(tmp_path, raters=3)
    ds = load_dataset(root)
    segs = {cid: ds[cid].majority_vote(ds.num_classes) for cid in ds.split("test")}
    res = evaluate_predictions(pred_folder(tmp_path / "pred", segs, ".nii.gz"), root, tmp_path / "m.json")
    assert res["mean"]["dice/mean/majority"] == 1.0
    assert 0 < res["mean"]["dice/mean/raters"] <= 1.0


def test_errors(hand, tmp_path):
    root, _ = hand
    with pytest.raises(DataError, match="predictions.json"):
        evaluate_predictions(tmp_path, root, tmp_path / "m.json")
    bad = pred_folder(tmp_path / "p1", {"zzz": np.zeros((4, 4), np.int64)})
    with pytest.raises(DataError, match="not in the dataset"):
        evaluate_predictions(bad, root, tmp_path / "m.json")
    bad = pred_folder(tmp_path / "p2", {"a": np.zeros((4, 5), np.int64)})
    with pytest.raises(DataError, match="differs from the labels"):
        evaluate_predictions(bad, root, tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


def test_bad_probabilities_or_maps_name_the_case_and_file(hand, tmp_path):
    root, _ = hand
    pa = np.zeros((4, 4), np.int64)
    pred = pred_folder(tmp_path / "p3", {"a": pa})
    probs = np.stack([np.full((4, 4), 0.5), np.full((4, 4), 0.25), np.full((4, 4), 0.25)]).astype(np.float32)
    ent = np.zeros((4, 4), np.float32)
    np.save(pred / "a_probs.npy", probs)
    np.save(pred / "a_entropy.npy", ent)
    index = json.loads((pred / "predictions.json").read_text())
    index["cases"][0]["shape"] = [4, 4]
    index["cases"][0]["files"].update({"probs": "a_probs.npy", "measures": {"entropy": "a_entropy.npy"}})
    atomic_write_json(pred / "predictions.json", index)
    evaluate_predictions(pred, root, tmp_path / "ok.json", split="test")  # valid as written
    probs[0, 1, 2] = np.nan
    np.save(pred / "a_probs.npy", probs)
    with pytest.raises(DataError, match=r"a_probs\.npy: case a: probabilities contain NaN"):
        evaluate_predictions(pred, root, tmp_path / "m.json", split="test")
    probs[0, 1, 2] = 0.5
    np.save(pred / "a_probs.npy", probs)
    ent[0, 0] = np.inf
    np.save(pred / "a_entropy.npy", ent)
    with pytest.raises(DataError, match=r"a_entropy\.npy: case a: .*map 'entropy'"):
        evaluate_predictions(pred, root, tmp_path / "m.json", split="test")
    assert not (tmp_path / "m.json").exists()
