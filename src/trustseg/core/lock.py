"""An exclusive writer lock on an output folder, so two processes never write one run or result at once.

:func:`exclusive` creates ``FOLDER/.trustseg.lock`` with ``O_CREAT | O_EXCL`` (atomic on local file systems) and
writes the holder's process id into it; it is removed when the block ends. A second writer fails at once with a
:class:`~trustseg.core.errors.DataError` naming the holder. A lock whose process no longer runs (a crashed or
killed writer) is stale and taken over.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from trustseg.core.atomic import make_dirs
from trustseg.core.errors import DataError

LOCK = ".trustseg.lock"


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists (``os.kill(pid, 0)``; a process of another user counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def holder(folder: str | Path) -> int | None:
    """The process id recorded in ``folder``'s lock file, or ``None`` when there is no (readable) lock."""
    try:
        text = (Path(folder) / LOCK).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


@contextlib.contextmanager
def exclusive(folder: str | Path, what: str = "folder") -> Iterator[Path]:
    """Hold the writer lock of ``folder`` (created if missing) for the duration of the block.

    A folder created here is removed again at the end if it is still empty.

    Args:
        folder: The output folder (a run folder, the folder of a results file).
        what: What is written there, for the message (``"run"``, ``"results"``).

    Yields:
        The lock file's path.

    Raises:
        DataError: another running process holds the lock (the same process holding it counts too), naming the
            folder, the process id and the lock file.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> with exclusive(d, "run") as lock:
        ...     lock.name
        '.trustseg.lock'
        >>> sorted(Path(d).iterdir())
        []
    """
    folder = Path(folder)
    created = not folder.exists()
    make_dirs(folder)
    path = folder / LOCK
    for _ in range(3):  # a stale lock is removed and the creation retried
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = holder(folder)
            if pid is not None and (pid == os.getpid() or _running(pid)):
                raise DataError(
                    f"this {what} is being written by process {pid}; wait or remove {path} if that process is gone",
                    folder,
                ) from None
            if pid is None and path.exists() and path.stat().st_size == 0:
                # being created by another process this very moment (pid not yet written)
                raise DataError(
                    f"this {what} is being written by another process; wait or remove {path} if it is gone", folder
                ) from None
            path.unlink(missing_ok=True)  # stale: its process no longer runs
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        break
    else:
        raise DataError(f"could not take the lock {path} (taken over and recreated by other processes)", folder)
    try:
        yield path
    finally:
        if holder(folder) == os.getpid():
            path.unlink(missing_ok=True)
        if created:  # a folder made only for the lock (the writer failed before writing anything) goes too
            with contextlib.suppress(OSError):
                folder.rmdir()
