"""The jobs of a comparison (dataset x method x seed x fold) and their folders.

Job folder (``OUT/jobs/<dataset>/<method>/seed<k>/``, plus ``fold<f>/`` when ``folds > 1``)::

    run/               trustseg train output
    val_pred/          predictions of the validation split (the QC model's training cases), when QC is fitted
    qc/                the QC model, when fitted
    pred/              predictions of the test split (with per-case ``qc`` entries when a QC model was fitted)
    eval/results.json  trustseg evaluate output (+ results.csv)
    job.json           written atomically last: {"status": "done", ..., "hash"}

A job is *done* when its ``job.json`` says ``"status": "done"`` with the job's current :func:`job_hash`; a done job
is never run again. Anything else in the folder is the resumable state of an interrupted job.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustseg.compare.config import CompareConfig, run_config
from trustseg.core.config import to_dict
from trustseg.core.errors import DataError
from trustseg.engine.config import RunConfig

JOB_JSON = "job.json"


@dataclass(frozen=True)
class Job:
    """One training + prediction + evaluation of the comparison.

    Attributes:
        index: Position in the plan (rank ``r`` of ``W`` runs the jobs with ``index % W == r``).
        dataset: Dataset name.
        method: Method label.
        seed: Training seed.
        fold: k-fold round (``None``: the fixed split).
        data: The dataset folder.
        folder: The job folder.
    """

    index: int
    dataset: str
    method: str
    seed: int
    fold: int | None
    data: str
    folder: Path

    @property
    def name(self) -> str:
        """``dataset/method/seed<k>[/fold<f>]``, for messages."""
        return "/".join(self.folder.parts[-(4 if self.fold is None else 5) :][1:])

    @property
    def results(self) -> Path:
        """The evaluation's results JSON."""
        return self.folder / "eval" / "results.json"


def dataset_path(cfg: CompareConfig, out: Path, name: str) -> str:
    """The folder of dataset ``name``: its ``data`` path, or ``OUT/data/<name>`` for a synthetic one."""
    spec = cfg.dataset(name)
    return spec.data if spec.synth is None else str(out / "data" / name)


def plan_jobs(cfg: CompareConfig, out: str | Path) -> list[Job]:
    """Every job, in a fixed order: datasets, then seeds, then folds, then methods (so the first jobs done give
    a first complete seed of every method)."""
    out = Path(out)
    jobs: list[Job] = []
    for ds in cfg.datasets:
        for seed in cfg.seeds:
            for fold in cfg.fold_ids():
                for spec in cfg.methods:
                    folder = out / "jobs" / ds.name / spec.key / f"seed{seed}"
                    if fold is not None:
                        folder = folder / f"fold{fold}"
                    data = dataset_path(cfg, out, ds.name)
                    jobs.append(Job(len(jobs), ds.name, spec.key, seed, fold, data, folder))
    return jobs


def job_run_config(cfg: CompareConfig, job: Job) -> RunConfig:
    """The job's training configuration."""
    return run_config(cfg, cfg.method(job.method), job.data, job.seed, job.fold)


def job_hash(cfg: CompareConfig, job: Job) -> str:
    """A digest of everything the job's outputs depend on: its run config, the dataset (synthetic settings),
    the evaluation, OOD, noise and QC settings. Changing the other jobs (adding a method or a seed) keeps it."""
    spec = cfg.dataset(job.dataset)
    parts = {
        "run": to_dict(job_run_config(cfg, job)),
        "synth": to_dict(spec.synth),
        "suite": to_dict(cfg.suite),
        "ood": to_dict(cfg.ood),
        "noise": to_dict(cfg.noise),
        "qc": to_dict(cfg.qc),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def read_job(job: Job) -> dict[str, Any]:
    """The job's ``job.json``.

    Raises:
        DataError: missing, unreadable or not done.
    """
    path = job.folder / JOB_JSON
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"job {job.name} has not finished (no {JOB_JSON})", path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read the job record: {e}", path) from None
    if not isinstance(record, dict) or record.get("status") != "done":
        raise DataError(f"job {job.name} is not done", path)
    return record


def is_done(cfg: CompareConfig, job: Job) -> bool:
    """Whether the job has a valid ``job.json`` with status done and its current hash."""
    try:
        record = read_job(job)
    except DataError:
        return False
    return record.get("hash") == job_hash(cfg, job) and job.results.is_file()
