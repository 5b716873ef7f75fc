"""Prediction: loading runs, whole-image and sliding-window prediction, folder outputs per input format."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from tests.engine.test_train import make_data, tiny_cfg
from trustseg.cli.main import main
from trustseg.core.errors import ConfigError, DataError, UnknownNameError
from trustseg.core.lock import LOCK, exclusive
from trustseg.data.dataset import load_dataset
from trustseg.data.io import read_image, write_image
from trustseg.engine.predict import load_run, predict_folder, predict_image
from trustseg.engine.prediction_folder import FolderWriter, iter_inputs
from trustseg.engine.train import train
from trustseg.inference.predictor import load_predictor
from trustseg.methods.base import build_method
from trustseg.models.config import NetConfig


@pytest.fixture(scope="module")
def run2d(tmp_path_factory):
    """A softmax run trained 1 epoch on tiny 2D NIfTI data, and the data root."""
    tmp = tmp_path_factory.mktemp("pred")
    root = make_data(tmp)
    train(tiny_cfg(root, epochs=1), tmp / "run", progress=False)
    return tmp / "run", root


def test_load_run(run2d):
    run, _ = run2d
    method, models, info = load_run(run)
    assert method.name == "softmax" and len(models) == 1 and not models[0].training
    assert info["checkpoints"][0].endswith("best.pt") and method.temperature == info["temperature"]
    with pytest.raises(DataError, match="run.json"):
        load_run(run / "member_0")


def test_nifti_in_nifti_out_keeps_affine(run2d, tmp_path):
    run, _ = run2d
    affine = np.array([[0, -0.7, 0, 12.5], [0.9, 0, 0, -3.0], [0, 0, 2.5, 40.0], [0, 0, 0, 1]])
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    for name in ("a", "b"):
        image = rng.random((1, 16, 12), dtype=np.float32)
        write_image(src / f"{name}.nii.gz", image, spacing=(0.9, 0.7), affine=affine, spatial_dims=2)
    out = predict_folder(run, src, tmp_path / "out", progress=False)
    index = json.loads((out / "predictions.json").read_text())
    assert [c["id"] for c in index["cases"]] == ["a", "b"] and index["measures"] == ["confidence", "entropy"]
    assert index["classes"] == ["background", "organ", "lesion"] and index["method"] == "softmax"
    for name in ("a", "b"):
        for suffix in ("probs", "seg", "confidence", "entropy"):
            img = nib.load(out / f"{name}_{suffix}.nii.gz")
            np.testing.assert_allclose(img.affine, affine, atol=1e-5)
        probs = read_image(out / f"{name}_probs.nii.gz").array
        assert probs.shape == (3, 16, 12)
        np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
        seg = np.asarray(nib.load(out / f"{name}_seg.nii.gz").dataobj).reshape(16, 12)
        np.testing.assert_array_equal(seg, probs.argmax(0))
        ent = np.asarray(nib.load(out / f"{name}_entropy.nii.gz").dataobj).reshape(16, 12)
        np.testing.assert_allclose(ent, -(probs * np.log(probs)).sum(0), atol=1e-4)
    rows = list(csv.DictReader((out / "summary.csv").open()))
    voxel = 0.7 * 0.9  # spacing of the two in-plane axes
    assert [r["case"] for r in rows] == ["a", "b"]
    for r in rows:
        total = sum(float(r[f"volume_{c}"]) for c in ("background", "organ", "lesion"))
        assert total == pytest.approx(16 * 12 * voxel, rel=1e-5)
        conf = np.asarray(nib.load(out / f"{r['case']}_confidence.nii.gz").dataobj)
        assert float(r["mean_one_minus_confidence"]) == pytest.approx(1 - conf.mean(), abs=1e-6)  # one orientation
        assert "mean_confidence" not in r
    assert index["notes"] == {}


def test_samples_asked_of_a_one_sample_method_says_why(run2d, tmp_path):
    run, data = run2d
    out = predict_folder(run, data, tmp_path / "out", split="test", progress=False, save_samples=True)
    index = json.loads((out / "predictions.json").read_text())
    assert "one sample" in index["notes"]["samples"] and "samples" not in index["cases"][0]["files"]


def test_png_in_png_npy_out_and_measure_choice(run2d, tmp_path):
    run, _ = run2d
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(src / "img1.png")
    out = predict_folder(run, [src / "img1.png"], tmp_path / "out", measures="entropy", progress=False)
    probs = np.load(out / "img1_probs.npy")
    assert probs.shape == (3, 16, 16)
    seg = np.asarray(Image.open(out / "img1_seg.png"))
    np.testing.assert_array_equal(seg, probs.argmax(0))
    assert np.load(out / "img1_entropy.npy").shape == (16, 16)
    preview = np.asarray(Image.open(out / "img1_entropy.png"))
    assert preview.shape == (16, 16, 3) and preview.dtype == np.uint8
    assert not (out / "img1_confidence.npy").exists()
    files = json.loads((out / "predictions.json").read_text())["cases"][0]["files"]
    assert files["measures"] == {"entropy": "img1_entropy.npy"} and files["previews"] == {"entropy": "img1_entropy.png"}


def test_dataset_root_with_split(run2d, tmp_path):
    run, root = run2d
    out = predict_folder(run, root, tmp_path / "out", split="test", progress=False)
    index = json.loads((out / "predictions.json").read_text())
    assert [c["id"] for c in index["cases"]] == load_dataset(root).split("test")


def test_bad_measures_and_inputs(run2d, tmp_path):
    run, root = run2d
    with pytest.raises(UnknownNameError, match="did you mean 'entropy'"):
        predict_folder(run, root, tmp_path / "o1", measures=["entropie"], progress=False)
    with pytest.raises(ConfigError, match="not available"):
        predict_folder(run, root, tmp_path / "o2", measures=["mi"], progress=False)
    write_image(tmp_path / "rgb" / "x.png", np.zeros((3, 16, 16), np.uint8))
    with pytest.raises(DataError, match="channels"):
        predict_folder(run, tmp_path / "rgb", tmp_path / "o3", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        predict_folder(run, tmp_path / "empty", tmp_path / "o4", progress=False)


def test_failure_midway_keeps_finished_cases(run2d, tmp_path):
    run, _ = run2d
    src = tmp_path / "in"
    write_image(src / "a.nii.gz", np.ones((1, 16, 16), np.float32), spatial_dims=2)
    (src / "b.nii.gz").write_bytes(b"not a nifti file")
    with pytest.raises(DataError, match="b.nii.gz"):
        predict_folder(run, src, tmp_path / "out", progress=False)
    index = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [c["id"] for c in index["cases"]] == ["a"]
    assert index["complete"] is False and index["expected"] == ["a", "b"]
    for f in ("a_probs.nii.gz", "a_seg.nii.gz", "a_entropy.nii.gz", "summary.csv"):
        assert (tmp_path / "out" / f).is_file()
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_ensemble_predicts_all_members(tmp_path):
    root = make_data(tmp_path)
    train(tiny_cfg(root, "ensemble", {"members": 2}, epochs=1), tmp_path / "run", progress=False)
    method, models, info = load_run(tmp_path / "run")
    assert len(models) == 2 and info["members"] == 2
    pred = predict_image(method, models, np.zeros((1, 16, 16), np.float32), multiple=info["pad_multiple"])
    assert pred.probs.shape == (2, 1, 3, 16, 16)
    out = predict_folder(tmp_path / "run", root, tmp_path / "out", split="test", progress=False)
    measures = json.loads((out / "predictions.json").read_text())["measures"]
    assert {"mi", "epkl", "expected_entropy", "variance"} <= set(measures)


def test_mc_dropout_run_saved_before_the_where_option_keeps_its_placement(tmp_path):
    root = make_data(tmp_path)
    train(tiny_cfg(root, "mc-dropout", {"samples": 2, "where": "decoder"}, epochs=1), tmp_path / "run", progress=False)
    method, _, _ = load_run(tmp_path / "run")
    assert method.where == "decoder"
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    del info["params"]["where"]  # as written by trustseg before `where` existed
    (tmp_path / "run" / "run.json").write_text(json.dumps(info))
    method, models, _ = load_run(tmp_path / "run")
    assert method.where == "decoder"  # the placement it was trained with, not the new default "last"
    assert sum("Dropout" in type(m).__name__ for m in models[0].modules()) > 1  # "last" has one


def test_3d_nifti_folder(tmp_path):
    root = make_data(tmp_path, dims=3, cases=4, size=16)
    train(tiny_cfg(root, epochs=1, batch_size=2, patch_size=(8, 8, 8)), tmp_path / "run", progress=False)
    out = predict_folder(tmp_path / "run", root, tmp_path / "out", split="test", progress=False)
    cid = json.loads((out / "predictions.json").read_text())["cases"][0]["id"]
    probs = read_image(out / f"{cid}_probs.nii.gz").array
    assert probs.shape == (3, 16, 16, 16)  # predicted by 8^3 windows, blended
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-5)
    assert nib.load(out / f"{cid}_entropy.nii.gz").shape == (16, 16, 16)


def test_predict_image_sizes_and_sliding_window():
    torch.manual_seed(0)
    method = build_method("softmax", NetConfig(params={"channels": (4, 8, 16)}), 3, 1, 2)
    models = [method.build_model().eval()]
    vol = np.random.default_rng(0).random((1, 20, 12, 9), dtype=np.float32)
    sw = predict_image(method, models, vol, patch_size=(8, 8, 8), multiple=4)  # larger than the patch: windows
    whole = predict_image(method, models, vol, patch_size=None, multiple=4)  # padded to 20x12x12, cropped back
    for pred in (sw, whole):
        assert pred.probs.shape == (1, 1, 2, 20, 12, 9)
        torch.testing.assert_close(pred.probs.sum(2), torch.ones(1, 1, 20, 12, 9))
    assert not torch.allclose(sw.probs, whole.probs)  # a U-Net sees different context in windows
    small = predict_image(method, models, vol[:, :8, :8, :8], patch_size=(8, 8, 8), multiple=4)
    with torch.no_grad():
        ref = method.predict(models, torch.from_numpy(vol[None, :, :8, :8, :8]))
    torch.testing.assert_close(small.probs, ref.probs)  # not larger than the patch: one whole pass
    with pytest.raises(DataError, match="image must be"):
        predict_image(method, models, np.zeros((8, 8), np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_folder_image_with_one_nan_or_inf_pixel_is_refused_naming_it(run2d, tmp_path, bad):
    img = np.ones((1, 16, 16), np.float32)
    img[0, 3, 4] = bad
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "a.npy", img)
    with pytest.raises(DataError, match="a.npy: image contains NaN or infinite values"):
        predict_folder(run2d[0], tmp_path / "in", tmp_path / "out", progress=False)
    assert not list((tmp_path / "out").glob("a_*"))
    method, models, _ = load_run(run2d[0])
    with pytest.raises(DataError, match="NaN or infinite"):
        predict_image(method, models, img)


class NaNPredictor:
    """Wraps a predictor and returns its prediction with one NaN probability (as a diverged run would)."""

    def __init__(self, inner):
        self.inner, self.info = inner, inner.info

    def predict(self, image, spacing=None):
        pred = self.inner.predict(image, spacing)
        pred.probs[0, 0, 0, 0, 0] = float("nan")
        return pred


def test_nan_probabilities_are_refused_before_anything_is_written(run2d, tmp_path):
    inner = load_predictor(run2d[0], "cpu")
    src = tmp_path / "in"
    write_image(src / "a.nii.gz", np.ones((1, 16, 16), np.float32), spatial_dims=2)
    with pytest.raises(DataError, match="case 'a': the model .* predicted NaN or infinite probabilities"):
        predict_folder(NaNPredictor(inner), src, tmp_path / "out", progress=False)
    assert not list((tmp_path / "out").glob("a_*"))


@pytest.mark.parametrize("kind", ["loop", "broken"])
def test_a_broken_or_looping_symlink_in_the_folder_is_named_not_skipped(run2d, tmp_path, kind):
    src = tmp_path / "in"
    write_image(src / "a.nii.gz", np.ones((1, 16, 16), np.float32), spatial_dims=2)
    link = src / "b.nii.gz"
    link.symlink_to(link if kind == "loop" else tmp_path / "gone.nii.gz")
    (src / "notes.txt").symlink_to(tmp_path / "gone.txt")  # not an image name: never an input, ignored as before
    with pytest.raises(DataError, match="b.nii.gz: broken or looping symbolic link"):
        iter_inputs(src)
    with pytest.raises(DataError, match="b.nii.gz"):
        predict_folder(run2d[0], src, tmp_path / "out", progress=False)
    link.unlink()
    assert len(iter_inputs(src)) == 1


def test_split_with_a_folder_or_files_is_refused(run2d, tmp_path):
    src = tmp_path / "in"
    write_image(src / "a.nii.gz", np.ones((1, 16, 16), np.float32), spatial_dims=2)
    with pytest.raises(ConfigError, match="--split only applies to a dataset folder"):
        iter_inputs(src, split="test")
    with pytest.raises(ConfigError, match="--split only applies to a dataset folder"):
        iter_inputs([src / "a.nii.gz"], split="test")
    with pytest.raises(ConfigError, match="--split only applies"):
        predict_folder(run2d[0], src, tmp_path / "out", split="test", progress=False)
    assert len(iter_inputs(run2d[1], split="test")) >= 1  # a dataset root keeps its splits


def fail_at(monkeypatch, n: int) -> None:
    """Make the n-th case written (1-based) fail, as a kill or an error part-way would stop predict."""
    original, calls = FolderWriter.write, {"n": 0}

    def write(self, item, pred):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt(f"killed at case {n}")
        return original(self, item, pred)

    monkeypatch.setattr(FolderWriter, "write", write)


def index_of(out):
    return json.loads((out / "predictions.json").read_text())


def test_a_killed_predict_leaves_an_index_marked_incomplete_and_resume_finishes_it(run2d, tmp_path, monkeypatch):
    """P1: killed at case 3 of the test split: ``complete`` false; --resume keeps the 2 cases, predicts the rest."""
    run, root = run2d
    ids = load_dataset(root).ids
    fail_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        predict_folder(run, root, tmp_path / "out", progress=False)
    index = index_of(tmp_path / "out")
    assert index["complete"] is False and index["expected"] == ids
    assert [c["id"] for c in index["cases"]] == ids[:2]
    kept = {f: (tmp_path / "out" / f).stat().st_mtime_ns for f in (f"{ids[0]}_probs.nii.gz", f"{ids[1]}_seg.nii.gz")}
    monkeypatch.undo()
    with pytest.raises(ConfigError, match=r"--resume.*--overwrite"):
        predict_folder(run, root, tmp_path / "out", progress=False)
    out = predict_folder(run, root, tmp_path / "out", progress=False, resume=True)
    index = index_of(out)
    assert index["complete"] is True and [c["id"] for c in index["cases"]] == ids
    assert {f: (out / f).stat().st_mtime_ns for f in kept} == kept  # the finished cases were not predicted again
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["case"] for r in rows] == ids
    fresh = predict_folder(run, root, tmp_path / "fresh", progress=False)
    assert rows == list(csv.DictReader((fresh / "summary.csv").open()))  # as one uninterrupted run
    for cid in ids:
        np.testing.assert_array_equal(
            read_image(out / f"{cid}_probs.nii.gz").array, read_image(fresh / f"{cid}_probs.nii.gz").array
        )


def test_predict_into_an_earlier_result_never_shrinks_its_index(run2d, tmp_path, monkeypatch):
    """P2 / kp_p3_fail_into_existing: a second predict failing at its 2nd case must not leave a 1-case index."""
    run, root = run2d
    ids = load_dataset(root).ids
    out = predict_folder(run, root, tmp_path / "out", progress=False)
    before = (out / "predictions.json").read_text()
    with pytest.raises(ConfigError, match="earlier prediction"):
        predict_folder(run, root, out, progress=False)
    assert (out / "predictions.json").read_text() == before
    assert predict_folder(run, root, out, progress=False, resume=True) == out  # complete: nothing to predict
    assert (out / "predictions.json").read_text() == before
    for cid in (ids[3], ids[5]):  # listed cases whose files are gone are predicted again
        (out / f"{cid}_seg.nii.gz").unlink()
    fail_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        predict_folder(run, root, out, progress=False, resume=True)
    index = index_of(out)
    assert (out / f"{ids[3]}_seg.nii.gz").is_file() and not (out / f"{ids[5]}_seg.nii.gz").exists()
    assert index["complete"] is False
    assert [c["id"] for c in index["cases"]] == ids  # the failed re-prediction dropped nothing


def test_overwrite_removes_only_the_files_the_old_index_lists(run2d, tmp_path):
    run, root = run2d
    ids = load_dataset(root).ids
    out = predict_folder(run, root, tmp_path / "out", split="test", progress=False)
    (out / "notes.txt").write_text("mine")
    (out / "stranger_probs.nii.gz").write_text("not listed")
    train_id = next(c for c in ids if c not in index_of(out)["expected"])
    out = predict_folder(run, root, out, split="train", progress=False, overwrite=True, measures="confidence")
    index = index_of(out)
    assert index["complete"] is True and index["measures"] == ["confidence"]
    assert train_id in index["expected"] and (out / f"{train_id}_confidence.nii.gz").is_file()
    assert (out / "notes.txt").read_text() == "mine" and (out / "stranger_probs.nii.gz").read_text() == "not listed"
    assert not list(out.glob("*_entropy.nii.gz"))  # the old run's maps, listed in its index, are gone


def test_resume_refuses_other_settings(run2d, tmp_path, monkeypatch):
    run, root = run2d
    fail_at(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        predict_folder(run, root, tmp_path / "out", progress=False, measures="entropy")
    monkeypatch.undo()
    with pytest.raises(ConfigError, match=r"measures: \['entropy'\] -> \['confidence'\]"):
        predict_folder(run, root, tmp_path / "out", progress=False, resume=True, measures="confidence")
    with pytest.raises(ConfigError, match=r"samples: False -> True"):
        predict_folder(run, root, tmp_path / "out", progress=False, resume=True, measures="entropy", save_samples=True)
    with pytest.raises(ConfigError, match="not both"):
        predict_folder(run, root, tmp_path / "out", progress=False, resume=True, overwrite=True)
    assert index_of(tmp_path / "out")["complete"] is False and len(index_of(tmp_path / "out")["cases"]) == 1


def test_out_inside_the_inputs_or_a_foreign_folder_is_refused(run2d, tmp_path):
    """cli_pred_out_eq_input: outputs mixed into the inputs would be read as inputs by the next predict."""
    run, root = run2d
    src = tmp_path / "in"
    write_image(src / "a.nii.gz", np.ones((1, 16, 16), np.float32), spatial_dims=2)
    with pytest.raises(ConfigError, match="is the input folder"):
        predict_folder(run, src, src, progress=False)
    with pytest.raises(ConfigError, match="inside the input folder"):
        predict_folder(run, root, root / "preds", progress=False)
    assert sorted(p.name for p in src.iterdir()) == ["a.nii.gz"] and not (root / "preds").exists()
    rc = main(["predict", "--run", str(run), "--input", str(src), "--out", str(src), "--no-progress"])
    assert rc == 2 and sorted(p.name for p in src.iterdir()) == ["a.nii.gz"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and is not a prediction folder"):
        predict_folder(run, src, tmp_path / "other", progress=False)
    (tmp_path / "empty").mkdir()
    assert index_of(predict_folder(run, src, tmp_path / "empty", progress=False))["complete"] is True


def test_a_second_concurrent_predict_into_one_folder_fails_fast(run2d, tmp_path):
    run, root = run2d
    out = tmp_path / "out"
    with exclusive(out, "prediction folder"):  # another writer holds the folder
        with pytest.raises(DataError, match="lock"):
            predict_folder(run, root, out, split="test", progress=False)
        assert [p.name for p in out.iterdir()] == [LOCK]  # nothing was written
    done = predict_folder(run, root, out, split="test", progress=False)
    assert index_of(done)["complete"] and not (out / LOCK).exists()
