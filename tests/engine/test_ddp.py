"""Data-parallel training: two torchrun processes (gloo on CPU) train one model and end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.engine.test_train import make_data, tiny_cfg
from trustseg.engine.checkpoint import load_checkpoint
from trustseg.engine.config import save_run_config
from trustseg.engine.distributed import DistInfo, env_info


@pytest.mark.slow
@pytest.mark.parametrize("method", ["softmax", "edue"])  # edue trains through the extra head (all_outputs)
def test_torchrun_two_processes(tmp_path, method):
    root = make_data(tmp_path)
    cfg = save_run_config(tiny_cfg(root, method, epochs=1), tmp_path / "config.yaml")
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "trustseg.engine.launch", "ddp", "--config", str(cfg), "--out", str(run)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ddp = json.loads((run / "member_0" / "ddp.json").read_text())
    assert ddp["world_size"] == 2 and len(ddp["digests"]) == 2
    assert ddp["digests"][0] == ddp["digests"][1] and ddp["identical"] is True  # every rank has the same weights
    state = load_checkpoint(run / "member_0" / "last.pt")
    assert state["epoch"] == 1 and len(state["history"]) == 1
    # 6 training cases, global batch 4 split over 2 ranks -> 2 steps per epoch, as in one process
    assert state["step"] == 2
    assert (run / "member_0" / "best.pt").is_file() and (run / "run.json").is_file()
    assert not list(run.glob("**/.*tmp*"))  # only rank 0 wrote, nothing half-written


def test_env_info(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert env_info() == DistInfo(0, 1, 0) and not env_info().enabled and env_info().is_main
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = env_info()
    assert info == DistInfo(3, 4, 1) and info.enabled and not info.is_main
