"""Saved probabilities of another tool: every layout converts to the same trustseg prediction folder, and evaluates
to the numbers of trustseg's own predictions of the same probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.engine.test_train import make_data, tiny_cfg
from trustseg.cli.main import main
from trustseg.core.errors import ConfigError, DataError
from trustseg.data.dataset import load_dataset
from trustseg.data.predictions import load_prediction, read_index
from trustseg.data.saved_predictions import read_saved, scan_saved
from trustseg.engine.import_predictions import import_predictions
from trustseg.engine.predict import predict_folder
from trustseg.engine.run import train
from trustseg.evaluation import evaluate_predictions
from trustseg.evaluation.results import flatten


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """A tiny dataset, an MC-dropout run's test predictions (samples saved) and its dataset."""
    tmp = tmp_path_factory.mktemp("saved")
    root = make_data(tmp, cases=8, size=16, ext=".npy")
    train(tiny_cfg(root, "mc-dropout", {"samples": 3}, epochs=1, dropout=0.2), tmp / "run", progress=False)
    pred = predict_folder(tmp / "run", root, tmp / "pred", split="test", progress=False, save_samples=True)
    return tmp, root, pred


def _members(pred, cid):
    return load_prediction(pred, cid)["samples"].astype(np.float32)  # (M, K, *sp) as trustseg wrote them


def _same_results(a, b, tol=1e-5):
    fa, fb = flatten(a["summary"]), flatten(b["summary"])
    assert fa.keys() == fb.keys()
    for k in fa:
        if isinstance(fa[k], float):
            assert fa[k] == pytest.approx(fb[k], rel=tol, abs=tol, nan_ok=True), k


def test_every_layout_reads_the_same_members(predicted, tmp_path):
    _, root, pred = predicted
    ds = load_dataset(root)
    ids = [c["id"] for c in read_index(pred)["cases"]]
    stacked, members, case_major = tmp_path / "stacked", tmp_path / "members", tmp_path / "case_major"
    for cid in ids:
        s = _members(pred, cid)
        stacked.mkdir(exist_ok=True)
        np.savez(stacked / f"{cid}.npz", probabilities=s)
        for m in range(s.shape[0]):
            (members / f"fold_{m}").mkdir(parents=True, exist_ok=True)
            np.save(members / f"fold_{m}" / f"{cid}.npy", s[m])
            (case_major / cid).mkdir(parents=True, exist_ok=True)
            np.save(case_major / cid / f"member{m}.npy", s[m])
    (stacked / f"{ids[0]}.pkl").write_bytes(b"never read")  # nnU-Net's pickles are ignored
    for folder in (stacked, members, case_major):
        found = scan_saved(folder, ds.ids)
        assert list(found) == ids
        for cid in ids:
            got = read_saved(found[cid], ds[cid].labels.shape[1:], ds.num_classes)
            assert np.array_equal(got, _members(pred, cid)), (folder.name, cid)


def test_saved_members_evaluate_to_trustsegs_own_numbers(predicted, tmp_path):
    """Members saved from trustseg's own samples (float16 on disk) give the same results as trustseg's folder,
    within the float16 rounding of the samples (the mean probabilities differ by < 1e-3)."""
    _, root, pred = predicted
    saved = tmp_path / "saved"
    for c in read_index(pred)["cases"]:
        for m, s in enumerate(_members(pred, c["id"])):
            (saved / f"fold_{m}").mkdir(parents=True, exist_ok=True)
            np.save(saved / f"fold_{m}" / f"{c['id']}.npy", s)
    ours = evaluate_predictions(pred, root, tmp_path / "ours" / "results.json", split="test")
    out = import_predictions(saved, root, tmp_path / "imported", split="test")
    index = read_index(out)
    assert index["complete"] and sorted(index["measures"]) == sorted(read_index(pred)["measures"])
    theirs = evaluate_predictions(out, root, tmp_path / "theirs" / "results.json", split="test")
    _same_results(ours, theirs, tol=2e-3)
    assert theirs["summary"]["ged2_iou"] == ours["summary"]["ged2_iou"]  # from the samples: identical


def test_one_file_per_case_without_members_is_exact(predicted, tmp_path):
    """(K, *sp) float32 probabilities of a case, saved as nnU-Net does (npz 'probabilities', spatial axes
    reversed): the imported folder's probabilities are trustseg's exactly, and so is every number."""
    _, root, pred = predicted
    saved = tmp_path / "nnunet_like"
    saved.mkdir()
    for c in read_index(pred)["cases"]:
        p = load_prediction(pred, c["id"])["probs"]
        np.savez(saved / f"{c['id']}.npz", probabilities=p.transpose(0, 2, 1) + 0)
    # a square case reads the same both ways round, so the order is given (auto would take it as it is)
    cmd = ["evaluate", "--pred", str(saved), "--data", str(root), "--out", str(tmp_path / "ev" / "r.json")]
    assert main([*cmd, "--spatial-order", "reversed"]) == 0
    converted = tmp_path / "ev" / "r_predictions"
    for c in read_index(pred)["cases"]:
        assert np.array_equal(load_prediction(converted, c["id"])["probs"], load_prediction(pred, c["id"])["probs"])
    theirs = json.loads((tmp_path / "ev" / "r.json").read_text())
    ours = evaluate_predictions(pred, root, tmp_path / "ours" / "results.json")
    for key in ("dice/majority/mean", "ece_toplabel/majority/all", "nll/soft/all"):
        assert flatten(theirs["summary"])[key] == pytest.approx(flatten(ours["summary"])[key], abs=1e-7)
    # a rerun replaces the folder trustseg converted (it is ours), it does not refuse it
    assert main([*cmd, "--spatial-order", "reversed"]) == 0


def test_logits_and_bad_arrays_are_named(predicted, tmp_path):
    _, root, pred = predicted
    cid = read_index(pred)["cases"][0]["id"]
    saved = tmp_path / "logits"
    saved.mkdir()
    np.save(saved / f"{cid}.npy", np.log(load_prediction(pred, cid)["probs"] + 1e-6) + 3.0)
    with pytest.raises(DataError, match="--logits"):
        import_predictions(saved, root, tmp_path / "a")
    out = import_predictions(saved, root, tmp_path / "b", kind="logits")
    p = load_prediction(out, cid)["probs"]
    assert np.allclose(p, load_prediction(pred, cid)["probs"], atol=1e-4)
    np.save(saved / f"{cid}.npy", np.zeros((5, 3, 16)))
    with pytest.raises(DataError, match=r"not \(K=3, \*spatial\)"):
        import_predictions(saved, root, tmp_path / "c", kind="logits")
    train_case = load_dataset(root).split("train")[0]
    np.save(saved / f"{train_case}.npy", np.zeros((3, 16, 16), np.float32))
    with pytest.raises(DataError, match="cases of split 'train' have no saved probabilities"):
        import_predictions(saved, root, tmp_path / "d", kind="logits", split="train")
    with pytest.raises(ConfigError, match="inside"):
        import_predictions(saved, root, saved / "out")
    with pytest.raises(ConfigError, match="already a trustseg prediction folder"):
        import_predictions(tmp_path / "b", root, tmp_path / "e")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no saved probabilities"):
        import_predictions(tmp_path / "empty", root, tmp_path / "f")
