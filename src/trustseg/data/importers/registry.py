"""The importer registry, :func:`import_dataset` and the lazy case iterable the importers share."""

from __future__ import annotations

import difflib
import inspect
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from trustseg.core.atomic import make_dirs, swap_in
from trustseg.core.errors import ConfigError, DataError
from trustseg.core.registry import Registry
from trustseg.data.case import Case
from trustseg.data.dataset import DATASET_JSON, check_dataset_out

IMPORTERS: Registry = Registry("importer")


def import_dataset(kind: str, src: str | Path, out: str | Path, overwrite: bool = False, **opts: Any) -> Path:
    """Convert the dataset at ``src`` (layout ``kind``: lidc, qubiq, nnunet, folder) into a trustseg dataset.

    Args:
        kind: A registered importer name.
        src: Source folder.
        out: Output dataset root; it must not be (inside) ``src``.
        overwrite: Replace an earlier trustseg dataset at ``out`` (atomically: it stays intact until the new one
            is complete); any other non-empty ``out`` is refused
            (:func:`trustseg.data.dataset.check_dataset_out`).
        **opts: Importer options (``name``, ``seed``, ``progress`` and the importer's own).

    Returns:
        ``out``.

    Raises:
        UnknownNameError: unknown ``kind`` (with suggestions).
        ConfigError: an option the importer does not take.
        DataError: a missing source folder or a bad file in it; a refused ``out``.
    """
    fn = IMPORTERS.get(kind)
    params = inspect.signature(fn).parameters
    allowed = [n for n, p in params.items() if p.kind == p.KEYWORD_ONLY]
    for key in opts:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"importer {kind!r} has no option {key!r}{hint} Known: {', '.join(allowed)}")
    opts = {k: _coerce(kind, k, v, params[k]) for k, v in opts.items()}
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DataError("source folder not found", src)
    check_dataset_out(out, overwrite, src=src)
    if not (out / DATASET_JSON).is_file():
        return fn(src, out, **opts)
    make_dirs(out.parent)  # replace the earlier dataset: import beside it, then swap
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".import", dir=out.parent))
    try:
        fn(src, stage, **opts)
        return swap_in(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _coerce(kind: str, key: str, value: Any, param: inspect.Parameter) -> Any:
    """Convert a string option (``--opt KEY=VALUE`` on the command line) to the option's type.

    The type is read from the default (``int``/``float``/``bool``/sequence) or, for a ``None`` default, from the
    annotation text (``int | None``, ``Sequence[str] | None``); sequences are comma-separated.
    """
    if not isinstance(value, str):
        return value
    default, ann = param.default, str(param.annotation)
    try:
        if isinstance(default, bool) or ann.startswith("bool"):
            if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "yes", "1")
        if isinstance(default, int) or ann.startswith("int"):
            return int(value)
        if isinstance(default, float) or ann.startswith("float"):
            return float(value)
    except ValueError:
        raise ConfigError(f"importer {kind!r}: option {key!r} expects {ann}, got {value!r}") from None
    if isinstance(default, (list, tuple)) or ann.startswith(("Sequence", "list", "tuple")):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


class LazyCases:
    """Cases read one at a time as ``write_dataset`` iterates, with a length for its progress bar.

    Args:
        items: One entry per case (whatever ``load`` needs).
        load: ``item -> Case``.
    """

    def __init__(self, items: Sequence[Any], load: Callable[[Any], Case]):
        self.items, self.load = list(items), load

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Case]:
        return (self.load(item) for item in self.items)
