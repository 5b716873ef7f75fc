"""The training loop: run-folder contents, loader, ensembles, parallel members, 3D patches, calibration."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trustseg.cli.main import main
from trustseg.core.errors import ConfigError, DataError, TrainingError, UnknownNameError
from trustseg.core.lock import LOCK, exclusive
from trustseg.data.case import Case
from trustseg.data.synthetic import SynthConfig, make_synthetic_dataset
from trustseg.engine.calibrate import calibrate_run
from trustseg.engine.checkpoint import load_checkpoint
from trustseg.engine.config import MethodConfig, RunConfig, TrainConfig, load_run_config
from trustseg.engine.loader import CaseLoader, random_crop
from trustseg.engine.train import foreground_dice, train
from trustseg.methods.tta import TTA
from trustseg.models.config import NetConfig


def make_data(tmp_path: Path, dims: int = 2, cases: int = 8, size: int = 16, raters: int = 3, ext: str = ".nii.gz"):
    """A tiny synthetic multi-rater dataset."""
    cfg = SynthConfig(cases=cases, raters=raters, dims=dims, size=size, seed=0)
    return make_synthetic_dataset(tmp_path / f"data{dims}d", cfg, ext=ext)


def tiny_cfg(
    root, method: str = "softmax", params: dict | None = None, epochs: int = 2, dropout: float = 0.0, **train_kw
) -> RunConfig:
    """A 2-level U-Net with 4/8 channels, batch 4."""
    kw = {"batch_size": 4, **train_kw}
    return RunConfig(
        data=str(root),
        net=NetConfig(params={"channels": (4, 8), "dropout": dropout}),
        method=MethodConfig(method, params or {}),
        train=TrainConfig(epochs=epochs, **kw),
    )


def weights(run: Path, member: int = 0, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return load_checkpoint(Path(run) / f"member_{member}" / name)["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_train_writes_run_folder(tmp_path):
    root = make_data(tmp_path)
    cfg = tiny_cfg(root)
    summary = train(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert load_run_config(run / "config.yaml") == cfg
    info = json.loads((run / "run.json").read_text())
    assert info["method"] == "softmax" and info["members"] == 1 and info["num_classes"] == 3
    assert info["classes"] == ["background", "organ", "lesion"] and len(info["raters"]) == 3
    assert info["spatial_dims"] == 2 and info["in_channels"] == 1 and info["temperature"] == 1.0
    last = load_checkpoint(run / "member_0" / "last.pt")  # weights_only=True inside
    assert last["epoch"] == 2 and last["step"] == 2 * 2  # 6 training cases / batch 4 -> 2 steps per epoch
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "history"} <= set(last)
    assert last["scheduler"]["last_epoch"] == 4
    best = load_checkpoint(run / "member_0" / "best.pt")
    assert best["epoch"] == last["best_epoch"] and best["val_dice"] == pytest.approx(last["best_dice"])
    rows = list(csv.DictReader((run / "member_0" / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert all(np.isfinite(float(r["loss"])) and 0 <= float(r["val_dice"]) <= 1 for r in rows)
    assert float(rows[-1]["lr"]) == pytest.approx(0.0, abs=1e-12)  # cosine schedule ends at 0
    m = summary["members"][0]
    assert m["best_val_dice"] == pytest.approx(max(float(r["val_dice"]) for r in rows))
    assert Path(m["best"]).is_file() and summary["method"] == "softmax"


def test_training_is_deterministic_and_learns(tmp_path):
    root = make_data(tmp_path)
    a = train(tiny_cfg(root, epochs=3), tmp_path / "a", progress=False)
    train(tiny_cfg(root, epochs=3), tmp_path / "b", progress=False)
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    train(tiny_cfg(root, epochs=3, seed=1), tmp_path / "c", progress=False)
    wa, wc = weights(tmp_path / "a"), weights(tmp_path / "c")
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)  # another seed, other weights
    hist = list(csv.DictReader((tmp_path / "a" / "member_0" / "history.csv").open()))
    assert float(hist[-1]["loss"]) < float(hist[0]["loss"])
    assert a["members"][0]["epochs"] == 3


def test_ensemble_members_and_parallel_workers(tmp_path):
    root = make_data(tmp_path)
    cfg = tiny_cfg(root, "ensemble", {"members": 2}, epochs=1)
    seq = train(cfg, tmp_path / "seq", progress=False)
    assert [m["member"] for m in seq["members"]] == [0, 1]
    w0, w1 = weights(tmp_path / "seq", 0), weights(tmp_path / "seq", 1)
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)  # members differ
    par = train(cfg, tmp_path / "par", progress=False, workers=2)
    assert [m["member"] for m in par["members"]] == [0, 1]
    for m in (0, 1):
        assert_same_weights(weights(tmp_path / "seq", m), weights(tmp_path / "par", m))
        assert (tmp_path / "par" / f"member_{m}" / "train.log").is_file()


def test_failing_member_process_reports_its_log(tmp_path):
    from trustseg.engine.member import run_members_parallel

    root = make_data(tmp_path)
    train(tiny_cfg(root, "ensemble", {"members": 2}, epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(RuntimeError, match=r"member 5 failed(.|\n)*out of range"):
        run_members_parallel(tmp_path / "run", [5], workers=2, resume=False)


def test_3d_patches_and_sliding_validation(tmp_path):
    root = make_data(tmp_path, dims=3, cases=4, size=16)
    cfg = tiny_cfg(root, epochs=1, batch_size=2, patch_size=(8, 8, 8))
    summary = train(cfg, tmp_path / "run", progress=False)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["patch_size"] == [8, 8, 8] and info["spatial_dims"] == 3
    assert 0 <= summary["members"][0]["best_val_dice"] <= 1


def test_calibrate_stores_temperature(tmp_path):
    root = make_data(tmp_path)
    summary = train(tiny_cfg(root, epochs=1), tmp_path / "run", progress=False, calibrate=True)
    t = json.loads((tmp_path / "run" / "run.json").read_text())["temperature"]
    assert t > 0 and t != 1.0 and summary["temperature"] == pytest.approx(t)
    assert calibrate_run(tmp_path / "run") == pytest.approx(t)  # deterministic refit
    train(tiny_cfg(root, epochs=1), tmp_path / "run", resume=True, progress=False)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["temperature"] == pytest.approx(t)  # kept
    train(tiny_cfg(root, epochs=1), tmp_path / "run", progress=False, overwrite=True)  # a fresh run: old T gone
    assert json.loads((tmp_path / "run" / "run.json").read_text())["temperature"] == 1.0


def test_splits_folds_and_max_train_cases(tmp_path):
    from trustseg.data.dataset import load_dataset
    from trustseg.engine.train import split_ids

    root = make_data(tmp_path)
    ds = load_dataset(root)
    assert split_ids(ds, tiny_cfg(root)) == (ds.split("train"), ds.split("val"))
    assert split_ids(ds, tiny_cfg(root, fold=1)) == ds.fold(1)
    train_ids, _ = split_ids(ds, tiny_cfg(root, max_train_cases=2))
    assert train_ids == ds.split("train")[:2]


def test_val_every_and_no_validation_split(tmp_path):
    from trustseg.data.dataset import write_dataset
    from trustseg.data.synthetic import generate_case

    root = make_data(tmp_path)
    train(tiny_cfg(root, epochs=3, val_every=2), tmp_path / "run", progress=False)
    rows = list(csv.DictReader((tmp_path / "run" / "member_0" / "history.csv").open()))
    assert [r["val_dice"] != "" for r in rows] == [False, True, True]  # epoch 2, and the last epoch always

    synth = SynthConfig(cases=4, raters=2, dims=2, size=16, seed=0)
    ids = [f"synth_{i:04d}" for i in range(4)]
    splits = {"fixed": {"train": ids[:3], "val": [], "test": ids[3:]}}
    novalroot = write_dataset(
        [generate_case(i, synth) for i in range(4)], tmp_path / "noval", ["b", "o", "l"], splits=splits
    )
    summary = train(tiny_cfg(novalroot, epochs=2), tmp_path / "noval_run", progress=False)
    assert summary["members"][0]["best_val_dice"] is None
    best = load_checkpoint(tmp_path / "noval_run" / "member_0" / "best.pt")
    assert best["epoch"] == 2  # without validation cases best.pt is the last epoch
    assert_same_weights(best["model"], weights(tmp_path / "noval_run"))


def test_bad_method_and_missing_data(tmp_path):
    root = make_data(tmp_path)
    with pytest.raises(UnknownNameError, match="did you mean 'softmax'"):
        train(tiny_cfg(root, "softmx"), tmp_path / "r1", progress=False)
    with pytest.raises(DataError, match="dataset.json"):
        train(tiny_cfg(tmp_path / "nowhere"), tmp_path / "r2", progress=False)


def test_edue_needs_raters(tmp_path):
    from trustseg.methods import METHODS

    if "edue" not in METHODS:
        pytest.skip("edue is not registered yet")
    root = make_data(tmp_path, raters=1)
    with pytest.raises(DataError, match="at least 2 raters"):
        train(tiny_cfg(root, "edue"), tmp_path / "run", progress=False)


# ----------------------------------------------------------------------------------------------------- loader
def _cases(n: int = 5, size: tuple[int, ...] = (6, 6)) -> dict[str, Case]:
    rng = np.random.default_rng(0)
    return {
        f"c{i}": Case(f"c{i}", rng.random((1, *size), dtype=np.float32), rng.integers(0, 2, (2, *size)))
        for i in range(n)
    }


def test_loader_seeded_shuffle_and_sharding():
    cases = _cases(5)
    loader = CaseLoader(cases.__getitem__, list(cases), 2, batch_size=2, shuffle=True, seed=3)
    assert len(loader) == 3
    order0, order1 = loader.order(0), loader.order(1)
    assert sorted(order0) == sorted(cases) and order0 == loader.order(0) and order0 != order1
    batches = list(loader.batches(0))
    assert [ids for ids, _ in batches] == [order0[0:2], order0[2:4], order0[4:]]
    ids, batch = batches[0]
    assert batch.image.shape == (2, 1, 6, 6) and batch.image.dtype == torch.float32
    assert batch.labels.shape == (2, 2, 6, 6) and batch.labels.dtype == torch.int64
    assert torch.equal(batch.image[0], torch.from_numpy(cases[ids[0]].image))
    # Two ranks split every global batch; the last one (1 case) is topped up so both ranks step.
    r0 = [ids for ids, _ in loader.batches(0, rank=0, world_size=2)]
    r1 = [ids for ids, _ in loader.batches(0, rank=1, world_size=2)]
    assert len(r0) == len(r1) == 3
    assert [a + b for a, b in zip(r0[:2], r1[:2])] == [order0[0:2], order0[2:4]]
    assert r0[2] == [order0[4]] and r1[2] == [order0[0]]


def test_loader_pads_to_multiple_and_batch_max():
    cases = {
        "a": Case("a", np.ones((1, 5, 7), np.float32), np.ones((1, 5, 7), np.int64)),
        "b": Case("b", np.ones((1, 6, 3), np.float32), np.ones((1, 6, 3), np.int64)),
    }
    _, batch = next(CaseLoader(cases.__getitem__, ["a", "b"], 2, batch_size=2, pad_multiple=4).batches(0))
    assert batch.image.shape == (2, 1, 8, 8)
    assert batch.image[0, 0, :5, :7].eq(1).all() and batch.image[0, 0, 5:].eq(0).all()
    assert batch.labels[1, 0, :6, :3].eq(1).all() and batch.labels[1, 0, :, 3:].eq(0).all()  # padding = background


def test_random_crop_pads_and_is_seeded():
    img = np.arange(4 * 10 * 3, dtype=np.float32).reshape(1, 4, 10, 3)
    lab = np.ones((2, 4, 10, 3), np.int64)
    g = torch.Generator().manual_seed(0)
    a, la = random_crop(img, lab, (6, 5, 3), g)
    assert a.shape == (1, 6, 5, 3) and la.shape == (2, 6, 5, 3)
    assert (a[:, 4:] == 0).all() and (la[:, 4:] == 0).all()  # axis 0 padded (4 < 6)
    b, _ = random_crop(img, lab, (6, 5, 3), torch.Generator().manual_seed(0))
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="axes"):
        random_crop(img, lab, (6, 5), g)


def test_foreground_dice_by_hand():
    pred = torch.tensor([[[0, 1, 1, 2]]])
    target = torch.tensor([[[0, 1, 0, 0]]])
    # class 1: 2*1/(2+1) = 2/3; class 2: predicted only -> 0
    assert foreground_dice(pred, target, 3) == pytest.approx((2 / 3 + 0) / 2)
    assert foreground_dice(target, target, 3) == pytest.approx(1.0)  # class 2 absent from both -> 1


def test_divergence_is_a_clear_error_and_leaves_no_non_finite_checkpoint(tmp_path, capsys):
    root = make_data(tmp_path)
    # a finite but absurd learning rate: the first step sends the weights to ~1e30, the next loss overflows
    with pytest.raises(TrainingError, match=r"member 0: training diverged, .* at epoch 1, step \d+; use a lower"):
        train(tiny_cfg(root, epochs=2, lr=1e30), tmp_path / "run", progress=False)
    for name in ("best.pt", "last.pt"):
        path = tmp_path / "run" / "member_0" / name
        assert not path.exists() or all(torch.isfinite(t).all() for t in weights(tmp_path / "run", name=name).values())
    rc = main(["train", "--data", str(root), "--out", str(tmp_path / "cli"), "--set", "train.lr=1e30", "--epochs", "2"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "training diverged" in err and len(err.splitlines()) == 1


def test_weights_that_turn_non_finite_at_an_epoch_end_are_never_saved(tmp_path, monkeypatch):
    root = make_data(tmp_path)
    step = torch.optim.AdamW.step

    def poisoning_step(self, *args, **kwargs):  # the last step of epoch 2 leaves a NaN weight behind
        out = step(self, *args, **kwargs)
        if self._trustseg_steps == 2:
            next(p for g in self.param_groups for p in g["params"]).data.view(-1)[0] = float("nan")
        self._trustseg_steps += 1
        return out

    monkeypatch.setattr(torch.optim.AdamW, "_trustseg_steps", 1, raising=False)
    monkeypatch.setattr(torch.optim.AdamW, "step", poisoning_step)
    # batch 64: one step per epoch, so the loss of epoch 2 is still finite and only the weights check can see it
    with pytest.raises(TrainingError, match="the weights are not finite at epoch 2, step 2"):
        train(tiny_cfg(root, epochs=3, batch_size=64), tmp_path / "run", progress=False)
    best = load_checkpoint(tmp_path / "run" / "member_0" / "best.pt")
    last = load_checkpoint(tmp_path / "run" / "member_0" / "last.pt")
    assert best["epoch"] == 1 and last["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in (*best["model"].values(), *last["model"].values()))


# --- outputs are never destroyed (audit F4 (a)/(b), F16 conc) ---


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_train_into_an_existing_run_needs_resume_or_overwrite(tmp_path, capsys):
    root = make_data(tmp_path)
    run = tmp_path / "run"
    train(tiny_cfg(root, epochs=1), run, progress=False)
    before = _files(run)
    with pytest.raises(ConfigError, match=r"run: is an existing run; pass --resume .* or --overwrite"):
        train(tiny_cfg(root, method="mc-dropout", epochs=1, dropout=0.2), run, progress=False)
    assert _files(run) == before
    rc = main(["train", "--data", str(root), "--out", str(run), "--epochs", "1", "--no-progress"])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err and _files(run) == before
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("precious")
    with pytest.raises(ConfigError, match="mine: exists, is not empty and is not a trustseg run folder"):
        train(tiny_cfg(root, epochs=1), other, progress=False, overwrite=True)
    assert _files(other) == {"notes.txt": b"precious"}


def test_failing_overwrite_in_epoch_1_leaves_the_earlier_run_byte_identical(tmp_path):
    """F4 (a): a data error in the first epoch of the replacing run."""
    root = make_data(tmp_path, ext=".npy")
    run = tmp_path / "run"
    train(tiny_cfg(root, epochs=1), run, progress=False)
    before = _files(run)
    for f in (root / "labels").rglob("*.npy"):
        f.write_bytes(b"not a label map")
    with pytest.raises(DataError):
        train(tiny_cfg(root, epochs=2), run, progress=False, overwrite=True)
    assert _files(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data2d", "run"]  # no half-trained folder left


def test_failure_after_the_run_files_keeps_config_and_weights_together(tmp_path, monkeypatch):
    """F4 (b): the new config.yaml/run.json never describe the old weights."""
    root = make_data(tmp_path)
    run = tmp_path / "run"
    train(tiny_cfg(root, epochs=1), run, progress=False)
    before = _files(run)

    def fail(cfg, out, member, **kw):
        assert (out / "config.yaml").is_file() and out != run  # the run files went to the replacement folder
        raise DataError("no training case", out)

    monkeypatch.setattr("trustseg.engine.run.train_member", fail)
    with pytest.raises(DataError, match="no training case"):
        train(tiny_cfg(root, method="mc-dropout", epochs=1, dropout=0.2), run, progress=False, overwrite=True)
    assert _files(run) == before
    monkeypatch.undo()
    summary = train(tiny_cfg(root, method="mc-dropout", epochs=2, dropout=0.2), run, progress=False, overwrite=True)
    assert load_run_config(run / "config.yaml").method.name == "mc-dropout"
    assert summary["members"][0]["epochs"] == 2 and summary["run"] == str(run)
    assert json.loads((run / "run.json").read_text())["method"] == "mc-dropout"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data2d", "run"] and not (run / LOCK).exists()


def test_a_second_concurrent_train_fails_fast(tmp_path):
    """F16 conc: the run folder is locked while it is trained."""
    root = make_data(tmp_path)
    run = tmp_path / "run"
    with exclusive(run, "run"):
        with pytest.raises(DataError, match=r"run is being written by process \d+; wait or remove"):
            train(tiny_cfg(root, epochs=1), run, progress=False)
        assert sorted(p.name for p in run.iterdir()) == [LOCK]
    train(tiny_cfg(root, epochs=1), run, progress=False)  # a folder holding only a released lock is empty
    assert not (run / LOCK).exists() and (run / "member_0" / "last.pt").is_file()
    before = _files(run)
    with exclusive(run, "run"):  # an existing run being written: the lock is reported, not the missing options
        for kw in ({}, {"overwrite": True}, {"resume": True}):
            with pytest.raises(DataError, match="run is being written by process"):
                train(tiny_cfg(root, epochs=1), run, progress=False, **kw)
    assert _files(run) == before


def test_tta_epochs_are_validated_as_its_base_methods_run(tmp_path, monkeypatch):
    """TTA trains its base method and validates with it (one view): the same seed gives softmax's weights,
    history Dice and best epoch, and validation never runs the views."""
    root = make_data(tmp_path)
    train(tiny_cfg(root, epochs=3), tmp_path / "soft", progress=False)
    monkeypatch.setattr(TTA, "predict", lambda *a, **k: pytest.fail("validation ran the TTA views"))
    train(tiny_cfg(root, "tta", epochs=3), tmp_path / "tta", progress=False)
    rows = [list(csv.DictReader((tmp_path / r / "member_0" / "history.csv").open())) for r in ("soft", "tta")]
    assert [r["val_dice"] for r in rows[0]] == [r["val_dice"] for r in rows[1]]
    assert_same_weights(weights(tmp_path / "soft", name="best.pt"), weights(tmp_path / "tta", name="best.pt"))
