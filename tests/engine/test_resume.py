"""Resume: an interrupted run continued from last.pt ends bit-identical to an uninterrupted one."""

from __future__ import annotations

import csv

import pytest
import torch

from tests.engine.test_train import assert_same_weights, make_data, tiny_cfg, weights
from trustseg.core.errors import ConfigError
from trustseg.engine.checkpoint import load_checkpoint
from trustseg.engine.train import train
from trustseg.methods.softmax import LogitMethod


class Interrupt(RuntimeError):
    """Stands for Ctrl-C / a killed job in the middle of an epoch."""


def interrupt_at(monkeypatch, epoch: int, step_in_epoch: int = 1, steps_per_epoch: int = 2) -> None:
    """Make every logit-method loss call raise at the given epoch (0-based) and step within it."""
    original = LogitMethod.loss

    def loss(self, model, batch, ctx):
        if ctx.epoch == epoch and ctx.step == epoch * steps_per_epoch + step_in_epoch:
            raise Interrupt(f"interrupted at epoch {epoch}")
        return original(self, model, batch, ctx)

    monkeypatch.setattr(LogitMethod, "loss", loss)


def test_resume_reproduces_uninterrupted_run(tmp_path, monkeypatch):
    root = make_data(tmp_path)
    # Dropout (global RNG) and a random rater per image and step (ctx.generator) must also replay exactly.
    cfg = tiny_cfg(root, params={"target": "random_rater"}, epochs=3, dropout=0.3)
    train(cfg, tmp_path / "straight", progress=False)

    interrupt_at(monkeypatch, epoch=2)  # dies in the middle of the third epoch
    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "resumed", progress=False)
    state = load_checkpoint(tmp_path / "resumed" / "member_0" / "last.pt")
    assert state["epoch"] == 2  # the last complete epoch's checkpoint is intact
    rows = list(csv.DictReader((tmp_path / "resumed" / "member_0" / "history.csv").open()))
    assert len(rows) == 2
    assert not list((tmp_path / "resumed" / "member_0").glob(".*tmp*"))  # no temporary files left behind

    monkeypatch.undo()
    summary = train(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert summary["members"][0]["epochs"] == 3
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "resumed"))
    assert_same_weights(weights(tmp_path / "straight", name="best.pt"), weights(tmp_path / "resumed", name="best.pt"))
    a = load_checkpoint(tmp_path / "straight" / "member_0" / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "member_0" / "last.pt")
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    assert [r["loss"] for r in a["history"]] == [r["loss"] for r in b["history"]]


def test_resume_refuses_other_config(tmp_path):
    root = make_data(tmp_path)
    train(tiny_cfg(root, epochs=1), tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match=r"train.epochs: 1 -> 2.*train.lr"):
        train(tiny_cfg(root, epochs=2, lr=1e-3), tmp_path / "run", resume=True, progress=False)
    summary = train(tiny_cfg(str(root) + "/", epochs=1), tmp_path / "run", resume=True, progress=False)
    assert summary["members"][0]["epochs"] == 1  # same config (data spelled differently): nothing left to do


def test_resume_skips_finished_members(tmp_path, monkeypatch):
    root = make_data(tmp_path)
    cfg = tiny_cfg(root, "ensemble", {"members": 2}, epochs=2)
    train(cfg, tmp_path / "straight", progress=False)

    calls = {"n": 0}
    original = LogitMethod.loss

    def loss(self, model, batch, ctx):  # member 0 trains 4 steps; member 1 dies on its 2nd step
        calls["n"] += 1
        if calls["n"] == 6:
            raise Interrupt("member 1 interrupted")
        return original(self, model, batch, ctx)

    monkeypatch.setattr(LogitMethod, "loss", loss)
    with pytest.raises(Interrupt):
        train(cfg, tmp_path / "resumed", progress=False)
    assert load_checkpoint(tmp_path / "resumed" / "member_0" / "last.pt")["epoch"] == 2
    assert not (tmp_path / "resumed" / "member_1" / "last.pt").exists()
    before = (tmp_path / "resumed" / "member_0" / "last.pt").stat().st_mtime_ns

    calls["n"] = -1000  # no more interruptions
    train(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert (tmp_path / "resumed" / "member_0" / "last.pt").stat().st_mtime_ns == before  # finished: skipped
    for m in (0, 1):
        assert_same_weights(weights(tmp_path / "straight", m), weights(tmp_path / "resumed", m))


def test_resume_removes_leftover_temp_files(tmp_path):
    """S2 leftover: a kill during an atomic write leaves ``.NAME.XXXX.tmp.EXT``; resume removes it, nothing else."""
    root = make_data(tmp_path)
    cfg = tiny_cfg(root, epochs=1)
    train(cfg, tmp_path / "run", progress=False)
    mdir = tmp_path / "run" / "member_0"
    litter = [mdir / ".last.pt.k3j_9xq2.tmp.pt", mdir / ".best.pt.ab12cd34.tmp.pt", mdir / ".history.csv.zz.tmp.csv"]
    for p in litter:
        p.write_bytes(b"half a checkpoint")
    keep = [mdir / ".notes.txt", mdir / ".last.pt.x.tmp.csv", mdir / "my.tmp.pt"]  # not the atomic-write pattern
    for p in keep:
        p.write_text("mine")
    summary = train(cfg, tmp_path / "run", resume=True, progress=False)
    assert summary["members"][0]["epochs"] == 1
    assert [p for p in litter if p.exists()] == []
    assert all(p.read_text() == "mine" for p in keep)


def test_resume_repairs_short_history(tmp_path):
    """crash_s6sim_resume: killed after the final epoch's last.pt but before history.csv -> one row short."""
    root = make_data(tmp_path)
    cfg = tiny_cfg(root, epochs=2)
    train(cfg, tmp_path / "run", progress=False)
    hist = tmp_path / "run" / "member_0" / "history.csv"
    full = hist.read_text()
    lines = full.splitlines(keepends=True)
    assert len(lines) == 3  # header + 2 epochs
    hist.write_text("".join(lines[:2]))  # the state the simulated kill leaves
    train(cfg, tmp_path / "run", resume=True, progress=False)
    rows = list(csv.DictReader(hist.open()))
    state = load_checkpoint(tmp_path / "run" / "member_0" / "last.pt")
    assert [int(r["epoch"]) for r in rows] == [int(h["epoch"]) for h in state["history"]] == [1, 2]
    assert hist.read_text() == full  # rewritten exactly as the training wrote it
