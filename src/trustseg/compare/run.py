"""``trustseg compare``: run every job of a :class:`~trustseg.compare.config.CompareConfig` and write the table.

:func:`run_compare`:

1. (rank 0, under the writer lock of ``OUT``) write ``OUT/compare.yaml`` — a different config already there is
   refused unless ``overwrite`` — and generate the synthetic datasets into ``OUT/data/<name>``;
2. run the jobs that are not done (:func:`trustseg.compare.jobs.is_done`), each in a fresh ``spawn`` process
   (:func:`trustseg.compare.execute.job_process`), ``workers`` at a time;
3. (rank 0) write ``table.json``/``.csv``/``.md`` and ``run_card.json``.

Under ``torchrun`` (``WORLD_SIZE`` > 1) rank ``r`` runs the jobs ``i`` with ``i % WORLD_SIZE == r``; the ranks
meet at gloo barriers after step 1 and after step 2; only rank 0 holds the lock and writes the shared files (the
other ranks write only into their own job folders). A job that fails stops the comparison after the running
jobs have finished, naming the job and its error (``JOB/error.txt``); a rerun resumes.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustseg import __version__
from trustseg.compare.config import CompareConfig, load_compare_config
from trustseg.compare.execute import job_process
from trustseg.compare.jobs import Job, is_done, plan_jobs
from trustseg.compare.table import write_table
from trustseg.core.atomic import atomic_write_json
from trustseg.core.config import save_config, to_dict
from trustseg.core.errors import ConfigError, TrainingError, TrustsegError
from trustseg.core.lock import exclusive
from trustseg.data.synthetic import make_synthetic_dataset
from trustseg.engine.distributed import DistInfo, gather_objects, session

COMPARE_YAML = "compare.yaml"
RUN_CARD = "run_card.json"


def run_compare(
    cfg: CompareConfig,
    out: str | Path,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    command: list[str] | None = None,
) -> dict[str, Any] | None:
    """Run the comparison into ``out`` (resuming an interrupted one) and return the table (``None`` on ranks
    other than 0). Jobs start with ``multiprocessing``'s ``spawn``: a calling script needs the usual
    ``if __name__ == "__main__":`` guard.

    Args:
        cfg: The comparison.
        out: Output folder (layout in ``docs/compare.md``).
        workers: Jobs run at once on this machine (per rank under ``torchrun``).
        overwrite: Replace a different ``compare.yaml`` in ``out``; jobs whose settings did not change are kept.
        progress: Print a line per job step.
        command: The command line recorded in ``run_card.json`` (default ``sys.argv``).

    Raises:
        ConfigError: ``out`` holds another comparison's config (without ``overwrite``), or bad ``workers``.
        DataError: another process runs a comparison into ``out``.
        TrainingError: a job failed (its error is in its folder's ``error.txt``).
    """
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    out = Path(out)
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    with ExitStack() as stack:
        # torchrun: one gloo group for the ranks (long timeout: jobs take hours), destroyed when the block ends
        info = stack.enter_context(session("cpu", timeout=timedelta(hours=48)))
        error = None
        if info.is_main:
            try:
                stack.enter_context(exclusive(out, "comparison"))
                prepare_out(cfg, out, overwrite)
            except TrustsegError as e:
                error = e
        _agree(info, error)
        jobs = [j for j in plan_jobs(cfg, out) if j.index % info.world_size == info.rank]
        todo = [j for j in jobs if not is_done(cfg, j)]
        if progress and len(todo) < len(jobs):
            print(f"compare: {len(jobs) - len(todo)} of {len(jobs)} jobs already done", flush=True)
        threads = max(1, (os.cpu_count() or 1) // (workers * info.world_size))
        error = None
        try:
            run_jobs(cfg, todo, workers, threads, progress)
        except TrustsegError as e:
            error = e
        _agree(info, error)
        table = None
        if info.is_main:
            table = write_table(cfg, out)
            write_run_card(out, cfg, started, time.perf_counter() - t0, command, info)
        _agree(info, None)
    return table


def _agree(info: DistInfo, error: TrustsegError | None) -> None:
    """A barrier that also shares failures: every rank raises the first rank's error (so none waits forever)."""
    errors = gather_objects(None if error is None else (type(error).__name__, str(error)), info)
    if error is not None:
        raise error
    for e in errors:
        if e is not None:
            raise TrainingError(f"another rank failed: {e[0]}: {e[1]}")


def prepare_out(cfg: CompareConfig, out: Path, overwrite: bool) -> None:
    """Write ``compare.yaml`` (refusing another comparison's without ``overwrite``) and the synthetic datasets.

    Raises:
        ConfigError: ``out`` is a file, holds another comparison's ``compare.yaml``, or is a non-empty folder
            that is not a comparison.
    """
    path = out / COMPARE_YAML
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: is a file; choose another --out")
    if path.is_file():
        if load_compare_config(path) != cfg and not overwrite:
            raise ConfigError(
                f"{path}: this folder holds a comparison with another configuration; pass --overwrite to replace "
                "it (jobs whose settings did not change are kept), or choose another --out"
            )
    elif out.is_dir() and any(p.name not in (".trustseg.lock",) for p in out.iterdir()):
        raise ConfigError(f"{out}: exists, is not empty and holds no {COMPARE_YAML}; choose a new or empty --out")
    save_config(cfg, path)
    for ds in cfg.datasets:
        if ds.synth is None:
            continue
        root, stamp = out / "data" / ds.name, out / "data" / f"{ds.name}.synth.json"
        want = to_dict(ds.synth)
        have = None
        if stamp.is_file() and (root / "dataset.json").is_file():
            have = json.loads(stamp.read_text())
        if have != want:
            make_synthetic_dataset(root, ds.synth, progress=False, overwrite=True)
            atomic_write_json(stamp, want)


def run_jobs(cfg: CompareConfig, jobs: list[Job], workers: int, threads: int, progress: bool) -> None:
    """Run ``jobs``, each in a fresh ``spawn`` process, ``workers`` at a time.

    Raises:
        TrainingError: naming each failed job and its error.
    """
    ctx = mp.get_context("spawn")
    cfg_dict = to_dict(cfg)
    pending = list(jobs)
    running: list[tuple[Job, Any]] = []
    failed: list[str] = []
    while pending or running:
        while pending and len(running) < workers and not failed:
            job = pending.pop(0)
            p = ctx.Process(target=job_process, args=(cfg_dict, job, threads, progress), name=f"job-{job.index}")
            p.start()
            running.append((job, p))
        if not running:
            break
        time.sleep(0.1)
        for job, p in list(running):
            if p.is_alive():
                continue
            p.join()
            running.remove((job, p))
            if p.exitcode != 0:
                err = job.folder / "error.txt"
                why = (
                    err.read_text().strip()
                    if err.is_file()
                    else f"exit status {p.exitcode}, no error recorded (see the output above; a script calling "
                    "run_compare needs an `if __name__ == '__main__':` guard)"
                )
                failed.append(f"{job.name}: {why}")
    if failed:
        raise TrainingError("jobs failed (rerun to resume): " + "; ".join(failed))


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    ram = None
    try:
        with open("/proc/meminfo") as f:
            ram = round(int(f.readline().split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "ram": ram, "ram_unit": "GB", "gpu": gpu}


def write_run_card(
    out: Path, cfg: CompareConfig, started: dt.datetime, wall_s: float, command: list[str] | None, info: DistInfo
) -> Path:
    """Write ``run_card.json``: versions, machine, seeds, times and the command (of this invocation)."""
    return atomic_write_json(
        out / RUN_CARD,
        {
            "trustseg": __version__,
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "numpy": np.__version__,
            "platform": platform.platform(),
            "machine": _machine(),
            "seeds": list(cfg.seeds),
            "world_size": info.world_size,
            "started": started.isoformat(),
            "finished": dt.datetime.now(dt.UTC).isoformat(),
            "wall_s": wall_s,
            "command": list(sys.argv if command is None else command),
        },
    )
