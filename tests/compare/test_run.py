"""End to end: tiny comparisons (1 epoch, 16² synthetic images) with workers, resume after a kill, torchrun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.compare.conftest import TINY, WHOLE
from trustseg.compare.config import compare_config_from_dict
from trustseg.compare.jobs import plan_jobs
from trustseg.compare.run import run_compare
from trustseg.core.errors import ConfigError

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


def _yaml(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "compare.json"
    path.write_text(json.dumps(data))
    return path


def test_two_seeds_two_workers_whole_suite(real_compare):
    out, table = real_compare
    cfg = compare_config_from_dict(WHOLE)
    assert table is not None
    rows = {r["method"]: r for r in table["rows"]}
    assert list(rows) == ["softmax", "mc-dropout"] and rows["softmax"]["seeds"] == [0, 1]
    dice = rows["mc-dropout"]["values"]["dice_majority"]
    assert dice["sd"] is not None and len(dice["per_seed"]) == 2
    assert rows["softmax"]["values"]["dice_majority"]["ci_vs_baseline"] is None
    assert rows["mc-dropout"]["values"]["dice_majority"]["ci_vs_baseline"]["n_cases"] >= 1
    assert rows["mc-dropout"]["values"]["ged2_iou"]["mean"] is not None  # samples saved and scored
    assert rows["mc-dropout"]["values"]["ood_auroc_noise"]["mean"] is not None
    assert rows["mc-dropout"]["values"]["noise_dice_mean"]["mean"] is not None
    # known answer: the table's value is the mean over the jobs' own results
    jobs = [j for j in plan_jobs(cfg, out) if j.method == "mc-dropout"]
    per_job = [json.loads(j.results.read_text())["summary"]["dice"]["majority"]["mean"] for j in jobs]
    assert dice["mean"] == pytest.approx(sum(per_job) / 2) and dice["per_seed"] == pytest.approx(per_job)
    # the layout of the contract
    for name in ("compare.yaml", "run_card.json", "table.json", "table.csv", "table.md"):
        assert (out / name).is_file()
    card = json.loads((out / "run_card.json").read_text())
    assert card["seeds"] == [0, 1] and card["command"] == ["test"] and card["machine"]["cores"] >= 1
    records = [json.loads((j.folder / "job.json").read_text()) for j in plan_jobs(cfg, out)]
    for rec in records:
        assert rec["status"] == "done" and set(rec["timings"]) >= {"train_s", "predict_s", "evaluate_s"}
        assert rec["cost"]["params"] > 0 and rec["cost"]["inference_rel_forward"] > 0
        assert rec["cost"]["peak_rss_mb"] > 0 and rec["qc"] is not None, rec["notes"]  # QC fitted on val
    first, second = records[0], records[1]  # workers = 2: the second job started before the first finished
    assert second["started"] < first["finished"] and first["pid"] != second["pid"]
    # a rerun redoes nothing; another config is refused without overwrite
    stamps = [(j.folder / "job.json").stat().st_mtime_ns for j in plan_jobs(cfg, out)]
    run_compare(cfg, out, progress=False)
    assert stamps == [(j.folder / "job.json").stat().st_mtime_ns for j in plan_jobs(cfg, out)]
    other = compare_config_from_dict({**WHOLE, "seeds": [0, 1, 2]})
    with pytest.raises(ConfigError, match="another configuration"):
        run_compare(other, out, progress=False)


def test_resume_after_kill(tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "trustseg.cli.main", "compare", "--config", str(_yaml(tmp_path, TINY))]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out), "--no-progress"], env=_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    cfg = compare_config_from_dict(TINY)
    first = plan_jobs(cfg, out)[0]
    try:
        deadline = time.monotonic() + 240
        while not (first.folder / "job.json").is_file():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the first job did not finish"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the compare process and its job processes
        proc.wait()
    assert not (out / "table.json").exists()
    done = {p: p.stat().st_mtime_ns for p in first.folder.rglob("*") if p.is_file()}
    table = run_compare(cfg, out, progress=False)
    assert table is not None and [r["method"] for r in table["rows"]] == ["softmax", "mc-dropout"]
    assert done == {p: p.stat().st_mtime_ns for p in first.folder.rglob("*") if p.is_file()}  # untouched
    assert all((j.folder / "job.json").is_file() for j in plan_jobs(cfg, out))


def test_torchrun_two_ranks_share_the_jobs(tmp_path):
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "trustseg.cli.main", "compare", "--config", str(_yaml(tmp_path, TINY)), "--out", str(out),
        "--no-progress",
    ]  # fmt: skip
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = compare_config_from_dict(TINY)
    ranks = [json.loads((j.folder / "job.json").read_text())["rank"] for j in plan_jobs(cfg, out)]
    assert ranks == [0, 1]  # job i runs on rank i % 2
    table = json.loads((out / "table.json").read_text())
    assert [r["method"] for r in table["rows"]] == ["softmax", "mc-dropout"]
    assert json.loads((out / "run_card.json").read_text())["world_size"] == 2
