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
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trustseg.core.atomic import atomic_torch_save, atomic_write_text
from trustseg.core.errors import DataError
from trustseg.engine.seeding import get_rng_state

RUN_JSON = "run.json"
CONFIG = "config.yaml"
LAST = "last.pt"
BEST = "best.pt"
HISTORY = "history.csv"


def member_dir(run_dir: str | Path, member: int) -> Path:
    """``RUN/member_<m>``."""
    return Path(run_dir) / f"member_{member}"


def unwrap(model: nn.Module) -> nn.Module:
    """The underlying module of a DistributedDataParallel/DataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with every tensor detached and moved to the CPU."""
    return {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint dictionary atomically (the previous file stays until the new one is complete)."""
    return atomic_torch_save(state, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises:
        DataError: when the file is missing or not a readable checkpoint (naming the file).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("checkpoint not found", path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle/zip errors vary
        raise DataError(f"not a readable checkpoint ({type(e).__name__}: {e})", path) from None
    if not isinstance(state, dict) or "model" not in state:
        raise DataError("not a trustseg checkpoint (no 'model' entry)", path)
    return state


def weights_digest(model: nn.Module) -> str:
    """SHA-1 of all parameters and buffers in state-dict order (equal digests mean bitwise-equal weights)."""
    import hashlib

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


def read_run_json(run_dir: str | Path) -> dict[str, Any]:
    """The ``run.json`` of a run folder."""
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        raise DataError("not a trustseg run folder (no run.json)", Path(run_dir))
    return json.loads(path.read_text())


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
