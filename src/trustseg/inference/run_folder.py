"""The on-disk format of a trained run, as inference reads it (the engine writes it).

Run folder::

    RUN/config.yaml           the RunConfig the run was trained with
    RUN/run.json              method, params, classes, raters, shapes, members, patch size, size multiple,
                              temperature, network config
    RUN/member_<m>/last.pt    resumable state of member m
    RUN/member_<m>/best.pt    weights of member m's best validation Dice
    RUN/member_<m>/history.csv

Checkpoints are read with ``weights_only=True`` (no code runs when a checkpoint is loaded).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from trustseg.core.errors import DataError

RUN_JSON = "run.json"
CONFIG = "config.yaml"
LAST = "last.pt"
BEST = "best.pt"
HISTORY = "history.csv"


def member_dir(run_dir: str | Path, member: int) -> Path:
    """``RUN/member_<m>``."""
    return Path(run_dir) / f"member_{member}"


def read_run_json(run_dir: str | Path) -> dict[str, Any]:
    """The ``run.json`` of a run folder.

    Raises:
        DataError: not a run folder, or an unreadable ``run.json`` (naming the file).
    """
    path = Path(run_dir) / RUN_JSON
    if not path.is_file():
        raise DataError("not a trustseg run folder (no run.json)", Path(run_dir))
    try:
        info = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"cannot parse run.json: {e}", path) from None
    if not isinstance(info, dict):
        raise DataError("run.json does not hold a JSON object", path)
    return info


def size_multiple(info: dict[str, Any]) -> int:
    """The spatial size multiple the run's network needs (``run.json``'s ``pad_multiple``; 1 when absent)."""
    return int(info.get("pad_multiple", 1))


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


def member_checkpoint(run_dir: str | Path, member: int, which: str = "best") -> Path:
    """The checkpoint file of member ``member``: ``best.pt`` falling back to ``last.pt``, or ``last.pt``.

    Raises:
        DataError: the member has no checkpoint (training not finished), or ``which`` is unknown.
    """
    if which not in ("best", "last"):
        raise DataError(f"unknown checkpoint choice {which!r} (use best or last)", Path(run_dir))
    mdir = member_dir(run_dir, member)
    order = [BEST, LAST] if which == "best" else [LAST]
    path = next((mdir / name for name in order if (mdir / name).is_file()), None)
    if path is None:
        raise DataError(f"member {member} has no checkpoint (is training finished?)", mdir)
    return path
