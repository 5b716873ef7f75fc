"""Hostile options and damaged run files end in one clear line and exit 2, never a traceback (audit F12)."""

from __future__ import annotations

import shutil

import pytest
import torch

from trustseg.cli.main import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_cli")
    data, run, cfg = root / "d", root / "run", root / "c.yaml"
    assert main(["synth", "--out", str(data), "--cases", "8", "--size", "16", "--raters", "2"]) == 0
    cfg.write_text("net: {channels: [4, 8]}\ntrain: {batch_size: 4}\n")
    argv = ["train", "--data", str(data), "--out", str(run), "--config", str(cfg), "--epochs", "1", "--no-progress"]
    assert main(argv) == 0
    return root, data, run, cfg


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("trian.epochs=1", "did you mean 'train'"),
        ("train.lr=1e300", "at most"),
        ("train.patch_size=[16]", "axes"),
    ],
)
def test_bad_settings(tiny, capsys, setting, words):
    root, data, _, cfg = tiny
    out = root / f"r_{abs(hash(setting))}"
    argv = ["train", "--data", str(data), "--out", str(out), "--config", str(cfg), "--set", setting, "--no-progress"]
    assert main(argv) == 2
    assert words in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["empty", "other shapes"])
def test_a_checkpoint_that_does_not_fit_the_network(tiny, tmp_path, capsys, damage):
    _, data, run, _ = tiny
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for ck in (copy / "member_0").glob("*.pt"):
        state = torch.load(ck, weights_only=True)
        state["model"] = {} if damage == "empty" else {k: torch.zeros(3) for k in state["model"]}
        torch.save(state, ck)
    argv = ["predict", "--run", str(copy), "--input", str(data), "--split", "test", "--out", str(tmp_path / "p")]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "does not fit the network" in err and "member_0" in err
