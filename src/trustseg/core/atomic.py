"""Atomic file output: a file either appears complete or not at all.

Everything trustseg writes (datasets, checkpoints, predictions, metrics, reports) goes through these helpers,
so an interrupted or failing run never leaves a half-written file that looks complete, and never destroys an
earlier result (the old file is replaced only once the new one is fully written).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trustseg.core.errors import DataError

#: errno values that make a folder impossible to create, with what to do about each.
_MKDIR_FIXES = {
    errno.ENOSPC: "no space left on the disk; free some space and run again",
    getattr(errno, "EDQUOT", errno.ENOSPC): "the disk quota is exceeded; free some space and run again",
    errno.EROFS: "the file system is read-only; choose a writable folder",
    errno.EACCES: "permission denied; choose a folder you can write to",
    errno.EPERM: "permission denied; choose a folder you can write to",
}

#: errno values of a full disk or an exceeded quota.
NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NO_SPACE_MESSAGE = "no space left to write this file; free some space and run again (nothing earlier was changed)"


def make_dirs(path: str | Path, exist_ok: bool = True) -> Path:
    """Create the folder ``path`` and its parents (``Path.mkdir(parents=True)``), with one clear error.

    Raises:
        DataError: naming the folder, when the disk is full or over quota, the file system is read-only or the
            permission is denied (``ENOSPC``/``EDQUOT``/``EROFS``/``EACCES``/``EPERM``), instead of a raw
            ``OSError``. Other errors (``FileExistsError`` with ``exist_ok=False``, a file in the way) pass.
    """
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except OSError as e:
        fix = _MKDIR_FIXES.get(e.errno) if e.errno is not None else None
        if fix is None:
            raise
        raise DataError(f"cannot create this folder: {fix} ({e.strerror})", path) from None
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    The temporary name keeps the real suffix (so writers choosing a format by extension still work). On error
    the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    make_dirs(path.parent)
    sfx = suffix if suffix is not None else "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{sfx}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as e:
        tmp_path.unlink(missing_ok=True)
        if e.errno in NO_SPACE:
            raise DataError(f"{_NO_SPACE_MESSAGE} ({e.strerror})", path) from None
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN written as null, numpy/torch scalars converted)."""
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")


def jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, paths, tuples and non-finite floats into JSON-safe values."""
    import math

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def csv_text(rows: list[dict[str, Any]], float_format: str = ".6g") -> str:
    """Rows (dicts) as CSV text: columns in first-seen order, missing cells empty, finite floats formatted."""
    import csv
    import io
    import math

    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, restval="", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(
            {k: (format(v, float_format) if isinstance(v, float) and math.isfinite(v) else v) for k, v in r.items()}
        )
    return buf.getvalue()


def atomic_write_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows (dicts) as CSV atomically (see :func:`csv_text`)."""
    return atomic_write_text(path, csv_text(rows))


def swap_in(new: str | Path, path: str | Path) -> Path:
    """Replace the folder ``path`` (if any) by the complete folder ``new``, then delete the old one.

    The old folder is renamed aside (``.NAME.old``) before ``new`` is renamed onto ``path``, so at every moment
    either the old or the new folder is complete.
    """
    new, path = Path(new), Path(path)
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(new, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, path)
    return path


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` as a whole.

    An existing non-empty ``path`` is replaced only with ``overwrite`` (callers decide what they may replace:
    :func:`trustseg.data.dataset.write_dataset` only an earlier dataset); it is kept until the new folder is
    complete, then swapped out and deleted (:func:`swap_in`).

    Raises:
        DataError: ``path`` exists, is not an empty folder, and ``overwrite`` is not set.
    """
    path = Path(path)
    if path.exists() and not overwrite and (not path.is_dir() or any(path.iterdir())):
        raise DataError("exists and is not empty; choose a new folder (or overwrite)", path)
    make_dirs(path.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        if e.errno not in _MKDIR_FIXES:
            raise
        raise DataError(f"cannot create a folder here: {_MKDIR_FIXES[e.errno]} ({e.strerror})", path.parent) from None
    try:
        yield tmp
        swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` atomically (checkpoints); load them back with ``weights_only=True``."""
    import torch

    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except RuntimeError as e:  # torch reports a full disk as "[enforce fail at inline_container.cc] unexpected pos"
        if "unexpected pos" in str(e) or "inline_container" in str(e):
            raise DataError(f"{_NO_SPACE_MESSAGE} (torch.save could not finish the file)", path) from None
        raise
    return Path(path)
