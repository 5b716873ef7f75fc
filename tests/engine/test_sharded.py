"""Sharded predict and evaluate under ``torchrun`` (2 gloo processes on the CPU): the same prediction folder and
the same results file as one process, and a killed sharded predict resumed with no case predicted twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from trustseg.cli.main import main
from trustseg.data.case import Case
from trustseg.data.dataset import write_dataset
from trustseg.data.predictions import case_files
from trustseg.engine.distributed import DistInfo, block_of, shard_of
from trustseg.engine.sharded_predict import SHARDS
from trustseg.evaluation.results import flatten

ROOT = Path(__file__).resolve().parents[2]
CLASSES = "background,organ"


class SlowNet(nn.Module):
    """A 3x3 convolution that sleeps 0.4 s per forward pass (so a run can be killed part-way)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.4)
        return self.conv(x)


def slow_net() -> nn.Module:
    """Factory of the ``state_dict:`` model of the resume test."""
    return SlowNet()


def _data(tmp_path, n: int = 6) -> Path:
    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        image = rng.normal(size=(1, 10, 8)).astype(np.float32)
        labels = np.stack([(image[0] > t).astype(np.int64) for t in (-0.2, 0.0, 0.3)])
        cases.append(Case(f"case{i}", image, labels))
    return write_dataset(cases, tmp_path / "data", CLASSES.split(","), ext=".npy")


def _torchscript(tmp_path) -> str:
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    torch.jit.script(nn.Conv2d(1, 2, 3, padding=1).eval()).save(str(path))
    return f"torchscript:{path}?classes={CLASSES}"


def _state_dict(tmp_path) -> str:
    torch.manual_seed(0)
    path = tmp_path / "slow.pt"
    torch.save(SlowNet().state_dict(), path)
    return f"state_dict:{path}?classes={CLASSES}&factory=tests.engine.test_sharded:slow_net"


def _torchrun(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "trustseg"]
    return subprocess.Popen([*cmd, *args], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def _run2(args: list[str]) -> str:
    proc = _torchrun(args, text=True)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-4000:]
    return out


def _index(folder: Path) -> dict:
    return json.loads((folder / "predictions.json").read_text())


def _same_folder(a: Path, b: Path) -> None:
    ia, ib = _index(a), _index(b)
    assert ia["complete"] and ib["complete"] and ia["expected"] == ib["expected"]
    assert [c["id"] for c in ia["cases"]] == [c["id"] for c in ib["cases"]] == ia["expected"]
    for ca, cb in zip(ia["cases"], ib["cases"]):
        assert ca["files"] == cb["files"] and ca["shape"] == cb["shape"]
        for key, path in case_files(a, ca).items():
            assert path.read_bytes() == case_files(b, cb)[key].read_bytes(), (ca["id"], key)  # the same files
    assert (a / "summary.csv").read_text() == (b / "summary.csv").read_text()
    assert not (b / SHARDS).exists()


def test_shard_helpers():
    assert shard_of(list(range(7)), DistInfo(2, 3)) == [2, 5]
    blocks = [list(block_of(7, DistInfo(r, 3))) for r in range(3)]
    assert sum(blocks, []) == list(range(7)) and [len(b) for b in blocks] == [2, 2, 3]


@pytest.mark.slow
def test_two_ranks_write_the_one_process_folder_and_results(tmp_path):
    data = _data(tmp_path)
    model = _torchscript(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--model", model, "--input", str(data), "--no-progress"]
    assert main(["predict", *common, "--out", str(one)]) == 0
    _run2(["predict", *common, "--out", str(two)])
    _same_folder(one, two)

    r1, r2 = tmp_path / "res1" / "results.json", tmp_path / "res2" / "results.json"
    assert main(["evaluate", "--pred", str(one), "--data", str(data), "--out", str(r1)]) == 0
    _run2(["evaluate", "--pred", str(two), "--data", str(data), "--out", str(r2)])
    a, b = json.loads(r1.read_text()), json.loads(r2.read_text())
    assert a["cases"] == b["cases"] == [f"case{i}" for i in range(6)]  # the 1-process row order
    assert [r["case"] for r in a["per_case"]] == [r["case"] for r in b["per_case"]]
    fa, fb = (
        flatten({k: v for k, v in a.items() if k not in ("pred_dir", "csv")}),
        flatten({k: v for k, v in b.items() if k not in ("pred_dir", "csv")}),
    )
    assert fa.keys() == fb.keys()
    for key, va in fa.items():
        vb = fb[key]
        if isinstance(va, float) and isinstance(vb, float):
            assert va == pytest.approx(vb, abs=1e-9, nan_ok=True), key
        else:
            assert va == vb, key
    assert r1.with_suffix(".csv").read_text() == r2.with_suffix(".csv").read_text()


def _children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux ``/proc``)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _parts_done(folder: Path) -> dict[str, dict]:
    done = {}
    for part in sorted((folder / SHARDS).glob("rank*.json")):
        try:
            done.update({c["id"]: c for c in json.loads(part.read_text())["cases"]})
        except (OSError, ValueError):
            pass
    return done


@pytest.mark.slow
def test_killed_sharded_predict_resumes_without_predicting_twice(tmp_path):
    data = _data(tmp_path, n=8)
    model = _state_dict(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--model", model, "--input", str(data), "--no-progress"]
    assert main(["predict", *common, "--out", str(one)]) == 0

    proc = _torchrun(["predict", *common, "--out", str(two)])
    deadline = time.monotonic() + 120
    while len(_parts_done(two)) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    workers = _children(proc.pid)  # torchrun starts each rank in its own session
    os.kill(proc.pid, signal.SIGKILL)  # the launcher and both ranks, mid-way
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    log, _ = proc.communicate()
    done = _parts_done(two)
    assert 3 <= len(done) < 8, f"the run was not killed part-way: {log[-3000:]!r}"
    assert not _index(two)["complete"]
    stamps = {cid: {k: p.stat().st_mtime_ns for k, p in case_files(two, e).items()} for cid, e in done.items()}

    _run2(["predict", *common, "--out", str(two), "--resume"])
    _same_folder(one, two)
    for cid, entry in done.items():  # every case finished before the kill was kept, not predicted again
        assert {k: p.stat().st_mtime_ns for k, p in case_files(two, entry).items()} == stamps[cid], cid
