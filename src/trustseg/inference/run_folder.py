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
import math
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


#: The keys of ``run.json`` inference needs, each with its check: ``(description, test)``.
_INT_KEYS = {"members": (1, 1024), "num_classes": (2, 1024), "in_channels": (1, 1024), "spatial_dims": (2, 3)}
REQUIRED_KEYS = ("method", "params", "classes", *_INT_KEYS)


def check_run_info(info: dict[str, Any], path: str | Path) -> None:
    """Check the values of a ``run.json`` that inference relies on.

    ``members``, ``num_classes``, ``in_channels`` and ``spatial_dims`` must be integers of a sane range
    (``spatial_dims`` 2 or 3, at least 2 classes), ``classes`` a list of ``num_classes`` names, and
    ``temperature`` (optional, default 1) a finite number > 0: a temperature of 0 divides by zero and a negative
    one inverts the softmax.

    Raises:
        DataError: naming ``path`` (the ``run.json``) and the key that is missing or wrong.
    """
    missing = [k for k in REQUIRED_KEYS if k not in info]
    if missing:
        raise DataError(f"run.json lacks the key(s) {missing} (not a complete trustseg run?)", path)
    for key, (low, high) in _INT_KEYS.items():
        v = info[key]
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise DataError(f"{key} must be an integer in [{low}, {high}], got {v!r}", path)
    classes = info["classes"]
    if not isinstance(classes, list) or len(classes) != info["num_classes"]:
        raise DataError(f"classes must be a list of num_classes = {info['num_classes']} names, got {classes!r}", path)
    if not isinstance(info["method"], str) or not isinstance(info["params"], dict):
        raise DataError("method must be a name and params a mapping", path)
    for key in ("net", "normalization"):
        if info.get(key) is not None and not isinstance(info[key], dict):
            raise DataError(f"{key} must be a mapping (or null), got {info[key]!r}", path)
    ps = info.get("patch_size")
    if ps is not None and (
        not isinstance(ps, list)
        or len(ps) != info["spatial_dims"]
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in ps)
    ):
        raise DataError(f"patch_size must be null or {info['spatial_dims']} positive integers, got {ps!r}", path)
    pm = info.get("pad_multiple", 1)
    if isinstance(pm, bool) or not isinstance(pm, int) or not 1 <= pm <= 4096:
        raise DataError(f"pad_multiple must be an integer in [1, 4096], got {pm!r}", path)
    t = info.get("temperature", 1.0)
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0):
        raise DataError(f"temperature must be a finite number > 0, got {t!r}", path)


def check_finite_weights(state: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint whose weights hold NaN or infinite values (e.g. a diverged training run).

    Raises:
        DataError: naming the checkpoint file and the first non-finite tensor.
    """
    model = state.get("model")
    if not isinstance(model, dict):
        raise DataError("not a trustseg checkpoint ('model' is not a state dict)", path)
    for name, t in model.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise DataError(
                f"checkpoint weights are not finite ({bad} NaN/Inf values in {name!r}); the training run diverged, "
                "retrain with a lower train.lr",
                path,
            )


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
