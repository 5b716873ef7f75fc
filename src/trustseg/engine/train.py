"""One training loop for every method.

:func:`train` builds the method named in the config, checks the dataset against it, and trains each of its
``num_members`` members (1 except for deep ensembles) into ``RUN/member_<m>/`` with seed ``seed + m``: one after
another by default, in parallel processes with ``workers > 1``, or data-parallel over the ranks of a ``torchrun``
launch. Each step calls ``method.loss(model, batch, ctx)``; validation uses ``method.predict([model], x)``.

Reproducibility: every epoch reseeds torch/NumPy/Python and the method's generator from ``(seed, member, epoch)``
and draws its batch order and patches from ``(seed, epoch)``, so a run resumed from ``last.pt`` ends with the
same weights, bit for bit, as an uninterrupted run (on CPU; CUDA kernels may be non-deterministic).

Run folder::

    RUN/config.yaml           the RunConfig (read back by resume, member processes and prediction)
    RUN/run.json              method, params, classes, raters, shapes, members, patch size, temperature
    RUN/member_<m>/last.pt    resumable state (written atomically at the end of every epoch)
    RUN/member_<m>/best.pt    weights of the best validation Dice
    RUN/member_<m>/history.csv
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustseg.core.atomic import atomic_write_json
from trustseg.core.config import to_dict
from trustseg.core.errors import ConfigError
from trustseg.engine import checkpoint as ck
from trustseg.engine.config import RunConfig, check_same_config, load_run_config, save_run_config
from trustseg.engine.distributed import all_reduce_mean, barrier, gather_objects, init_distributed, wrap_model
from trustseg.engine.loader import CaseLoader
from trustseg.engine.seeding import epoch_seed, make_generator, seed_everything, set_rng_state
from trustseg.methods.base import Method, TrainContext, build_method
from trustseg.models.factory import size_multiple

RUN_JSON = ck.RUN_JSON
CONFIG = ck.CONFIG
read_run_json = ck.read_run_json


def resolve_device(spec: str) -> torch.device:
    """``auto`` -> CUDA when available (the local rank's device under torchrun), else CPU; else ``spec``."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"train.device: unknown device {spec!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device is {spec!r} but CUDA is not available")
    return dev


def use_amp(amp: str, device: torch.device) -> bool:
    """Mixed precision only on CUDA, unless switched off."""
    return device.type == "cuda" and amp != "off"


def pad_multiple(cfg: RunConfig) -> int:
    """Spatial sizes fed to the network are padded to a multiple of its size multiple."""
    return size_multiple(cfg.net)


def load_data(cfg: RunConfig):
    """Open the dataset ``cfg.data``."""
    from trustseg.data.dataset import load_dataset

    if not cfg.data:
        raise ConfigError("no dataset given (set 'data' in the config or pass --data)")
    return load_dataset(cfg.data)


def split_ids(dataset, cfg: RunConfig) -> tuple[list[str], list[str]]:
    """Training and validation case ids: ``dataset.fold(k)`` when ``train.fold`` is set, else the fixed split.

    ``train.max_train_cases`` keeps the first cases of the training list.
    """
    if cfg.train.fold is not None:
        train_ids, val_ids = dataset.fold(cfg.train.fold)
    else:
        train_ids, val_ids = dataset.split("train"), dataset.split("val")
    train_ids, val_ids = list(train_ids), list(val_ids)
    if cfg.train.max_train_cases is not None:
        train_ids = train_ids[: cfg.train.max_train_cases]
    if not train_ids:
        raise ConfigError(f"{cfg.data}: the training split is empty")
    return train_ids, val_ids


def make_method(cfg: RunConfig, dataset) -> Method:
    """Build the configured method for the dataset's shapes and check it can learn from its raters."""
    method = build_method(
        cfg.method.name, cfg.net, dataset.spatial_dims, dataset.channels, dataset.num_classes, cfg.method.params
    )
    method.check_raters(dataset.num_raters)
    return method


def foreground_dice(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Mean Dice over foreground classes and images; a class absent from both maps of an image counts 1.

    Args:
        pred: ``(B, *spatial)`` predicted class map.
        target: ``(B, *spatial)`` reference class map.
        num_classes: K.
    """
    from trustseg.metrics.overlap import dice  # importing trustseg.metrics loads every metric: not at start-up

    if num_classes < 2:
        return float("nan")
    return float(dice(pred, target, num_classes, empty="one", batch=True).mean())


@torch.no_grad()
def validate(method: Method, model: torch.nn.Module, loader: CaseLoader, device: torch.device, cfg: RunConfig) -> float:
    """Mean foreground Dice of ``method.predict([model], x).mean()`` argmax vs the majority vote."""
    from trustseg.engine.predict import predict_tensor

    model.eval()
    scores = []
    for _, batch in loader.batches(0):
        pred = predict_tensor(
            method, [model], batch.image.to(device), patch_size=cfg.train.patch_size, multiple=pad_multiple(cfg)
        )
        scores.append(foreground_dice(pred.hard().cpu(), batch.soft().argmax(1), batch.num_classes))
    return float(np.mean(scores)) if scores else float("nan")


def write_run_files(cfg: RunConfig, out: Path, dataset, method: Method, resume: bool = False) -> dict[str, Any]:
    """Write ``config.yaml`` and ``run.json`` (on resume, a temperature fitted before is kept)."""
    out.mkdir(parents=True, exist_ok=True)
    save_run_config(cfg, out / CONFIG)
    old = read_run_json(out) if resume and (out / RUN_JSON).exists() else {}
    info = {
        "method": method.name or cfg.method.name,
        "params": method.params_dict(),
        "classes": list(dataset.classes),
        "raters": list(dataset.raters),
        "spatial_dims": dataset.spatial_dims,
        "in_channels": dataset.channels,
        "num_classes": dataset.num_classes,
        "members": method.num_members,
        "patch_size": None if cfg.train.patch_size is None else list(cfg.train.patch_size),
        "pad_multiple": pad_multiple(cfg),
        "temperature": old.get("temperature", 1.0),
        "net": to_dict(cfg.net),
        "data": cfg.data,
    }
    atomic_write_json(out / RUN_JSON, info)
    return info


def train(
    cfg: RunConfig,
    out: str | Path,
    resume: bool = False,
    progress: bool = True,
    workers: int = 1,
    calibrate: bool = False,
) -> dict[str, Any]:
    """Train every member of the configured method into the run folder ``out``.

    Args:
        cfg: The run configuration (written to ``out/config.yaml``).
        out: Run folder.
        resume: Continue each member from its ``last.pt``; finished members are skipped. The configuration must
            equal the run's saved ``config.yaml`` (except ``data``), else :class:`ConfigError`. Without it, training
            starts afresh (checkpoints and temperature of an earlier run in ``out`` are discarded).
        progress: Show a progress bar (rank 0 only).
        workers: Train up to this many ensemble members at once, each in its own process
            (``python -m trustseg.engine.member``). Ignored under ``torchrun``.
        calibrate: Fit a post-hoc temperature on the validation cases afterwards (stored in ``run.json``).

    Returns:
        Summary: ``{"run", "method", "members": [{"member", "best_val_dice", "best_epoch", "epochs", "best",
        "last"}], "temperature"}``.
    """
    out = Path(out)
    if resume and (out / CONFIG).is_file():
        check_same_config(load_run_config(out / CONFIG), cfg, out / CONFIG)
    device = resolve_device(cfg.train.device)
    info = init_distributed(device)
    dataset = load_data(cfg)
    method = make_method(cfg, dataset)
    if info.is_main:
        write_run_files(cfg, out, dataset, method, resume)
    barrier(info)
    members = list(range(method.num_members))
    if workers > 1 and len(members) > 1 and not info.enabled:
        from trustseg.engine.member import run_members_parallel

        run_members_parallel(out, members, workers, resume)
    else:
        for m in members:
            train_member(cfg, out, m, dataset=dataset, method=method, resume=resume, progress=progress)
    temperature = read_run_json(out).get("temperature", 1.0)
    if calibrate and info.is_main:
        from trustseg.engine.calibrate import calibrate_run

        temperature = calibrate_run(out)
    barrier(info)
    return summarize(out, members, method.name or cfg.method.name, temperature)


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


def _lr_lambda(total_steps: int):
    def f(step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))

    return f


def train_member(
    cfg: RunConfig,
    out: str | Path,
    member: int,
    dataset=None,
    method: Method | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train (or resume) ensemble member ``member`` into ``out/member_<member>/``.

    Args:
        cfg: Run configuration.
        out: Run folder.
        member: Member index; seeds with ``cfg.train.seed + member``.
        dataset: The opened dataset (opened from ``cfg.data`` when ``None``).
        method: The built method (built from ``cfg`` when ``None``).
        resume: Continue from ``last.pt`` if it exists; a finished member returns at once. Without it, checkpoints
            left in the member folder by an earlier run are deleted before training starts.
        progress: Show a progress bar (rank 0 only).

    Returns:
        ``{"member", "best_val_dice", "best_epoch", "epochs"}``.
    """
    tc = cfg.train
    out = Path(out)
    mdir = ck.member_dir(out, member)
    device = resolve_device(tc.device)
    dinfo = init_distributed(device)
    dataset = load_data(cfg) if dataset is None else dataset
    method = make_method(cfg, dataset) if method is None else method
    amp = use_amp(tc.amp, device)
    seed = tc.seed + member
    train_ids, val_ids = split_ids(dataset, cfg)
    mult = pad_multiple(cfg)
    train_loader = CaseLoader(
        dataset.__getitem__, train_ids, dataset.num_classes, tc.batch_size, True, tc.patch_size, seed, mult
    )
    val_loader = None
    if val_ids:
        val_loader = CaseLoader(dataset.__getitem__, val_ids, dataset.num_classes, 1, False, None, seed, mult)

    seed_everything(seed)
    model = method.build_model(member).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    total_steps = tc.epochs * len(train_loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    start_epoch, step, history, best_dice, best_epoch = 0, 0, [], -math.inf, -1

    if resume and (mdir / ck.LAST).is_file():
        state = ck.load_checkpoint(mdir / ck.LAST, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        start_epoch, step, history = int(state["epoch"]), int(state["step"]), list(state["history"])
        best_dice = -math.inf if state["best_dice"] is None else float(state["best_dice"])
        best_epoch = int(state["best_epoch"])
    if start_epoch >= tc.epochs:
        return _member_result(member, best_dice, best_epoch, start_epoch)
    if not resume and dinfo.is_main:  # a fresh start: files of an earlier run here must not be resumed later
        for name in (ck.LAST, ck.BEST, ck.HISTORY, "ddp.json"):
            (mdir / name).unlink(missing_ok=True)

    net = wrap_model(model, device, dinfo)
    bar = _Bar(progress and dinfo.is_main, f"member {member}", total_steps, step)
    try:
        for epoch in range(start_epoch, tc.epochs):
            t0 = time.perf_counter()
            seed_everything(epoch_seed(seed, "global", epoch, dinfo.rank) % 2**63)
            gen = make_generator(epoch_seed(seed, "method", epoch, dinfo.rank))
            model.train()
            losses, logs_acc = [], {}
            for _, batch in train_loader.batches(epoch, dinfo.rank, dinfo.world_size):
                batch = batch.to(device)
                ctx = TrainContext(epoch=epoch, max_epochs=tc.epochs, step=step, generator=gen)
                with torch.autocast(device.type, enabled=amp):
                    loss, logs = method.loss(net, batch, ctx)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"member {member}: loss is {loss.item()} at epoch {epoch}, step {step}")
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if tc.grad_clip is not None:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                scaler.step(opt)
                scaler.update()
                sched.step()
                step += 1
                losses.append(float(loss.detach()))
                for k, v in logs.items():
                    logs_acc.setdefault(k, []).append(float(v))
                bar.advance(epoch, tc.epochs, losses[-1], best_dice)
            row: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": all_reduce_mean(float(np.mean(losses)), dinfo),
                "lr": float(opt.param_groups[0]["lr"]),
            }
            row.update({k: all_reduce_mean(float(np.mean(v)), dinfo) for k, v in logs_acc.items() if k != "loss"})
            val_dice = float("nan")
            validate_now = val_loader is not None and ((epoch + 1) % tc.val_every == 0 or epoch + 1 == tc.epochs)
            if validate_now and dinfo.is_main:
                val_dice = validate(method, model, val_loader, device, cfg)
            row["val_dice"] = val_dice
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            improved = val_loader is None or (validate_now and val_dice > best_dice)
            if improved:
                best_dice, best_epoch = (val_dice if val_loader is not None else best_dice), epoch + 1
            if dinfo.is_main:
                ck.save_member_state(
                    mdir, model, (opt, sched, scaler), epoch + 1, step, history, best_dice, best_epoch, member, improved
                )
            bar.advance(epoch, tc.epochs, row["loss"], best_dice, 0)
            barrier(dinfo)
    finally:
        bar.close()
    if dinfo.enabled:
        digests = gather_objects(ck.weights_digest(model), dinfo)
        if dinfo.is_main:
            atomic_write_json(
                mdir / "ddp.json",
                {"world_size": dinfo.world_size, "digests": digests, "identical": len(set(digests)) == 1},
            )
        barrier(dinfo)
    return _member_result(member, best_dice, best_epoch, tc.epochs)


def _member_result(member: int, best_dice: float, best_epoch: int, epochs: int) -> dict[str, Any]:
    return {
        "member": member,
        "best_val_dice": None if not math.isfinite(best_dice) else best_dice,
        "best_epoch": best_epoch,
        "epochs": epochs,
    }


class _Bar:
    """A rich progress bar over all steps of one member (no-op when disabled)."""

    def __init__(self, enabled: bool, label: str, total: int, done: int):
        self.progress = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
        )
        self.progress.start()
        self.task = self.progress.add_task(label, total=total, completed=done)
        self.label = label

    def advance(self, epoch: int, epochs: int, loss: float, dice: float, n: int = 1) -> None:
        if self.progress is None:
            return
        d = f"{dice:.3f}" if math.isfinite(dice) else "-"
        desc = f"{self.label} epoch {epoch + 1}/{epochs} loss {loss:.4f} val Dice {d}"
        self.progress.update(self.task, advance=n, description=desc)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def multiple_of(info: dict[str, Any]) -> int:
    """The size multiple stored in ``run.json``."""
    return int(info.get("pad_multiple", 1))


def config_from_run(run_dir: str | Path) -> RunConfig:
    """The :class:`RunConfig` saved in a run folder."""
    return load_run_config(Path(run_dir) / CONFIG)
