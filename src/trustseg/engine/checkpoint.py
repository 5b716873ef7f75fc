"""Run-folder files: checkpoints, per-member history and ``run.json``, written atomically (checkpoints are read
with ``weights_only=True``).

Layout of one member's folder (``RUN/member_<m>/``):

* ``last.pt``: everything needed to resume: model, optimizer, scheduler and grad-scaler states, the number of
  completed epochs, the global step, RNG states (as tensors), the history and the best validation Dice so far.
* ``best.pt``: the model state of the epoch with the best validation Dice (plus that epoch and Dice).
* ``history.csv``: one row per epoch (epoch, loss, lr, val_dice, seconds and the method's own loss logs).

A checkpoint is replaced only once the new file is complete, so an interruption never destroys the last good one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trustseg.core.atomic import atomic_torch_save, atomic_write_text
from trustseg.engine.seeding import get_rng_state
from trustseg.inference.run_folder import (
    BEST,
    CONFIG,
    HISTORY,
    LAST,
    RUN_JSON,
    load_checkpoint,
    member_dir,
    read_run_json,
)

__all__ = [
    "BEST",
    "CONFIG",
    "HISTORY",
    "LAST",
    "RUN_JSON",
    "cpu_state_dict",
    "load_checkpoint",
    "member_dir",
    "read_run_json",
    "remove_leftover_temps",
    "repair_history",
    "save_checkpoint",
    "save_member_state",
    "unwrap",
    "weights_digest",
    "write_history",
]


def unwrap(model: nn.Module) -> nn.Module:
    """The underlying module of a DistributedDataParallel/DataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every tensor detached and moved to the CPU."""
    return {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint dictionary atomically (the previous file stays until the new one is complete)."""
    return atomic_torch_save(state, path)


def weights_digest(model: nn.Module) -> str:
    """SHA-1 of all parameters and buffers in state-dict order (equal digests mean bitwise-equal weights)."""
    h = hashlib.sha1()
    for name, t in unwrap(model).state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def write_history(path: str | Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write the per-epoch history as CSV atomically; columns are the union of all rows' keys (first seen)."""
    columns: list[str] = []
    for row in rows:
        for k in row:
            if k not in columns:
                columns.append(k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v) for k, v in row.items()})
    return atomic_write_text(path, buf.getvalue())


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return "" if v != v else f"{v:.6g}"
    return v


def save_member_state(
    mdir: Path,
    model: nn.Module,
    opt_state: tuple,
    epoch: int,
    step: int,
    history: list[dict[str, Any]],
    best_dice: float,
    best_epoch: int,
    member: int,
    improved: bool,
) -> None:
    """Write ``last.pt`` (full resumable state), ``history.csv`` and, when ``improved``, ``best.pt``.

    Args:
        mdir: The member folder.
        model: The (possibly DDP-wrapped) model.
        opt_state: ``(optimizer, scheduler, grad_scaler)``.
        epoch: Completed epochs.
        step: Completed optimisation steps.
        history: One dict per completed epoch.
        best_dice: Best validation Dice so far (``-inf``/NaN when none).
        best_epoch: The epoch (1-based) of ``best_dice``.
        member: Member index.
        improved: Whether this epoch is the new best (then ``best.pt`` is written too).
    """
    opt, sched, scaler = opt_state
    weights = cpu_state_dict(model)
    bd = None if not math.isfinite(best_dice) else float(best_dice)
    if improved:
        save_checkpoint({"model": weights, "epoch": epoch, "val_dice": bd, "member": member}, mdir / BEST)
    state = {
        "model": weights,
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "scaler": scaler.state_dict(),
        "epoch": epoch,
        "step": step,
        "rng": get_rng_state(),
        "history": history,
        "best_dice": bd,
        "best_epoch": best_epoch,
        "member": member,
    }
    save_checkpoint(state, mdir / LAST)
    write_history(mdir / HISTORY, history)


#: A temporary file of :func:`trustseg.core.atomic.atomic_path`: ``.NAME.XXXXXXXX.tmpSUFFIXES`` (mkstemp's random
#: part is letters, digits and underscores).
_TEMP = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp(?P<sfx>.*)$")


def remove_leftover_temps(folder: str | Path) -> list[Path]:
    """Remove the hidden temporary files an interrupted atomic write left in ``folder`` (not its subfolders).

    Only names of the form ``.NAME.XXXX.tmp.EXT``, with ``.EXT`` the suffixes of ``NAME`` (the pattern of
    :func:`trustseg.core.atomic.atomic_path`), are removed; every other file stays.

    Returns:
        The removed paths.
    """
    folder, removed = Path(folder), list[Path]()
    if not folder.is_dir():
        return removed
    for p in sorted(folder.iterdir()):
        m = _TEMP.match(p.name)
        if m and p.is_file() and not p.is_symlink() and m["sfx"] == "".join(Path(m["name"]).suffixes):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def repair_history(path: str | Path, history: Sequence[dict[str, Any]]) -> bool:
    """Rewrite ``history.csv`` from a checkpoint's history when the file holds fewer epochs (or is missing).

    A run interrupted after ``last.pt`` was written but before ``history.csv`` leaves the CSV one row short;
    ``last.pt`` is the authority.

    Returns:
        Whether the file was rewritten.
    """
    path = Path(path)
    rows = 0
    if path.is_file():
        with open(path, newline="") as fh:
            rows = sum(1 for _ in csv.DictReader(fh))
    if rows >= len(history):
        return False
    write_history(path, history)
    return True
