"""Evaluation of a prediction folder end to end: Dice vs each rater and the majority vote on hand-built cases,
the nested results and their one flattening in the CSV, errors naming the file."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from tests.engine.test_train import make_data
from trustseg.cli.main import main
from trustseg.core.atomic import atomic_write_json
from trustseg.core.errors import ConfigError, DataError
from trustseg.core.lock import LOCK, exclusive
from trustseg.data.case import Case
from trustseg.data.dataset import load_dataset, write_dataset
from trustseg.data.io import write_label
from trustseg.evaluation import evaluate_predictions, verify_results
from trustseg.evaluation.results import flatten


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
    res = evaluate_predictions(pred, root, tmp_path / "ev" / "metrics.json", empty="one")
    a, b = res["per_case"]
    assert a["case"] == "a" and b["case"] == "b" and res["num_cases"] == 2 and res["cases"] == ["a", "b"]
    da, db = a["dice"], b["dice"]
    # organ: pred 3 px of row 0; rater0 4 px; rater1 2 px; majority keeps the 2 px both agree on (ties -> background)
    assert da["rater0"]["organ"] == pytest.approx(2 * 3 / 7)
    assert da["rater1"]["organ"] == pytest.approx(2 * 2 / 5)
    assert da["majority"]["organ"] == pytest.approx(0.8)
    # lesion: one pixel predicted; rater0 has it, rater1 and the majority vote (a 1-1 tie) do not
    assert da["rater0"]["lesion"] == 1.0 and da["rater1"]["lesion"] == 0.0 and da["majority"]["lesion"] == 0.0
    assert da["majority"]["mean"] == pytest.approx(0.4)
    assert da["mean_rater"]["mean"] == pytest.approx(((6 / 7 + 0.8) / 2 + (1 + 0) / 2) / 2)
    assert db["majority"]["organ"] == 1.0 and db["majority"]["lesion"] == 1.0  # absent from both: empty -> 1
    assert res["mean"]["dice"]["majority"]["organ"] == pytest.approx(0.9)
    assert res["count"]["dice"]["majority"]["organ"] == 2
    on_disk = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    flat, flat_disk = flatten(res["mean"]), flatten(on_disk["mean"])
    finite = {k: v for k, v in flat.items() if math.isfinite(v)}
    assert {k: flat_disk[k] for k in finite} == pytest.approx(finite)
    assert all(flat_disk[k] is None for k in flat if k not in finite)  # NaN is written as null
    assert res["summary"]["dice"]["majority"]["mean"] == pytest.approx((0.4 + 1.0) / 2)
    assert res["summary"]["dice"]["majority"]["organ"] == pytest.approx(0.9)
    rows = list(csv.DictReader((tmp_path / "ev" / "metrics.csv").open()))
    assert [r["case"] for r in rows] == ["a", "b"]
    assert float(rows[0]["dice/rater0/organ"]) == pytest.approx(6 / 7, abs=1e-5)
    assert set(rows[0]) == {"case", *flatten(a)}  # the CSV columns are the flattened per-case rows


def test_empty_policy_default_nan_and_split(hand, tmp_path):
    root, pred = hand
    res = evaluate_predictions(pred, root, tmp_path / "m.json")  # default: empty = nan
    b = res["per_case"][1]
    assert res["empty"] == "nan" and res["config"]["empty"] == "nan"
    assert math.isnan(b["dice"]["majority"]["lesion"]) and b["dice"]["majority"]["mean"] == 1.0  # NaN left out
    assert math.isnan(b["dice"]["rater0"]["lesion"]) and math.isnan(b["iou"]["majority"]["lesion"])
    assert b["qc_dice"]["majority"]["mean"] == 1.0  # the QC Dice counts the empty lesion as 1
    assert res["mean"]["dice"]["majority"]["lesion"] == 0.0 and res["count"]["dice"]["majority"]["lesion"] == 1
    assert json.loads((tmp_path / "m.json").read_text())["per_case"][1]["dice"]["majority"]["lesion"] is None
    only_test = evaluate_predictions(pred, root, tmp_path / "t.json", split="test")
    assert [r["case"] for r in only_test["per_case"]] == ["a"]


def test_majority_vote_prediction_scores_one(tmp_path):
    root = make_data(tmp_path, raters=3)
    ds = load_dataset(root)
    segs = {cid: ds[cid].majority_vote(ds.num_classes) for cid in ds.split("test")}
    res = evaluate_predictions(pred_folder(tmp_path / "pred", segs, ".nii.gz"), root, tmp_path / "m.json")
    assert res["mean"]["dice"]["majority"]["mean"] == 1.0 and res["mean"]["qc_dice"]["majority"]["mean"] == 1.0
    ds_raters = [r["dice"] for r in res["per_case"]]
    expected = [np.nanmean([np.nanmean(list(d[r].values())[:-1]) for r in ds.raters]) for d in ds_raters]
    got = [np.nanmean([d["mean_rater"][c] for c in ds.classes[1:]]) for d in ds_raters]
    assert got == pytest.approx(expected)


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
    with pytest.raises(DataError, match=r"a_probs\.npy: case a: probabilities contain NaN") as err:
        evaluate_predictions(pred, root, tmp_path / "m.json", split="test")
    assert err.value.source == "probs" and err.value.case_id == "a" and err.value.path == pred / "a_probs.npy"
    probs[0, 1, 2] = 0.5
    np.save(pred / "a_probs.npy", probs)
    ent[0, 0] = np.inf
    np.save(pred / "a_entropy.npy", ent)
    with pytest.raises(DataError, match=r"a_entropy\.npy: case a: .*map 'entropy'") as err:
        evaluate_predictions(pred, root, tmp_path / "m.json", split="test")
    assert (err.value.source, err.value.measure, err.value.path) == ("map", "entropy", pred / "a_entropy.npy")
    assert not (tmp_path / "m.json").exists()


def test_a_case_listed_twice_in_the_index_is_refused(hand, tmp_path):
    root, pred = hand
    index = json.loads((pred / "predictions.json").read_text())
    index["cases"].append(dict(index["cases"][0]))
    (pred / "predictions.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"predictions\.json: case 'a' is listed more than once") as e:
        evaluate_predictions(pred, root, tmp_path / "ev" / "m.json")
    assert e.value.path == pred / "predictions.json" and not (tmp_path / "ev").exists()


def one_hot_probs(seg: np.ndarray, k: int = 3) -> np.ndarray:
    """Soft probabilities whose argmax is ``seg`` (0.6 on the class, 0.2 elsewhere)."""
    probs = np.full((k, *seg.shape), 0.4 / (k - 1), np.float32)
    np.put_along_axis(probs, seg[None], 0.6, axis=0)
    return probs


def test_a_segmentation_that_is_not_the_argmax_of_the_probabilities_is_refused(hand, tmp_path):
    root, pred = hand
    seg_a = np.load(pred / "a_seg.npy").astype(np.int64)
    probs = one_hot_probs(seg_a)
    np.save(pred / "a_probs.npy", probs)
    index = json.loads((pred / "predictions.json").read_text())
    index["cases"][0]["files"]["probs"] = "a_probs.npy"
    (pred / "predictions.json").write_text(json.dumps(index))
    evaluate_predictions(pred, root, tmp_path / "ok.json")  # argmax of probs == seg: accepted
    tie = probs.copy()
    tie[:, 1, 1] = [0.4, 0.4, 0.2]  # seg is 0 there: a tie with class 1 still agrees
    np.save(pred / "a_probs.npy", tie)
    evaluate_predictions(pred, root, tmp_path / "tie.json")
    np.save(pred / "a_probs.npy", one_hot_probs(np.zeros_like(seg_a)))  # 4 of the 16 voxels of a are foreground
    expected = f"{(seg_a != 0).mean():.2%}"
    assert expected == "25.00%"
    with pytest.raises(
        DataError,
        match=rf"case 'a': the segmentation a_seg\.npy is not the argmax of the "
        rf"probabilities a_probs\.npy in {expected} of the voxels",
    ) as e:
        evaluate_predictions(pred, root, tmp_path / "bad.json")
    assert e.value.path == pred / "a_seg.npy" and not (tmp_path / "bad.json").exists()


def test_an_incomplete_prediction_folder_is_refused_unless_partial(hand, tmp_path, capsys):
    """kp_eval_partial: a killed predict left 1 of 2 cases; evaluate must not score it silently as the folder."""
    root, pred = hand
    full = evaluate_predictions(pred, root, tmp_path / "full.json", empty="one")
    index = json.loads((pred / "predictions.json").read_text())
    index.update(complete=False, expected=["a", "b"], cases=index["cases"][:1])
    atomic_write_json(pred / "predictions.json", index)
    with pytest.raises(DataError, match=r"1 of 2 cases predicted.*--resume.*--partial") as err:
        evaluate_predictions(pred, root, tmp_path / "ev.json")
    assert "predictions.json" in str(err.value)
    assert not (tmp_path / "ev.json").exists()
    res = evaluate_predictions(pred, root, tmp_path / "ev.json", empty="one", partial=True)
    assert res["partial"] == {"scored": 1, "expected": 2} and res["cases"] == ["a"]
    assert json.loads((tmp_path / "ev.json").read_text())["partial"] == {"scored": 1, "expected": 2}
    assert res["per_case"][0]["dice"] == full["per_case"][0]["dice"]
    assert "partial" not in full  # a folder without the marker (written before it existed) counts as complete

    assert main(["evaluate", "--pred", str(pred), "--data", str(root), "--out", str(tmp_path / "c.json")]) == 2
    rc = main(["evaluate", "--pred", str(pred), "--data", str(root), "--out", str(tmp_path / "c.json"), "--partial"])
    assert rc == 0 and "1 of 2 cases predicted" in capsys.readouterr().out


# --- outputs are never destroyed (audit F8: cli_eval_out_eq_index, cli_eval_out_eq_datasetjson; F16 conc) ---


def _snapshot(*roots):
    return {str(p): p.read_bytes() for r in roots for p in sorted(r.rglob("*")) if p.is_file()}


def test_results_onto_an_index_or_a_foreign_file_are_refused(hand, tmp_path, capsys):
    root, pred = hand
    before = _snapshot(root, pred)
    for out, what in (
        (pred / "predictions.json", "the prediction index"),
        (root / "dataset.json", "the dataset index"),
    ):
        with pytest.raises(ConfigError, match=f"is {what}; evaluate never writes over its inputs"):
            evaluate_predictions(pred, root, out)
    rc = main(["evaluate", "--pred", str(pred), "--data", str(root), "--out", str(pred / "predictions.json")])
    assert rc == 2 and "predictions.json: is the prediction index" in capsys.readouterr().err
    rc = main(["evaluate", "--pred", str(pred), "--data", str(root), "--out", str(root / "dataset.json")])
    assert rc == 2 and "dataset.json: is the dataset index" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=r"a_seg\.json: exists and is not an earlier trustseg results JSON"):
        (pred / "a_seg.json").write_text('{"mine": 1}')
        evaluate_predictions(pred, root, pred / "a_seg.json")
    (tmp_path / "notes.csv").write_text("precious")
    with pytest.raises(ConfigError, match="notes.csv: the per-case table would replace this existing file"):
        evaluate_predictions(pred, root, tmp_path / "notes.json")
    with pytest.raises(ConfigError, match="needs a .json name"):
        evaluate_predictions(pred, root, tmp_path / "res.csv")
    (pred / "a_seg.json").unlink()
    assert _snapshot(root, pred) == before and (tmp_path / "notes.csv").read_text() == "precious"


def test_an_earlier_results_json_is_replaced(hand, tmp_path):
    root, pred = hand
    out = tmp_path / "ev" / "results.json"
    evaluate_predictions(pred, root, out, empty="one")
    first = out.read_bytes()
    res = evaluate_predictions(pred, root, out, split="test")
    assert out.read_bytes() != first and json.loads(out.read_text())["cases"] == res["cases"] == ["a"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["results.csv", "results.json"]  # lock released


def test_a_second_concurrent_evaluate_into_one_folder_fails_fast(hand, tmp_path):
    root, pred = hand
    with exclusive(tmp_path / "ev", "results folder"):
        with pytest.raises(DataError, match=rf"ev: this results folder is being written by process \d+.*{LOCK}"):
            evaluate_predictions(pred, root, tmp_path / "ev" / "results.json")
        assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == [LOCK]


def test_the_json_names_the_csv_it_was_written_with(hand, tmp_path):
    root, pred = hand
    out = tmp_path / "ev" / "results.json"
    evaluate_predictions(pred, root, out)
    assert verify_results(out)["csv_sha256"]
    csv = out.with_suffix(".csv")
    csv.write_text(csv.read_text() + "stranger,row\n")  # a CSV from elsewhere (or a kill between the writes)
    with pytest.raises(DataError, match="not the one written with results.json"):
        verify_results(out)
    csv.unlink()
    with pytest.raises(DataError, match="missing"):
        verify_results(out)
