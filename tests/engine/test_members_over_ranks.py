"""``trustseg predict --shard members``: the members of an ensemble spread over ``torchrun`` ranks (2 gloo
processes on the CPU) give the one-process prediction folder, to float round-off; what it cannot do is refused."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.engine.test_train import make_data, tiny_cfg
from trustseg.cli.main import main
from trustseg.core.errors import ConfigError
from trustseg.core.predictive import PRECOMPUTED, Predictive
from trustseg.data.io import read_image
from trustseg.data.predictions import case_files
from trustseg.engine.distributed import DistInfo
from trustseg.engine.members_over_ranks import accumulate, as_prediction, member_measures, reduce_moments
from trustseg.engine.prediction_folder import FolderWriter, InputItem, iter_inputs
from trustseg.engine.train import train
from trustseg.inference.predictor import MemberPredictor, load_predictor
from trustseg.measures.pixel import compute_measures

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-5  # float32 sums in another order than the stacked mean: |difference| <= TOL on values in [0, ln K]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 4-member ensemble and a softmax run, each trained 1 epoch on tiny 2D NIfTI data, and the data root."""
    tmp = tmp_path_factory.mktemp("members")
    root = make_data(tmp)
    train(tiny_cfg(root, "ensemble", {"members": 4}, epochs=1), tmp / "ens", progress=False)
    train(tiny_cfg(root, epochs=1), tmp / "soft", progress=False)
    return tmp / "ens", tmp / "soft", root


def _array(path: Path) -> np.ndarray:
    return np.load(path) if path.suffix == ".npy" else np.asarray(read_image(path).array)


def test_member_sums_give_the_stacked_measures(runs):
    ens, _, root = runs
    predictor = load_predictor(ens, "cpu")
    assert isinstance(predictor, MemberPredictor) and predictor.member_count == 4
    assert "members" in predictor.info.capabilities
    item = iter_inputs(root)[0]()
    names = member_measures(3, None)
    assert names == ["confidence", "entropy", "expected_entropy", "mi", "epkl", "variance"]
    # two "ranks" of members (0, 2) and (1, 3), their sums added as reduce does
    a, b = (accumulate(predictor, item, m, names) for m in ((0, 2), (1, 3)))
    for mine, theirs in zip((a.s1, a.sx, a.sl, a.s2), (b.s1, b.sx, b.sl, b.s2)):
        assert mine is not None and theirs is not None
        mine += theirs
    a.count += b.count
    assert reduce_moments(a, DistInfo()) is a and a.count == 4
    summed = as_prediction(a)
    full = predictor.predict(item.image, item.spacing)
    assert full.probs.shape[0] == 4 and summed.probs.shape == (1, *full.probs.shape[1:])
    assert torch.allclose(summed.probs[0], full.mean(), atol=TOL)
    expected = compute_measures(full, names)
    for name in names:
        got = summed.extras[f"{PRECOMPUTED}{name}"][:, 0]
        assert torch.allclose(got, expected[name], atol=TOL), name


def test_precomputed_measures_are_written_slab_by_slab(tmp_path):
    """A 3D ``.npy`` case goes through the slab writer: a precomputed map is written as given (not recomputed
    from the one-sample mean, which would give mi = 0)."""
    k, shape = 2, (5, 4, 3)
    probs = torch.full((1, 1, k, *shape), 0.5)
    mi = torch.arange(float(np.prod(shape))).reshape(1, 1, *shape) / 100
    pred = Predictive(probs=probs, extras={f"{PRECOMPUTED}mi": mi})
    writer = FolderWriter(tmp_path / "out", {"method": "ensemble", "classes": ["a", "b"]}, ["mi"])
    writer.begin(["c"])
    item = InputItem("c", tmp_path / "c.npy", np.zeros((1, *shape), np.float32), (1.0,) * 3, (0.0,) * 3, None, ".npy")
    writer.write(item, pred)
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "c_mi.npy"), mi[0, 0].numpy())


def _lines(err: str) -> list[str]:
    return [line for line in err.strip().splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("which", "world", "extra", "message"),
    [
        ("ens", None, [], "launch with `torchrun"),
        ("ens", "8", [], "8 ranks but the model has 4 members"),
        ("soft", "2", [], "needs a model of several member networks"),
        ("ens", "2", ["--samples"], "--samples is not written with --shard members"),
    ],
)
def test_refusals_exit_2_with_one_line(runs, tmp_path, monkeypatch, capsys, which, world, extra, message):
    ens, soft, root = runs
    if world is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", world)
        monkeypatch.setenv("RANK", "0")
    model = ens if which == "ens" else soft
    args = ["predict", "--model", str(model), "--input", str(root), "--out", str(tmp_path / "o"), "--no-progress"]
    code = main([*args, "--shard", "members", *extra])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(_lines(err)) == 1 and message in err, err
    assert not (tmp_path / "o").exists()


def test_measures_that_do_not_stream_are_refused():
    with pytest.raises(ConfigError, match=r"\['vacuity'\] do not follow from the members' running sums"):
        member_measures(3, ["entropy", "vacuity"])
    assert member_measures(3, ["mi", "entropy"]) == ["mi", "entropy"]


def _torchrun2(args: list[str]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "trustseg"]
    proc = subprocess.run([*cmd, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc.stdout


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "summary.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_two_ranks_of_members_write_the_one_process_folder(runs, tmp_path):
    ens, _, root = runs
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--model", str(ens), "--input", str(root), "--no-progress"]
    assert main(["predict", *common, "--out", str(one)]) == 0
    _torchrun2(["predict", *common, "--out", str(two), "--shard", "members"])
    ia, ib = (json.loads((f / "predictions.json").read_text()) for f in (one, two))
    assert ia == ib and ia["complete"] and len(ia["cases"]) >= 1  # the same index, byte for byte in content
    assert ia["measures"] == ["confidence", "entropy", "expected_entropy", "mi", "epkl", "variance"]
    worst = 0.0
    for entry in ia["cases"]:
        fa, fb = case_files(one, entry), case_files(two, entry)
        assert fa.keys() == fb.keys() and "samples" not in fa
        pa = _array(fa["probs"])
        for key in fa:
            a, b = _array(fa[key]), _array(fb[key])
            assert a.shape == b.shape, key
            if key == "seg":  # the same argmax except where p̄'s top two classes tie to round-off
                top2 = np.sort(pa, axis=0)[-2:]
                assert np.all((a == b) | (top2[1] - top2[0] < TOL)), entry["id"]
            else:
                np.testing.assert_allclose(b, a, atol=TOL, rtol=0, err_msg=f"{entry['id']} {key}")
                worst = max(worst, float(np.abs(b.astype(np.float64) - a).max()))
    ra, rb = _rows(one), _rows(two)
    assert [r.keys() for r in ra] == [r.keys() for r in rb] and [r["case"] for r in ra] == [r["case"] for r in rb]
    for x, y in zip(ra, rb):
        for key in x:
            if key != "case":
                assert float(y[key]) == pytest.approx(float(x[key]), abs=TOL), key
    print(f"largest |2 ranks - 1 process| over the arrays: {worst:.3g}")
    assert worst > 0  # the member sums ran (--shard cases writes the one-process bytes exactly)


@pytest.mark.slow
def test_members_over_ranks_resume_a_killed_run(runs, tmp_path):
    """A run killed after its first case (index incomplete, the second case's files absent) is resumed: the kept
    case is not predicted again (its file stays as it was), the missing one is written, the index completes."""
    ens, _, root = runs
    out = tmp_path / "pred"
    common = ["--model", str(ens), "--input", str(root), "--no-progress", "--out", str(out)]
    _torchrun2(["predict", *common, "--shard", "members"])
    index = json.loads((out / "predictions.json").read_text())
    assert len(index["cases"]) >= 2
    kept, lost = index["cases"][0], index["cases"][1]
    for path in case_files(out, lost).values():
        path.unlink()
    killed = {**index, "complete": False, "cases": [c for c in index["cases"] if c["id"] != lost["id"]]}
    (out / "predictions.json").write_text(json.dumps(killed))
    before = case_files(out, kept)["probs"].stat().st_mtime_ns
    _torchrun2(["predict", *common, "--shard", "members", "--resume"])
    again = json.loads((out / "predictions.json").read_text())
    assert again["complete"] and sorted(c["id"] for c in again["cases"]) == sorted(c["id"] for c in index["cases"])
    assert case_files(out, kept)["probs"].stat().st_mtime_ns == before
    assert all(p.is_file() for p in case_files(out, lost).values())
