"""A source's own train/val/test split (the ``folder`` importer's split folders and ``--split-dirs``).

A source is split when it has split folders, each holding the layout the templates describe:

* found automatically: two or more of ``training``/``train``, ``validation``/``val``, ``test``/``testing``
  (any case) next to each other, one of them a training folder;
* nnU-Net-ish: ``imagesTr``/``labelsTr`` (train) and ``imagesTs``/``labelsTs`` (test) with the default templates;
* named: ``split_dirs="training=train,test=test"`` (CLI ``--split-dirs``), folder name = part;
  ``split_dirs="none"`` reads the source as one unsplit folder.

The cases keep their part. A source without a validation part gets one carved from its training part by group
(``val_fraction`` of the training cases, seeded), so cases of one patient stay together.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trustseg.core.errors import ConfigError, DataError
from trustseg.data.splits import PARTS, fixed_split

#: Folder names read as split folders (lower case) and the part each one is.
SPLIT_NAMES = {
    "training": "train",
    "train": "train",
    "validation": "val",
    "val": "val",
    "test": "test",
    "testing": "test",
}


@dataclass(frozen=True)
class SourcePart:
    """One folder of a source the templates are read in.

    Attributes:
        root: The folder the templates are relative to.
        part: ``train``/``val``/``test``, or ``None`` for an unsplit source.
        suffix: nnU-Net-ish sources: ``Tr``/``Ts``, appended to ``images``/``labels`` of the default layout.
    """

    root: Path
    part: str | None = None
    suffix: str = ""


def parse_split_dirs(value: str | Sequence[str], src: Path) -> dict[str, str]:
    """``'training=train,test=test'`` -> ``{folder: part}``.

    Raises:
        ConfigError: an entry without ``=`` or an unknown part (with a "did you mean").
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    out: dict[str, str] = {}
    for item in (i.strip() for i in items):
        folder, sep, part = item.partition("=")
        folder, part = folder.strip().strip("/"), part.strip()
        if not sep or not folder:
            raise ConfigError(f"--split-dirs {item!r}: expected FOLDER=PART, e.g. training=train,test=test")
        if part not in PARTS:
            close = difflib.get_close_matches(part, PARTS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"--split-dirs {item!r}: unknown part {part!r}{hint} Known: {', '.join(PARTS)}")
        out[folder] = part
    if not out:
        raise ConfigError("--split-dirs is empty; give FOLDER=PART pairs, e.g. training=train,test=test")
    return out


def source_parts(src: Path, split_dirs: str | Sequence[str] | None, default_layout: bool) -> list[SourcePart]:
    """The folders of ``src`` to read and the part of each (see the module docstring).

    Args:
        src: The source folder.
        split_dirs: The ``split_dirs`` option (``None``: detect; ``"none"``: one unsplit folder).
        default_layout: No image template was given (nnU-Net-ish ``imagesTr``/``imagesTs`` are detected only then).

    Raises:
        DataError: a named split folder that does not exist; two folders for one part (``train`` and
            ``training``), naming ``--split-dirs``.
    """
    if isinstance(split_dirs, str) and split_dirs.strip().lower() == "none":
        return [SourcePart(src)]
    folders = sorted(d.name for d in src.iterdir() if d.is_dir())
    if split_dirs is not None:
        parts = []
        for folder, part in parse_split_dirs(split_dirs, src).items():
            if not (src / folder).is_dir():
                raise DataError(f"--split-dirs names {folder!r}, which is not a folder here; found {folders}", src)
            parts.append(SourcePart(src / folder, part))
        return sorted(parts, key=lambda p: PARTS.index(str(p.part)))  # cases in train, val, test order
    found = [f for f in folders if f.lower() in SPLIT_NAMES]
    kinds = [SPLIT_NAMES[f.lower()] for f in found]
    if len(found) >= 2 and "train" in kinds:
        if len(set(kinds)) != len(kinds):
            raise DataError(
                f"split folders {found} name one part twice; say which to read with --split-dirs, "
                "e.g. --split-dirs training=train,test=test",
                src,
            )
        found.sort(key=lambda f: PARTS.index(SPLIT_NAMES[f.lower()]))  # cases in train, val, test order
        return [SourcePart(src / f, SPLIT_NAMES[f.lower()]) for f in found]
    if default_layout and "imagesTr" in folders and "images" not in folders:
        parts = [SourcePart(src, "train", "Tr")]
        if "imagesTs" in folders:
            parts.append(SourcePart(src, "test", "Ts"))
        return parts
    return [SourcePart(src)]


def source_fixed_split(
    part_of: dict[str, str], groups: dict[str, str], val_fraction: float, seed: int, where: Path
) -> dict[str, list[str]]:
    """The fixed split from the source's parts, a validation part carved from ``train`` when there is none.

    Args:
        part_of: Case id -> ``train``/``val``/``test`` (in case order).
        groups: Case id -> group.
        val_fraction: Fraction of the training cases (by group) moved to ``val`` when the source has no ``val``.
        seed: Seed of that carve-out.
        where: The source folder (named in errors).

    Raises:
        DataError: a group with cases in two of the source's parts (naming ``--group-by``).

    Example:
        >>> parts = {"a": "train", "b": "train", "c": "train", "d": "test"}
        >>> source_fixed_split(parts, {i: i for i in parts}, 0.34, 0, Path("src"))["test"]
        ['d']
    """
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    seen: dict[str, str] = {}
    for cid, part in part_of.items():
        g = groups[cid]
        if seen.setdefault(g, part) != part:
            raise DataError(
                f"group {g!r} has cases in the source's {seen[g]} and {part} folders (e.g. {cid!r}); the source's "
                "split separates it: check --group-by, or pass --split-dirs none to split the cases by group anew",
                where,
            )
    fixed = {p: [c for c, q in part_of.items() if q == p] for p in PARTS}
    if not fixed["val"] and fixed["train"] and val_fraction > 0:
        train = fixed["train"]
        tv = fixed_split(train, [groups[c] for c in train], (1.0 - val_fraction, val_fraction, 0.0), seed)
        fixed["train"], fixed["val"] = tv["train"], tv["val"]
    return fixed
