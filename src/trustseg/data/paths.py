"""Containment of the file paths an index file names (``dataset.json``, ``predictions.json``).

An index names its files relative to its own folder. A path that is absolute, or that leaves the folder (through
``..`` or through a symlink), would let a crafted index read any file on the machine, so the readers refuse it
unless the user opts in: the keyword ``allow_outside=True`` of the readers, or, for code the caller does not
reach (the CLI's ``--allow-outside``, ensemble member processes), the context :func:`outside_allowed`, which sets
the environment variable :data:`ALLOW_OUTSIDE_ENV` (inherited by child processes).

Example:
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> contained_path(root, "images/a.npy", root / "dataset.json", "case 'a'") == root / "images/a.npy"
    True
    >>> contained_path(root, "../secret.npy", root / "dataset.json", "case 'a'")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trustseg.core.errors.DataError: ...: case 'a': file '../secret.npy' lies outside ...; pass --allow-outside ...
    >>> with outside_allowed():
    ...     contained_path(root, "../secret.npy", root / "dataset.json", "case 'a'") == root / "../secret.npy"
    True
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from trustseg.core.errors import DataError

#: Environment variable that, set to ``1``, lets every reader accept files outside their index's folder.
ALLOW_OUTSIDE_ENV = "TRUSTSEG_ALLOW_OUTSIDE"


def outside_allowed_now(allow_outside: bool = False) -> bool:
    """Whether files outside an index's folder are accepted: ``allow_outside`` or :data:`ALLOW_OUTSIDE_ENV` is 1."""
    return bool(allow_outside) or os.environ.get(ALLOW_OUTSIDE_ENV) == "1"


@contextmanager
def outside_allowed(enabled: bool = True) -> Iterator[None]:
    """Within the block (and in processes started from it), readers accept files outside their folder.

    Args:
        enabled: ``False`` makes this a no-op (so a CLI can write ``with outside_allowed(args.allow_outside)``).
    """
    if not enabled:
        yield
        return
    before = os.environ.get(ALLOW_OUTSIDE_ENV)
    os.environ[ALLOW_OUTSIDE_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(ALLOW_OUTSIDE_ENV, None)
        else:
            os.environ[ALLOW_OUTSIDE_ENV] = before


def contained_path(
    root: str | Path, rel: object, index: str | Path, where: str, *, allow_outside: bool = False
) -> Path:
    """``root / rel``, checked to lie inside ``root`` after resolving symlinks.

    The check is ``(root / rel).resolve().is_relative_to(root.resolve())``. A path whose resolution fails (a
    symlink loop) is returned unchecked: it cannot be read either, and its reader reports it as it always did.

    Args:
        root: The index's folder.
        rel: The path as the index holds it (must be a non-empty string).
        index: The index file, named in errors.
        where: What names the path in the index (e.g. ``case 'x' image``), named in errors.
        allow_outside: Accept an absolute path or one outside ``root`` (also on when :func:`outside_allowed_now`).

    Returns:
        ``Path(root) / rel`` (not resolved, so errors about the file name it as the index does).

    Raises:
        DataError: ``rel`` is not a non-empty string, or it lies outside ``root`` and outside files are not allowed.
    """
    if not isinstance(rel, str) or not rel:
        raise DataError(f"{where}: file name must be a non-empty string, got {rel!r}", index)
    root = Path(root)
    path = root / rel
    if outside_allowed_now(allow_outside):
        return path
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # symlink loop: left to the reader's error
        return path
    if not inside:
        raise DataError(
            f"{where}: file {rel!r} lies outside {str(root)!r} (an absolute path, '..' or a symlink leaving the "
            "folder); pass --allow-outside (allow_outside=True) to read it anyway",
            index,
        )
    return path
