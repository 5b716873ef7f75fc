"""One job of a comparison, start to finish, in its own process: train -> QC -> predict -> evaluate -> cost.

:func:`run_job` is what each job process runs (:mod:`trustseg.compare.run` starts it with ``multiprocessing``'s
``spawn``, so every job starts from a fresh interpreter and its peak RSS is its own). Every step resumes:

* train: continues the run from its ``last.pt`` when the saved ``config.yaml`` is this job's, else starts afresh
  (replacing a run of an earlier config once the new one has finished);
* QC: predicts the validation split and fits a QC model on it (:func:`trustseg.quality.run.fit_qc`) when that
  split has at least ``qc.min_cases`` cases; otherwise (or when the fit refuses the cases) the reason is recorded;
* predict: the test split with samples (and the QC model's per-case ``qc`` entries); a prediction folder of a
  run that was reused is resumed, one of a retrained run is replaced;
* evaluate: the whole suite, with the OOD and noise protocols when configured;
* cost: parameters, the method's per-case inference time against one forward pass of the plain network, and the
  process's peak RSS.

``job.json`` is written atomically last; a killed job leaves no ``job.json`` and is resumed by the next run.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import resource
import threading
import time
from pathlib import Path
from typing import Any

import torch

from trustseg.compare.config import CompareConfig, compare_config_from_dict
from trustseg.compare.jobs import JOB_JSON, Job, job_hash, job_run_config
from trustseg.core.atomic import atomic_write_json
from trustseg.core.errors import DataError
from trustseg.data.dataset import load_dataset
from trustseg.engine.config import load_saved_run_config
from trustseg.engine.predict import predict_folder
from trustseg.engine.run import train
from trustseg.evaluation import evaluate_predictions
from trustseg.inference.device import resolve_device
from trustseg.inference.predictor import load_predictor
from trustseg.inference.run_folder import CONFIG, size_multiple
from trustseg.inference.run_predictor import load_run
from trustseg.quality.run import fit_qc, qc_annotator

#: Environment variables of a ``torchrun`` launch: a job process is one process, never a rank.
DIST_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")


def job_process(cfg_dict: dict[str, Any], job: Job, threads: int, progress: bool) -> None:
    """The entry point of a job process (picklable for ``spawn``): a single-process environment, then
    :func:`run_job`. Its errors are written to ``JOB/error.txt`` for the parent to report."""
    rank = int(os.environ.get("RANK", "0"))
    for key in DIST_ENV:
        os.environ.pop(key, None)
    _exit_with_parent()
    torch.set_num_threads(max(1, threads))
    try:
        run_job(compare_config_from_dict(cfg_dict), job, progress, rank)
    except BaseException as e:
        job.folder.mkdir(parents=True, exist_ok=True)
        (job.folder / "error.txt").write_text(f"{type(e).__name__}: {e}\n")
        raise


def _exit_with_parent(poll_s: float = 1.0) -> None:
    """End this process when its parent goes (a killed ``trustseg compare`` leaves no orphan job holding
    locks): a daemon thread polls the parent's id."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _say(job: Job, msg: str, progress: bool) -> None:
    if progress:
        print(f"compare {job.name}: {msg}", flush=True)


def run_job(cfg: CompareConfig, job: Job, progress: bool = False, rank: int = 0) -> dict[str, Any]:
    """Run (or resume) one job in this process and write its ``job.json``; returns the record (``rank``: the
    ``torchrun`` rank that ran it, recorded)."""
    folder = job.folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / JOB_JSON).unlink(missing_ok=True)  # a record of an earlier config: this job is being redone
    (folder / "error.txt").unlink(missing_ok=True)
    rc = job_run_config(cfg, job)
    run_dir, pred_dir = folder / "run", folder / "pred"
    timings: dict[str, float] = {}
    notes: dict[str, str] = {}
    started = dt.datetime.now(dt.UTC).isoformat()

    t = time.perf_counter()
    same = (run_dir / CONFIG).is_file() and load_saved_run_config(run_dir / CONFIG) == rc
    _say(job, f"training {rc.method.name} ({rc.train.epochs} epochs, seed {job.seed})", progress)
    train(rc, run_dir, resume=same, overwrite=not same, progress=False)
    timings["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    qc_dir = _fit_qc(cfg, job, rc.train.fold, same, notes, progress)
    timings["qc_s"] = time.perf_counter() - t

    t = time.perf_counter()
    model = load_predictor(run_dir, rc.train.device)
    annotate = None if qc_dir is None else qc_annotator(qc_dir, layer_heads=bool(model.info.samples_are_heads))
    resume_pred = same and qc_dir is None and (pred_dir / "predictions.json").is_file()
    _say(job, "predicting the test split", progress)
    predict_folder(
        model,
        job.data,
        pred_dir,
        split="test",
        progress=False,
        save_samples=True,
        resume=resume_pred,
        overwrite=not resume_pred,
        annotate=annotate,
        annotation=None if qc_dir is None else str(qc_dir),
    )
    timings["predict_s"] = time.perf_counter() - t

    t = time.perf_counter()
    _say(job, "evaluating", progress)
    evaluate_predictions(
        pred_dir, job.data, job.results, split="test", suite=cfg.suite, predictor=model, ood=cfg.ood, noise=cfg.noise
    )
    timings["evaluate_s"] = time.perf_counter() - t

    cost = measure_cost(run_dir, model, job.data, rc.train.device)
    cost["train_s"] = timings["train_s"]
    record = {
        "status": "done",
        "hash": job_hash(cfg, job),
        "dataset": job.dataset,
        "method": job.method,
        "method_name": rc.method.name,
        "seed": job.seed,
        "fold": job.fold,
        "data": job.data,
        "params": rc.method.params,
        "epochs": rc.train.epochs,
        "qc": None if qc_dir is None else str(qc_dir),
        "notes": notes,
        "timings": timings,
        "cost": cost,
        "started": started,
        "finished": dt.datetime.now(dt.UTC).isoformat(),
        "pid": os.getpid(),
        "rank": rank,
        "host": platform.node(),
    }
    atomic_write_json(folder / JOB_JSON, record)
    _say(job, f"done in {sum(timings.values()):.1f} s", progress)
    return record


def _fit_qc(
    cfg: CompareConfig, job: Job, fold: int | None, reused: bool, notes: dict[str, str], progress: bool
) -> Path | None:
    """Predict the validation split and fit the job's QC model on it; ``None`` (with a note) when skipped."""
    if not cfg.qc.enabled:
        notes["qc"] = "skipped: qc.enabled is false"
        return None
    if fold is not None:
        notes["qc"] = "skipped: with folds the validation cases are the fold's, which are not a dataset split"
        return None
    n_val = len(load_dataset(job.data).split("val"))
    if n_val < cfg.qc.min_cases:
        notes["qc"] = f"skipped: the validation split has {n_val} cases, fewer than qc.min_cases = {cfg.qc.min_cases}"
        return None
    val_dir, qc_dir = job.folder / "val_pred", job.folder / "qc"
    _say(job, f"fitting QC on {n_val} validation cases", progress)
    resume = reused and (val_dir / "predictions.json").is_file()
    predict_folder(
        job.folder / "run", job.data, val_dir, split="val", progress=False, save_samples=True, resume=resume,
        overwrite=not resume,
    )  # fmt: skip
    try:
        fit_qc(val_dir, job.data, qc_dir, cfg.qc.config, split="val", overwrite=True)
    except DataError as e:
        notes["qc"] = f"skipped: the QC fit refused the validation cases ({e})"
        return None
    return qc_dir


def _timed(fn, repeats: int, device: torch.device) -> float:
    """The shortest wall time of ``fn()`` over ``repeats`` calls (after one warm-up call): the least disturbed by
    other processes on a shared machine."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return min(times)


@torch.no_grad()
def measure_cost(run_dir: Path, model: Any, data: str, device_spec: str, repeats: int = 5) -> dict[str, Any]:
    """Parameters (all members), the per-case inference time of the method (first test case, the fastest of
    ``repeats``) and of one forward pass of the plain network (member 0) on the same (padded) image, their ratio
    and the peak RSS of this process (MB).

    Returns:
        ``{"params", "inference_s_per_case", "forward_s_per_case", "inference_rel_forward", "peak_rss_mb"}``.
    """
    device = resolve_device(device_spec, "train.device")
    _, models, info = load_run(run_dir, device=device)
    params = sum(p.numel() for m in models for p in m.parameters())
    ds = load_dataset(data)
    case = ds[ds.split("test")[0]]
    image = torch.as_tensor(case.image).float()
    mult = size_multiple(info)
    padded = [((s + mult - 1) // mult) * mult for s in image.shape[1:]]
    pad = [p for s, size in zip(reversed(image.shape[1:]), reversed(padded)) for p in (0, size - s)]
    x = torch.nn.functional.pad(image, pad)[None].to(device)
    net = models[0]
    forward = _timed(lambda: net(x), repeats, device)
    inference = _timed(lambda: model.predict(case.image, tuple(case.spacing)), repeats, device)
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {
        "params": int(params),
        "inference_s_per_case": inference,
        "forward_s_per_case": forward,
        "inference_rel_forward": inference / forward if forward > 0 else None,
        "peak_rss_mb": rss_kb / 1024.0,
    }
