"""Every user error the audit saw end in a raw traceback (F12, ``../shared/docs/reliability-audit.md``), enumerated:
each now ends in one line ``trustseg <command>: error: ...`` and exit 2 (or, where the input is valid after all,
works), and the line names the file or option at fault.

Each case damages a copy of a tiny dataset, run or prediction folder and runs the command the audit ran.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from trustseg.cli.main import main


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit_f12")
    data, run, pred = root / "data", root / "run", root / "pred"
    assert main(["synth", "--out", str(data), "--cases", "8", "--size", "16", "--raters", "2", "--ext", ".npy"]) == 0
    (root / "c.yaml").write_text("net: {channels: [4, 8]}\ntrain: {batch_size: 4}\n")
    argv = ["train", "--data", str(data), "--out", str(run), "--config", str(root / "c.yaml"), "--epochs", "1"]
    assert main([*argv, "--no-progress"]) == 0
    assert main(["predict", "--run", str(run), "--input", str(data), "--split", "test", "--out", str(pred)]) == 0
    return root


def _json(path: Path, change: Callable[[dict], object]) -> None:
    d = json.loads(path.read_text())
    change(d)
    path.write_text(json.dumps(d))


def _case0(d: dict) -> dict:
    return d["cases"][0]


def _set(key: str, value):
    return lambda d: d.__setitem__(key, value)


def _checkpoint(run: Path, model) -> None:
    ck = torch.load(run / "member_0" / "best.pt", weights_only=True)
    ck["model"] = model
    torch.save(ck, run / "member_0" / "best.pt")


# (id, what is damaged: "data" | "run" | "pred" | None, damage(folder), argv(root, folder), words in the error)
CASES = [
    ("classes int", "data", lambda f: _json(f / "dataset.json", _set("classes", 3)), "evaluate", ["classes"]),
    ("spatial_dims str", "data", lambda f: _json(f / "dataset.json", _set("spatial_dims", "2")), "evaluate",
     ["spatial_dims"]),
    ("spatial_dims mismatch", "data", lambda f: _json(f / "dataset.json", _set("spatial_dims", 3)), "evaluate",
     ["image"]),
    ("splits list", "data", lambda f: _json(f / "dataset.json", _set("splits", [])), "evaluate", ["splits"]),
    ("labels list", "data", lambda f: _json(f / "dataset.json", lambda d: _case0(d).__setitem__("labels", [])),
     "evaluate", ["labels"]),
    ("image int", "data", lambda f: _json(f / "dataset.json", lambda d: _case0(d).__setitem__("image", 5)),
     "evaluate", ["image"]),
    ("image null", "data", lambda f: _json(f / "dataset.json", lambda d: _case0(d).__setitem__("image", None)),
     "evaluate", ["image"]),
    ("spacing str", "data", lambda f: _json(f / "dataset.json", lambda d: _case0(d).__setitem__("spacing", "1")),
     "evaluate", ["spacing"]),
    ("channels not the files", "data", lambda f: _json(f / "dataset.json", _set("channels", 3)), "predict-data",
     ["C=3", "dataset.json"]),
    ("file_ext missing", "data", lambda f: _json(f / "dataset.json", lambda d: d.pop("file_ext")), "predict-data",
     None),
    ("run.json malformed", "run", lambda f: (f / "run.json").write_text("{not json"), "predict", ["run.json"]),
    ("run.json missing key", "run", lambda f: _json(f / "run.json", lambda d: d.pop("num_classes")), "predict",
     ["run.json", "num_classes"]),
    ("run.json num_classes wrong", "run", lambda f: _json(f / "run.json", _set("num_classes", 7)), "predict",
     ["run.json", "num_classes"]),
    ("run.json temperature str", "run", lambda f: _json(f / "run.json", _set("temperature", "abc")), "predict",
     ["run.json", "temperature"]),
    ("checkpoint model empty", "run", lambda f: _checkpoint(f, {}), "predict", ["best.pt"]),
    ("checkpoint model str", "run", lambda f: _checkpoint(f, "weights"), "predict", ["best.pt"]),
    ("checkpoint wrong shapes", "run", lambda f: _checkpoint(f, {"x": torch.zeros(2)}), "predict", ["best.pt"]),
    ("predictions.json list", "pred", lambda f: (f / "predictions.json").write_text("[]"), "evaluate",
     ["predictions.json"]),
    ("predictions.json no cases", "pred", lambda f: _json(f / "predictions.json", lambda d: d.pop("cases")),
     "evaluate", ["predictions.json", "cases"]),
    ("predictions.json no files", "pred", lambda f: _json(f / "predictions.json", lambda d: _case0(d).pop("files")),
     "evaluate", ["predictions.json", "files"]),
    ("predictions.json no seg", "pred",
     lambda f: _json(f / "predictions.json", lambda d: _case0(d)["files"].pop("seg")), "evaluate",
     ["predictions.json", "seg"]),
    ("zero-byte probs", "pred", lambda f: next(f.glob("*_probs.npy")).write_bytes(b""), "evaluate", ["_probs.npy"]),
    ("1x1 image", None, lambda f: np.save(f / "one.npy", np.zeros((1, 1), np.float32)), "predict-folder", None),
    ("0-size image", None, lambda f: np.save(f / "empty.npy", np.zeros((0, 0), np.float32)), "predict-folder",
     ["empty.npy", "no voxels"]),
    ("--set trian.epochs", None, None, "train-set", ["trian", "did you mean"]),
    ("patch_size [16] on 2D", None, None, "train-patch", ["patch_size"]),
    ("seed > 2^63", None, None, "train-seed", ["seed"]),
    ("synth --out .", None, None, "synth-dot", ["not empty"]),
    ("evaluate --out EXISTING_DIR", None, None, "evaluate-dir", ["exists"]),
]  # fmt: skip


def _argv(kind: str, root: Path, data: Path, run: Path, pred: Path, folder: Path) -> list[str]:
    train = ["train", "--data", str(data), "--out", str(folder / "run"), "--config", str(root / "c.yaml")]
    return {
        "evaluate": ["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(folder / "ev" / "r.json")],
        "predict": ["predict", "--run", str(run), "--input", str(data), "--split", "test", "--out", str(folder / "p")],
        "predict-data": ["predict", "--run", str(run), "--input", str(data), "--out", str(folder / "p")],
        "predict-folder": ["predict", "--run", str(run), "--input", str(folder), "--out", str(folder.parent / "p")],
        "train-set": [*train, "--epochs", "1", "--set", "trian.epochs=2"],
        "train-patch": [*train, "--epochs", "1", "--set", "train.patch_size=[16]"],
        "train-seed": [*train, "--epochs", "1", "--seed", str(2**64)],
        "synth-dot": ["synth", "--out", ".", "--cases", "4", "--size", "16"],
        "evaluate-dir": ["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(folder)],
    }[kind]


@pytest.mark.parametrize(("damaged", "damage", "kind", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_audit_traceback_is_one_line_naming_the_fault(base, tmp_path, monkeypatch, capsys, damaged, damage,
                                                          kind, words):  # fmt: skip
    paths = {"data": base / "data", "run": base / "run", "pred": base / "pred"}
    for name in paths:
        if name == damaged:  # damage a copy, never the module's fixture
            paths[name] = Path(shutil.copytree(paths[name], tmp_path / name))
    folder = tmp_path / "work"
    folder.mkdir()
    if damage is not None:
        damage(paths[damaged] if damaged else folder)
    if kind == "synth-dot":
        (folder / "foreign.txt").write_text("not trustseg's")
        monkeypatch.chdir(folder)
    capsys.readouterr()
    rc = main(_argv(kind, base, paths["data"], paths["run"], paths["pred"], folder) + (
        ["--no-progress"] if kind.startswith(("train", "predict")) else []))  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    if words is None:  # valid after all (a default applies, or the image is padded): it works
        assert rc == 0, err
        return
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"trustseg {_argv(kind, base, *paths.values(), folder)[0]}: error:")
    for word in words:
        assert word.lower() in lines[0].lower(), (word, lines[0])
