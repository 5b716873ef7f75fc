"""A generic folder of images and per-rater labels, in the layout the user has.

Default source layout::

    SRC/images/<case>.<ext>

and the labels in one of three patterns (detected from the folder names):

* case-major: ``SRC/labels/<case>/<rater>.<ext>`` (every sub-folder of ``labels`` is a case id);
* rater-major: ``SRC/labels/<rater>/<case>.<ext>`` (no sub-folder is a case id: each one is a rater);
* single rater: ``SRC/labels/<case>.<ext>`` files (rater ``rater0``).

Other layouts are described by templates (:mod:`trustseg.data.importers.templates`): ``image_pattern``
(default ``images/{case}.*``), ``label_pattern`` (with ``{case}`` and ``{rater}``; raters are the ``{rater}``
values found, sorted) and ``mask_pattern`` (a field-of-view mask per case). Split folders (``training/`` +
``test/``, ``imagesTr``/``imagesTs``, or ``split_dirs``) keep the source's own split
(:mod:`trustseg.data.importers.source_splits`); the templates are then relative to each split folder.

Any readable extension works (NIfTI, PNG/TIFF/JPEG, NPY; also GIF for labels and masks) and images and labels
may differ in type. Classes
come from the ``classes`` option, else ``background, class1 .. class{max}`` from the largest label value (read
in a first pass). Each case is its own group unless ``group_by`` (a regular expression over the case ids) names the
groups, so that cases of one patient (left/right eye, slices of one nodule) never straddle the splits. ``size`` or
``spacing`` resample every case on import (:mod:`trustseg.data.resample`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trustseg.core.errors import ConfigError, DataError
from trustseg.data.case import Case
from trustseg.data.dataset import write_dataset
from trustseg.data.importers.folder_scan import FolderCase, scan_source
from trustseg.data.importers.registry import IMPORTERS, LazyCases
from trustseg.data.importers.source_splits import source_fixed_split, source_parts
from trustseg.data.io import EXTENSIONS, read_image, read_label, split_ext
from trustseg.data.resample import Resample, parse_axes, resample_case

_JPEG = (".jpg", ".jpeg")
_BINARIZE_HINT = "binary masks stored 0..255: pass --opt binarize=128 (value >= 128 -> 1)"


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


def _read_gif(path: Path) -> np.ndarray:
    """A GIF label or mask (DRIVE stores its manual labels and FOV masks so) as ``(H, W)`` int64; exact 0/255
    becomes 0/1 as in :func:`trustseg.data.io.read_label`. GIF is read here only: it is no dataset file type."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L"), dtype=np.int64)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read .gif file (corrupt or truncated?): {type(e).__name__}: {e}", path) from None
    values = np.unique(arr)
    return arr // 255 if values.size and values[-1] == 255 and set(values.tolist()) <= {0, 255} else arr


def _read_label(path: Path, binarize: int | None) -> np.ndarray:
    """A label map, thresholded (``value >= binarize`` -> 1, else 0) when ``binarize`` is given."""
    lab = _read_gif(path) if path.suffix.lower() == ".gif" else read_label(path)[0]
    return (lab >= binarize).astype(np.int64) if binarize is not None else lab


def _read_case(
    fc: FolderCase,
    raters: list[str],
    group: str,
    classes: Sequence[str],
    binarize: int | None,
    target: Resample | None,
) -> Case:
    """Read one case: the image, every rater's label map (shapes and values checked), and its resampling."""
    img = read_image(fc.image)
    maps = []
    for r in raters:
        lab = _read_label(fc.labels[r], binarize)
        if lab.shape != img.array.shape[1:]:
            raise DataError(
                f"label shape {lab.shape} does not match image {img.array.shape[1:]} ({fc.image})", fc.labels[r]
            )
        if lab.size and lab.max() >= len(classes):
            bad = sorted(int(v) for v in np.unique(lab[lab >= len(classes)])[:5])
            raise DataError(
                f"label values {bad} outside the classes {list(classes)}: name every class with --opt classes=..., "
                f"or, for {_BINARIZE_HINT}",
                fc.labels[r],
            )
        maps.append(lab)
    mask = None
    if fc.mask is not None:
        mask = _read_label(fc.mask, binarize) > 0
        if mask.shape != img.array.shape[1:]:
            raise DataError(f"mask shape {mask.shape} does not match image {img.array.shape[1:]} ({fc.image})", fc.mask)
        if not mask.any():
            raise DataError("the field-of-view mask is empty (all 0): nothing of this case would be scored", fc.mask)
    case = Case(
        fc.case_id,
        img.array,
        np.stack(maps, 0),
        img.spacing,
        img.origin,
        group=group,
        meta={"raters": raters, "source": str(fc.image)},
        mask=mask,
    )
    return resample_case(case, target) if target is not None else case


def _infer_classes(cases: Sequence[FolderCase], binarize: int | None) -> list[str]:
    """``background, class1 .. class{max}`` from the largest label value; refuses sparse values (0/254/255 ...)."""
    values: set[int] = set()
    where = None
    for c in cases:
        for f in c.labels.values():
            found = {int(v) for v in np.unique(_read_label(f, binarize))}
            if max(found, default=0) > max(values, default=0):
                where = f
            values |= found
    top = max(values, default=0)
    if top >= 3 and top + 1 > 2 * len(values):
        shown = sorted(values)[:6]
        raise DataError(
            f"label values {shown}{' ...' if len(values) > 6 else ''} would make {top + 1} classes, most never used: "
            f"for {_BINARIZE_HINT}; for class maps with gaps name the classes with --opt classes=...",
            where,
        )
    return ["background"] + [f"class{k}" for k in range(1, max(top, 1) + 1)]


def _output_ext(ext: str | None, first_image: Path) -> str:
    """The dataset's file type: ``ext``, else the images' (JPEG images: ``.png``, as labels cannot be JPEG)."""
    if ext is None:
        own = split_ext(first_image)[1]
        return ".png" if own in _JPEG else own
    ext = ext if ext.startswith(".") else f".{ext}"
    if ext.lower() in _JPEG:
        raise ConfigError(
            f"ext={ext!r}: a dataset stores images and labels in one file type, and JPEG is lossy, so it cannot "
            "store label maps; pass --opt ext=.png (lossless; JPEG images convert exactly) or --opt ext=.nii.gz"
        )
    if ext.lower() not in EXTENSIONS:
        raise ConfigError(
            f"ext={ext!r} is not a file type trustseg writes; pass --opt ext= one of {', '.join(EXTENSIONS)}"
        )
    return ext


@IMPORTERS.register("folder", doc="generic: images + per-rater labels by folder layout or --label-pattern templates")
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
    image_pattern: str | None = None,
    label_pattern: str | None = None,
    mask_pattern: str | None = None,
    split_dirs: str | Sequence[str] | None = None,
    val_fraction: float = 0.15,
    size: str | Sequence[int] | None = None,
    spacing: str | Sequence[float] | None = None,
    binarize: int | None = None,
) -> Path:
    r"""Convert a generic image/label folder into a trustseg dataset (see the module docstring).

    Args:
        src: The source folder.
        out: Output dataset root.
        name: Dataset name (default: the folder name).
        classes: Class names, background first (default: from the largest label value).
        ext: Output file type (default: the first image's; ``.png`` for JPEG images, JPEG being lossy).
        seed: Seed of the default splits (and of the validation part carved from a source's training part).
        progress: Show a progress bar.
        group_by: A regular expression naming each case's group (patient) from its id (CLI ``--group-by``):
            its first capture group, else the whole match (``Image_(\d+)`` puts ``Image_01L`` and
            ``Image_01R`` in group ``01``); the splits never separate a group. Default: each case is its own group.
        image_pattern: Where the images are (CLI ``--image-pattern``), a template with ``{case}``; default
            ``images/{case}.*``.
        label_pattern: Where each rater's label is (CLI ``--label-pattern``), a template with ``{case}`` and
            ``{rater}`` (without ``{rater}``: one rater, ``rater0``); default: the three classic layouts.
        mask_pattern: Where each case's field-of-view mask is (CLI ``--mask-pattern``), a template with ``{case}``:
            nonzero (with ``binarize``: ``>= binarize``) = inside, scored; outside is left out of losses and metrics
            (:attr:`trustseg.data.case.Case.mask`). Default: no mask (every voxel counts).
        split_dirs: The source's split folders, ``"FOLDER=PART,..."`` (CLI ``--split-dirs``); ``"none"``: no
            source split; default: detected (:mod:`trustseg.data.importers.source_splits`).
        val_fraction: Fraction of the source's training cases (by group) that form ``val`` when it has none.
        size: Resample every case to ``"H,W"`` or ``"D,H,W"`` voxels (CLI ``--size``).
        spacing: Resample every case to this voxel size, ``"a,b[,c]"`` (CLI ``--spacing``).
        binarize: Threshold the labels and masks: ``value >= binarize`` -> 1, else 0 (masks stored 0..255 with
            values in between, JPEG labels). Exact 0/255 masks need none: they are read as 0/1.

    Raises:
        DataError: a missing folder or file (naming the option that says where it is), a case id the group
            pattern does not match, label values outside the classes; ConfigError: a malformed option.
    """
    src = Path(src)
    try:
        pattern = re.compile(group_by) if group_by is not None else None
    except re.error as e:
        raise ConfigError(f"--group-by {group_by!r} is not a regular expression: {e}") from None
    size_t, spacing_t = parse_axes(size, "--size", int), parse_axes(spacing, "--spacing", float)
    target = Resample(size_t, spacing_t) if size_t is not None or spacing_t is not None else None
    parts = source_parts(src, split_dirs, default_layout=image_pattern is None)
    cases, raters = scan_source(parts, image_pattern, label_pattern, mask_pattern)
    if binarize is None:
        jpeg = next((f for c in cases for f in c.labels.values() if f.name.lower().endswith(_JPEG)), None)
        if jpeg is not None:
            raise DataError(
                "labels stored as JPEG are lossy (a 0/255 mask decodes with values in between): pass "
                "--opt binarize=128 to threshold them (value >= 128 -> 1), or use PNG labels",
                jpeg,
            )
    groups = {c.case_id: group_of(c.case_id, pattern, c.image.parent) for c in cases}
    splits = None
    if parts[0].part is not None:
        part_of = {c.case_id: str(c.part) for c in cases}
        splits = {"fixed": source_fixed_split(part_of, groups, val_fraction, seed, src)}
    out_ext = _output_ext(ext, cases[0].image)  # before the first pass over the labels
    if classes is None:
        classes = _infer_classes(cases, binarize)
    return write_dataset(
        LazyCases(cases, lambda c: _read_case(c, raters, groups[c.case_id], classes, binarize, target)),
        out,
        classes=classes,
        name=name or src.name,
        ext=out_ext,
        splits=splits,
        seed=seed,
        progress=progress,
    )
