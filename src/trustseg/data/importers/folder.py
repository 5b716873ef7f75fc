"""A generic folder of images and per-rater labels.

Source layout::

    SRC/images/<case>.<ext>

and the labels in one of three patterns (detected from the folder names):

* case-major: ``SRC/labels/<case>/<rater>.<ext>`` (every sub-folder of ``labels`` is a case id);
* rater-major: ``SRC/labels/<rater>/<case>.<ext>`` (no sub-folder is a case id: each one is a rater);
* single rater: ``SRC/labels/<case>.<ext>`` files (rater ``rater0``).

Any readable extension works (NIfTI, PNG/TIFF/JPEG, NPY) and images and labels may differ in type. Classes
come from the ``classes`` option, else ``background, class1 .. class{max}`` from the largest label value (read
in a first pass). Each case is its own group unless ``group_by`` (a regular expression over the case ids) names the
groups, so that cases of one patient (left/right eye, slices of one nodule) never straddle the splits.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trustseg.core.errors import ConfigError, DataError
from trustseg.data.case import Case
from trustseg.data.dataset import write_dataset
from trustseg.data.importers.registry import IMPORTERS, LazyCases
from trustseg.data.io import has_known_ext, read_image, read_label, split_ext


def _by_stem(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and has_known_ext(f):
            stem = split_ext(f)[0]
            if stem in out:
                raise DataError(f"two files for {stem!r} ({out[stem].name}, {f.name})", folder)
            out[stem] = f
    return out


def scan_folder(src: Path) -> tuple[dict[str, Path], list[str], dict[str, dict[str, Path]]]:
    """Images by case id, rater ids, and case id -> rater -> label file."""
    img_dir, lab_dir = src / "images", src / "labels"
    if not img_dir.is_dir():
        raise DataError("no images/ folder", src)
    if not lab_dir.is_dir():
        raise DataError("no labels/ folder", src)
    images = _by_stem(img_dir)
    if not images:
        raise DataError("empty dataset: no images", img_dir)
    subdirs = sorted(d for d in lab_dir.iterdir() if d.is_dir())
    table: dict[str, dict[str, Path]] = {c: {} for c in images}
    if not subdirs:
        raters = ["rater0"]
        for stem, f in _by_stem(lab_dir).items():
            if stem in table:
                table[stem]["rater0"] = f
    elif any(d.name in images for d in subdirs):
        found: set[str] = set()
        for d in subdirs:
            if d.name in table:
                table[d.name] = _by_stem(d)
                found.update(table[d.name])
        raters = sorted(found)
    else:
        raters = [d.name for d in subdirs]
        for d in subdirs:
            for stem, f in _by_stem(d).items():
                if stem in table:
                    table[stem][d.name] = f
    for cid, labs in table.items():
        if not labs:
            raise DataError(f"case {cid!r} has no rater label under labels/", images[cid])
        missing = [r for r in raters if r not in labs]
        if missing:
            raise DataError(f"case {cid!r} has no label for raters {missing}", lab_dir)
    return images, raters, table


def group_of(case_id: str, pattern: re.Pattern[str] | None, where: Path) -> str:
    r"""The group of a case: the first capture group (else the whole match) of ``pattern`` searched in its id;
    the id itself without a pattern.

    Raises:
        DataError: an id the pattern does not match (named, with the pattern).

    Example:
        >>> group_of("Image_01L", re.compile(r"Image_(\d+)"), Path("src"))
        '01'
    """
    if pattern is None:
        return case_id
    m = pattern.search(case_id)
    if m is None:
        raise DataError(
            f"case {case_id!r} does not match --group-by {pattern.pattern!r}; give a pattern every case id matches "
            "(its first group, or the whole match, names the patient)",
            where,
        )
    return m.group(1) if m.groups() else m.group(0)


def _read_case(cid: str, path: Path, raters: list[str], labels: dict[str, Path], group: str | None = None) -> Case:
    """Read one case: the image and every rater's label map (shapes checked)."""
    img = read_image(path)
    maps = []
    for r in raters:
        lab, _, _ = read_label(labels[r])
        if lab.shape != img.array.shape[1:]:
            raise DataError(f"label shape {lab.shape} does not match image {img.array.shape[1:]} ({path})", labels[r])
        maps.append(lab)
    return Case(
        cid,
        img.array,
        np.stack(maps, 0),
        img.spacing,
        img.origin,
        group=group,
        meta={"raters": raters, "source": str(path)},
    )


@IMPORTERS.register("folder", doc="generic: images/<case>.<ext> + labels/<case>/<rater>.<ext> or labels/<rater>/")
def import_folder(
    src: Path,
    out: Path,
    *,
    name: str | None = None,
    classes: Sequence[str] | None = None,
    ext: str | None = None,
    seed: int = 0,
    progress: bool = False,
    group_by: str | None = None,
) -> Path:
    r"""Convert a generic image/label folder into a trustseg dataset (see the module docstring).

    Args:
        src: Folder holding ``images/`` and ``labels/``.
        out: Output dataset root.
        name: Dataset name (default: the folder name).
        classes: Class names, background first (default: from the largest label value).
        ext: Output file type (default: the first image's).
        seed: Seed of the default splits.
        progress: Show a progress bar.
        group_by: A regular expression naming each case's group (patient) from its id (CLI ``--group-by``):
            its first capture group, else the whole match (``Image_(\d+)`` puts ``Image_01L`` and
            ``Image_01R`` in group ``01``); the default splits never separate a group. Default: each case is its
            own group.

    Raises:
        DataError: a case id the pattern does not match; ConfigError: a pattern that is not a regular expression.
    """
    src = Path(src)
    try:
        pattern = re.compile(group_by) if group_by is not None else None
    except re.error as e:
        raise ConfigError(f"--group-by {group_by!r} is not a regular expression: {e}") from None
    images, raters, table = scan_folder(src)
    groups = {cid: group_of(cid, pattern, src / "images") for cid in images}
    if classes is None:
        top = max(int(read_label(f)[0].max(initial=0)) for labs in table.values() for f in labs.values())
        classes = ["background"] + [f"class{k}" for k in range(1, max(top, 1) + 1)]
    ext = ext or split_ext(next(iter(images.values())))[1]
    return write_dataset(
        LazyCases(list(images.items()), lambda it: _read_case(it[0], it[1], raters, table[it[0]], groups[it[0]])),
        out,
        classes=classes,
        name=name or src.name,
        ext=ext,
        seed=seed,
        progress=progress,
    )
