"""The per-member training loop: one loop for every method.

Each step calls ``method.loss(model, batch, ctx)``; validation predicts through the one inference function
(:func:`trustseg.inference.tensor.predict_tensor`, padded to the network's size multiple) and scores the mean
foreground Dice against the majority vote.

Reproducibility: every epoch reseeds torch/NumPy/Python and the method's generator from ``(seed, member, epoch)``
and draws its batch order and patches from ``(seed, epoch)``, so a run resumed from ``last.pt`` ends with the
same weights, bit for bit, as an uninterrupted run (on CPU; CUDA kernels may be non-deterministic).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustseg.core.atomic import atomic_write_json
from trustseg.core.errors import TrainingError
from trustseg.engine import checkpoint as ck
from trustseg.engine.config import RunConfig
from trustseg.engine.distributed import all_reduce_mean, barrier, gather_objects, init_distributed, wrap_model
from trustseg.engine.loader import CaseLoader
from trustseg.engine.seeding import epoch_seed, make_generator, seed_everything, set_rng_state
from trustseg.engine.setup import load_data, make_method, normalization_stats, pad_multiple, split_ids
from trustseg.inference.device import resolve_device, use_amp
from trustseg.inference.tensor import predict_tensor
from trustseg.methods.base import Method, TrainContext
from trustseg.metrics.overlap import dice


def foreground_dice(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> float:
    """Mean Dice over foreground classes and images; a class absent from both maps of an image counts 1.

    Args:
        pred: ``(B, *spatial)`` predicted class map.
        target: ``(B, *spatial)`` reference class map.
        num_classes: K.
    """
    if num_classes < 2:
        return float("nan")
    return float(dice(pred, target, num_classes, empty="one", batch=True).mean())


@torch.no_grad()
def validate(method: Method, model: torch.nn.Module, loader: CaseLoader, device: torch.device, cfg: RunConfig) -> float:
    """Mean foreground Dice of ``method.for_validation().predict([model], x).mean()`` argmax vs the majority vote
    (``for_validation``: the method itself, or for test-time-only methods such as TTA the method they train)."""
    model.eval()
    scores = []
    scorer = method.for_validation()
    for _, batch in loader.batches(0):
        pred = predict_tensor(
            scorer, [model], batch.image.to(device), patch_size=cfg.train.patch_size, multiple=pad_multiple(cfg)
        )
        scores.append(foreground_dice(pred.hard().cpu(), batch.soft().argmax(1), batch.num_classes))
    return float(np.mean(scores)) if scores else float("nan")


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
            left in the member folder by an earlier run are replaced when the first epoch has finished (kept
            until then, so a failure in the first epoch leaves them as they were).
        progress: Show a progress bar (rank 0 only).

    Returns:
        ``{"member", "best_val_dice", "best_epoch", "epochs"}``.
    """
    tc = cfg.train
    out = Path(out)
    mdir = ck.member_dir(out, member)
    device = resolve_device(tc.device, "train.device")
    dinfo = init_distributed(device)
    dataset = load_data(cfg) if dataset is None else dataset
    method = make_method(cfg, dataset) if method is None else method
    amp = use_amp(tc.amp, device)
    seed = tc.seed + member
    train_ids, val_ids = split_ids(dataset, cfg)
    mult = pad_multiple(cfg)
    stats = normalization_stats(cfg, dataset, train_ids, out)
    train_loader = CaseLoader(
        dataset.__getitem__,
        train_ids,
        dataset.num_classes,
        tc.batch_size,
        True,
        tc.patch_size,
        seed,
        mult,
        normalization=stats,
        augment=method.augmentation(tc.augment),
    )
    val_loader = None
    if val_ids:
        val_loader = CaseLoader(
            dataset.__getitem__, val_ids, dataset.num_classes, 1, False, None, seed, mult, normalization=stats
        )

    seed_everything(seed)
    model = method.build_model(member).to(device)
    total_steps = tc.epochs * len(train_loader)
    opt, sched = method.configure_optimizer(model, tc.lr, tc.weight_decay, total_steps)
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
        if dinfo.is_main:  # litter of a killed atomic write, and a history.csv that missed the last epochs
            ck.remove_leftover_temps(mdir)
            ck.repair_history(mdir / ck.HISTORY, history)
    if start_epoch >= tc.epochs or _budget_spent(history, tc.max_minutes):
        return _member_result(member, best_dice, best_epoch, start_epoch)

    net = wrap_model(model, device, dinfo)
    bar = _Bar(progress and dinfo.is_main, f"member {member}", total_steps, step)
    try:
        for epoch in range(start_epoch, tc.epochs):
            t0 = time.perf_counter()
            seed_everything(epoch_seed(seed, "global", epoch, dinfo.rank) % 2**63)
            gen = make_generator(epoch_seed(seed, "method", epoch, dinfo.rank))
            model.train()
            losses: list[float] = []
            logs_acc: dict[str, list[float]] = {}
            for _, batch in train_loader.batches(epoch, dinfo.rank, dinfo.world_size):
                batch = batch.to(device)
                ctx = TrainContext(epoch=epoch, max_epochs=tc.epochs, step=step, generator=gen)
                with torch.autocast(device.type, enabled=amp):
                    loss, logs = method.loss(net, batch, ctx)
                if not torch.isfinite(loss):
                    raise _diverged(member, epoch, step, f"the loss is {loss.item()}")
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
            spent = tc.max_minutes is not None and (  # every rank stops when any one has spent the budget
                all_reduce_mean(
                    float(_budget_spent([*history, {"seconds": time.perf_counter() - t0}], tc.max_minutes)), dinfo
                )
                > 0
            )
            last = epoch + 1 == tc.epochs or spent
            validate_now = val_loader is not None and ((epoch + 1) % tc.val_every == 0 or last)
            if validate_now and dinfo.is_main:
                assert val_loader is not None  # validate_now needs a validation loader
                val_dice = validate(method, model, val_loader, device, cfg)
            row["val_dice"] = val_dice
            row["seconds"] = time.perf_counter() - t0
            history.append(row)
            if not all(bool(torch.isfinite(p).all()) for p in model.state_dict().values() if p.is_floating_point()):
                raise _diverged(member, epoch, step, "the weights are not finite")  # never saved, as best or last
            improved = val_loader is None or (validate_now and val_dice > best_dice)
            if improved:
                best_dice, best_epoch = (val_dice if val_loader is not None else best_dice), epoch + 1
            if dinfo.is_main:
                if not resume and epoch == start_epoch:  # a fresh start: an earlier run's files go only now that
                    for name in (ck.BEST, ck.HISTORY, "ddp.json"):  # new ones replace them (last.pt: atomically)
                        (mdir / name).unlink(missing_ok=True)
                ck.save_member_state(
                    mdir, model, (opt, sched, scaler), epoch + 1, step, history, best_dice, best_epoch, member, improved
                )
            bar.advance(epoch, tc.epochs, row["loss"], best_dice, 0)
            barrier(dinfo)
            if spent:
                break
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
    return _member_result(member, best_dice, best_epoch, len(history))


def _budget_spent(history: list[dict[str, Any]], max_minutes: float | None) -> bool:
    """Whether the summed epoch times of ``history`` reach the budget ``max_minutes`` (``None``: no budget; at
    least one epoch is always trained)."""
    if max_minutes is None or not history:
        return False
    return sum(float(r.get("seconds", 0.0)) for r in history) >= 60.0 * max_minutes


def _diverged(member: int, epoch: int, step: int, what: str) -> TrainingError:
    """The error of a diverged member (``epoch`` 0-based, reported 1-based)."""
    return TrainingError(
        f"member {member}: training diverged, {what} at epoch {epoch + 1}, step {step}; use a lower train.lr "
        "(or train.grad_clip)"
    )


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
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # optional

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
