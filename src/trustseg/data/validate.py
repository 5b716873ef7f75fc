"""Checks every case passes before it is written or after it is read.

Each failed check raises :class:`~trustseg.core.errors.DataError` naming the file (or the case, when the data
does not come from one file) and the problem, so a user can find and fix the offending input.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from trustseg.core.errors import DataError
from trustseg.data.case import Case

_BAD_ID_CHARS = set('/\\:*?"<>|')


def check_case_id(case_id: str, source: str | Path | None = None) -> None:
    """A case id is used as a file name: non-empty, no path separators, not starting with a dot."""
    if not isinstance(case_id, str) or not case_id or case_id.startswith(".") or _BAD_ID_CHARS & set(case_id):
        raise DataError(
            f"case id {case_id!r} cannot be used as a file name "
            f"(empty, leading dot or one of {''.join(sorted(_BAD_ID_CHARS))})",
            source,
        )


def check_names(values: object, field: str, source: str | Path | None = None, min_count: int = 1) -> list[str]:
    """Check a list of names (``classes``, ``raters``): a JSON list of at least ``min_count`` distinct non-empty
    strings. A single string is refused (it would otherwise be iterated character by character).

    Args:
        values: The field's value as read.
        field: The field's name, named in errors.
        source: The file named in errors.
        min_count: Fewest names allowed.

    Returns:
        The names as a list.

    Raises:
        DataError: not a list, too few entries, a non-string or empty entry, or a repeated name.

    Example:
        >>> check_names(["background", "tumour"], "classes")
        ['background', 'tumour']
        >>> check_names("abc", "classes")
        Traceback (most recent call last):
        ...
        trustseg.core.errors.DataError: 'classes' must be a list of names, got the str 'abc'
    """
    if not isinstance(values, (list, tuple)):
        raise DataError(f"{field!r} must be a list of names, got the {type(values).__name__} {values!r}", source)
    bad = [v for v in values if not isinstance(v, str) or not v]
    if bad:
        raise DataError(f"{field!r} entries must be non-empty strings, got {bad[:5]}", source)
    if len(values) < min_count:
        raise DataError(f"{field!r} needs at least {min_count} names, got {list(values)}", source)
    dup = sorted(v for v, n in Counter(values).items() if n > 1)
    if dup:
        raise DataError(f"{field!r} names must be distinct; repeated: {dup[:10]}", source)
    return list(values)


def validate_case(case: Case, num_classes: int, source: str | Path | None = None) -> None:
    """Check a case's shapes, label values and intensities.

    Checks: ``image`` is ``(C, H, W)`` or ``(C, D, H, W)`` with ``C >= 1``; ``labels`` is ``(R, *spatial)`` with
    ``R >= 1`` (a case with no rater is an error) and the image's spatial shape; labels are integers in
    ``[0, num_classes)``; intensities are finite (no NaN/Inf); ``spacing``/``origin`` have one entry per spatial
    axis and spacing is positive.

    Args:
        case: The case to check.
        num_classes: K (background included).
        source: The file (or folder) the case came from, named in errors; defaults to ``case <id>``.

    Raises:
        DataError: on the first failed check.
    """
    where = source if source is not None else f"case {case.case_id!r}"
    check_case_id(case.case_id, where)
    img, lab = np.asarray(case.image), np.asarray(case.labels)
    if img.ndim not in (3, 4) or img.shape[0] < 1:
        raise DataError(f"image must be (C, H, W) or (C, D, H, W), got shape {img.shape}", where)
    if img.dtype.kind not in "biuf":
        raise DataError(f"image must hold numbers, got dtype {img.dtype}", where)
    if lab.ndim == 0 or lab.shape[0] == 0:
        raise DataError("case has no rater label (labels must be (R, *spatial) with R >= 1)", where)
    if lab.shape[1:] != img.shape[1:]:
        raise DataError(
            f"image/label shape mismatch: image spatial shape {img.shape[1:]}, labels {lab.shape[1:]} "
            f"(labels must be (R, *spatial), image (C, *spatial))",
            where,
        )
    if lab.dtype.kind not in "biu":
        raise DataError(f"labels must be integer class indices, got dtype {lab.dtype}", where)
    if lab.size:
        lo, hi = int(lab.min()), int(lab.max())
        if lo < 0 or hi >= num_classes:
            bad = sorted(int(v) for v in np.unique(lab[(lab < 0) | (lab >= num_classes)])[:5])
            raise DataError(
                f"label values {bad} outside the declared classes [0, {num_classes}) ({num_classes} classes)", where
            )
    if img.dtype.kind == "f" and not np.isfinite(img).all():
        n_nan, n_inf = int(np.isnan(img).sum()), int(np.isinf(img).sum())
        raise DataError(f"image has non-finite intensities ({n_nan} NaN, {n_inf} Inf)", where)
    sdims = img.ndim - 1
    for name, value in (("spacing", case.spacing), ("origin", case.origin)):
        if value is None or len(value) != sdims:
            raise DataError(f"{name} {value} must have one entry per spatial axis ({sdims})", where)
    if any(not np.isfinite(s) or s <= 0 for s in case.spacing):
        raise DataError(f"spacing {case.spacing} must be positive and finite", where)
    if case.mask is not None:
        case.mask = check_mask(case.mask, img.shape[1:], where)


def check_mask(mask: np.ndarray, spatial: tuple[int, ...], where: str | Path) -> np.ndarray:
    """A field-of-view mask as ``bool`` ``(*spatial)``: values 0/1 (or bool), the image's spatial shape, and at
    least one voxel inside.

    Raises:
        DataError: wrong shape, values other than 0/1, or an empty mask (nothing would be scored).

    Example:
        >>> check_mask(np.array([[0, 1], [1, 1]], dtype=np.uint8), (2, 2), "m.png").sum()
        np.int64(3)
    """
    m = np.asarray(mask)
    if m.shape != tuple(spatial):
        raise DataError(f"mask shape {m.shape} does not match the image's spatial shape {tuple(spatial)}", where)
    if m.dtype != bool:
        if m.dtype.kind not in "biu" or (m.size and (m.min() < 0 or m.max() > 1)):
            raise DataError("a field-of-view mask must hold 0 (outside) and 1 (inside) only", where)
        m = m.astype(bool)
    if not m.any():
        raise DataError("the field-of-view mask is empty: no voxel would be trained or scored", where)
    return m


def check_unique_ids(ids: Iterable[str], source: str | Path | None = None) -> list[str]:
    """Check that a dataset has cases and that no case id repeats.

    Args:
        ids: Case ids, in dataset order.
        source: The dataset file or folder named in errors.

    Returns:
        The ids as a list.

    Raises:
        DataError: empty dataset or duplicate ids (the duplicates are listed).
    """
    ids = list(ids)
    if not ids:
        raise DataError("empty dataset: no cases found", source)
    dup = sorted(i for i, n in Counter(ids).items() if n > 1)
    if dup:
        shown = ", ".join(repr(d) for d in dup[:10]) + (" ..." if len(dup) > 10 else "")
        raise DataError(f"duplicate case ids: {shown}", source)
    return ids
