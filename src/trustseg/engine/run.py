"""Train a run: every member of the configured method into the run folder.

:func:`train` builds the method named in the config, checks the dataset against it, writes the run files and
trains each of its ``num_members`` members (1 except for deep ensembles) into ``RUN/member_<m>/`` with seed
``seed + m``: one after another by default, in parallel processes with ``workers > 1``
(:func:`trustseg.engine.member.run_members_parallel`), or data-parallel over the ranks of a ``torchrun`` launch.
The per-member loop is :func:`trustseg.engine.fit.train_member`.

Run folder::

    RUN/config.yaml           the RunConfig (read back by resume, member processes and prediction)
    RUN/run.json              method, params, classes, raters, shapes, members, patch size, temperature
    RUN/member_<m>/last.pt    resumable state (written atomically at the end of every epoch)
    RUN/member_<m>/best.pt    weights of the best validation Dice
    RUN/member_<m>/history.csv

Outputs are never destroyed: a ``train`` into an existing run folder needs ``resume`` (continue it) or
``overwrite`` (replace it); the replacing run is trained in the sibling folder ``.RUN.new`` and swapped in only
when it has finished, so a failure leaves the earlier run exactly as it was. A folder that holds other files is
never trained into. While a run trains, its folder holds the writer lock (:func:`trustseg.core.lock.exclusive`),
so a second concurrent ``train --out RUN`` fails at once.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

from trustseg.core.atomic import atomic_write_json, make_dirs, swap_in
from trustseg.core.errors import ConfigError
from trustseg.core.lock import LOCK, exclusive
from trustseg.data.normalization import NormStats
from trustseg.engine import checkpoint as ck
from trustseg.engine.calibrate import calibrate_run, case_batches
from trustseg.engine.config import RunConfig, check_same_config, load_saved_run_config
from trustseg.engine.distributed import barrier, init_distributed
from trustseg.engine.fit import train_member
from trustseg.engine.member import run_members_parallel
from trustseg.engine.run_folder import write_run_files
from trustseg.engine.setup import load_data, make_method, normalization_stats, pad_multiple, split_ids
from trustseg.inference.device import resolve_device
from trustseg.inference.run_folder import CONFIG, RUN_JSON, read_run_json, size_multiple
from trustseg.inference.run_predictor import load_run
from trustseg.methods.base import Method


def train(
    cfg: RunConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    workers: int = 1,
    calibrate: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train every member of the configured method into the run folder ``out``.

    Args:
        cfg: The run configuration (written to ``out/config.yaml``).
        out: Run folder.
        resume: Continue each member from its ``last.pt``; finished members are skipped. The configuration must
            equal the run's saved ``config.yaml`` (except ``data``), else :class:`ConfigError`. Without it, training
            starts afresh, and an existing run in ``out`` needs ``overwrite``.
        progress: Show a progress bar (rank 0 only).
        workers: Train up to this many ensemble members at once, each in its own process
            (``python -m trustseg.engine.launch member``). Ignored under ``torchrun``.
        calibrate: Fit a post-hoc temperature on the validation cases afterwards (stored in ``run.json``).
        overwrite: Replace an existing run in ``out`` (without ``resume``). The new run is trained beside it in
            ``.<name>.new`` and swapped in at the end; until then (and after any failure) the earlier run is intact.

    Returns:
        Summary: ``{"run", "method", "members": [{"member", "best_val_dice", "best_epoch", "epochs", "best",
        "last"}], "temperature"}``.

    Raises:
        ConfigError: ``out`` is an existing run and neither ``resume`` nor ``overwrite`` is set; ``out`` holds files
            that are not a run.
        DataError: another process is training into ``out`` (its lock file).
    """
    out = Path(out)
    if resume and (out / CONFIG).is_file():
        check_same_config(load_saved_run_config(out / CONFIG), cfg, out / CONFIG)
    device = resolve_device(cfg.train.device, "train.device")
    info = init_distributed(device)
    work = out.with_name(f".{out.name}.new")  # where a replacing run trains (the same path on every rank)
    with exclusive(out, "run") if info.is_main else contextlib.nullcontext():
        if info.is_main:  # checked under the lock, so a concurrent writer is reported as such
            replacing = check_run_out(out, resume, overwrite)
            shutil.rmtree(work, ignore_errors=True)  # a leftover of an interrupted replacement is discarded
            if replacing:
                make_dirs(work, exist_ok=False)
        barrier(info)
        replacing = replacing if info.is_main else work.is_dir()
        try:
            summary = _train_into(cfg, work if replacing else out, resume, progress, workers, calibrate, info)
        except Exception:
            if replacing and info.is_main:  # the earlier run was never touched; the half-trained one goes
                shutil.rmtree(work, ignore_errors=True)
            raise
        if replacing and info.is_main:
            (work / LOCK).write_text(f"{os.getpid()}\n")  # the swapped-in folder stays locked until we return
            swap_in(work, out)
        barrier(info)
    return summarize(out, summary["members"], summary["method"], summary["temperature"])


def check_run_out(out: Path, resume: bool, overwrite: bool) -> bool:
    """Check the run folder ``out`` for :func:`train`; return whether an existing run is to be replaced.

    Raises:
        ConfigError: an existing run without ``resume``/``overwrite``, or a non-empty folder that is not a run.
    """
    if not out.exists():
        return False
    if not out.is_dir():
        raise ConfigError(f"{out}: the run folder is a file; choose another --out")
    is_run = (out / CONFIG).exists() or (out / RUN_JSON).exists() or any(out.glob("member_*"))
    if not is_run:
        if any(p.name != LOCK for p in out.iterdir()):
            raise ConfigError(
                f"{out}: exists, is not empty and is not a trustseg run folder; it is never trained into "
                "(not even with --overwrite): choose a new or empty --out folder"
            )
        return False
    if resume:
        return False
    if not overwrite:
        raise ConfigError(
            f"{out}: is an existing run; pass --resume to continue it or --overwrite to replace it (the earlier "
            "run is kept until the new one has finished)"
        )
    return True


def _train_into(
    cfg: RunConfig, out: Path, resume: bool, progress: bool, workers: int, calibrate: bool, info
) -> dict[str, Any]:
    """The body of :func:`train`: write the run files and train every member into ``out``.

    Returns:
        ``{"members": [m, ...], "method", "temperature"}``.
    """
    dataset = load_data(cfg)
    method = make_method(cfg, dataset)
    if info.is_main:
        stats = normalization_stats(cfg, dataset, split_ids(dataset, cfg)[0], out if resume else None)
        write_run_files(cfg, out, dataset, method, pad_multiple(cfg), stats, resume)
    barrier(info)
    members = list(range(method.num_members))
    if workers > 1 and len(members) > 1 and not info.enabled:
        run_members_parallel(out, members, workers, resume)
    else:
        for m in members:
            train_member(cfg, out, m, dataset=dataset, method=method, resume=resume, progress=progress)
    if info.is_main:
        after_training(method, cfg, out, dataset)
    temperature = read_run_json(out).get("temperature", 1.0)
    if calibrate and info.is_main:
        temperature = calibrate_run(out)
    barrier(info)
    return {"members": members, "method": method.name or cfg.method.name, "temperature": temperature}


def after_training(method: Method, cfg: RunConfig, out: Path, dataset) -> dict[str, Any]:
    """Run the method's post-training step (:meth:`~trustseg.methods.base.Method.after_training`), if it has one,
    on the trained members and the validation cases (normalised and padded as in prediction), and record what it
    returns in ``run.json``."""
    if type(method).after_training is Method.after_training:
        return {}
    _, models, run_info = load_run(out)
    _, val_ids = split_ids(dataset, cfg)
    stored = run_info.get("normalization")
    stats = None if stored is None else NormStats.from_dict(stored, where=str(out / RUN_JSON))
    batches = (batch for batch, _ in case_batches(dataset, val_ids, size_multiple(run_info), stats))
    extra = method.after_training(models, batches)
    if extra:
        atomic_write_json(out / RUN_JSON, {**read_run_json(out), **extra})
    return extra


def summarize(out: Path, members: list[int], method_name: str, temperature: float) -> dict[str, Any]:
    """Read each member's ``last.pt`` into the summary :func:`train` returns."""
    rows = []
    for m in members:
        d = ck.member_dir(out, m)
        state = ck.load_checkpoint(d / ck.LAST)
        rows.append(
            {
                "member": m,
                "best_val_dice": state.get("best_dice"),
                "best_epoch": state.get("best_epoch"),
                "epochs": state["epoch"],
                "best": str(d / ck.BEST),
                "last": str(d / ck.LAST),
            }
        )
    return {"run": str(out), "method": method_name, "members": rows, "temperature": temperature}
