"""The on-disk prediction format (what ``trustseg predict`` writes), and reading it back.

The writer, which computes the measures, is :class:`trustseg.engine.prediction_folder.FolderWriter`; this module
is the reading half, used by the evaluation and the reports.

A prediction folder::

    NIfTI input (same affine, spacing and origin as the input):
        <case>_probs.nii.gz       K channels (float32), the predictive mean p̄
        <case>_seg.nii.gz         argmax of p̄ (uint8 class indices)
        <case>_<measure>.nii.gz   one per measure (float32)
    any other input (PNG, TIFF, JPEG, NumPy):
        <case>_seg.png            class indices (2D; .npy for volumes)
        <case>_probs.npy          (K, *spatial) float32
        <case>_<measure>.npy      (*spatial) float32, plus <case>_<measure>.png, a colour preview (2D only)
    <case>_samples.npy            (M, K, *spatial) float16, with ``predict --samples``
    predictions.json              the index (below)
    summary.csv                   case, predicted volume per class (voxels x voxel volume), each measure's mean
                                  oriented higher = more uncertain (mean_entropy, mean_one_minus_confidence)

The index ``predictions.json``::

    {"method": str, "run": run folder or null, "classes": [names, background first], "measures": [names],
     "temperature": float, "complete": bool, "expected": [case ids the folder is to hold],
     "cases": [{"id": str, "source": input file, "shape": [spatial sizes],
                "files": {"seg": file, "probs": file, "measures": {measure: file}, "previews": {measure: file},
                          "samples": file (optional)},
                "qc": {"predicted_dice": float, "dice_low": float, "dice_high": float, "uncertainty_score": float,
                       "ood_p": float, "review": bool, "reason": str, "target": "dice"} (optional)}]}

File names in ``files`` are relative to the folder and must lie inside it (symlinks included): an absolute path
or one leaving the folder is refused unless ``allow_outside`` (:func:`trustseg.data.paths.contained_path`). Only
``seg`` is required: a folder written by another tool may hold segmentations only. The optional ``qc`` entry is
the case's predicted quality (``trustseg predict --qc``, ``trustseg qc predict``); ``trustseg evaluate`` scores it
against the true Dice (``docs/evaluation.md``).

``"complete"`` is ``false`` while ``trustseg predict`` runs (and after it failed or was killed) and ``true`` once
every expected case is written; :func:`completeness` reads it. A folder without the marker (written before it
existed, or by another tool) counts as complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from trustseg.core.errors import DataError
from trustseg.data.io import read_image, read_label
from trustseg.data.paths import contained_path

#: The index file of a prediction folder.
INDEX = "predictions.json"
#: The per-case table the writer keeps beside the index.
SUMMARY = "summary.csv"


def index_path(pred_dir: str | Path) -> Path:
    """The path of a prediction folder's index."""
    return Path(pred_dir) / INDEX


def check_index(index: Any, path: Path) -> None:
    """Refuse an index of the wrong shape (one clear error naming ``path``, never a ``KeyError`` later).

    Checks: an object with a list ``cases``; each case an object with a string ``id`` and an object ``files``
    holding a ``seg`` file name, whose ``measures`` and ``previews`` (if any) are objects, and a list ``shape`` of
    integers (required when the case has measure maps); ``classes`` (if any) a list of strings.
    """
    if not isinstance(index, dict):
        raise DataError(f"predictions.json must hold a JSON object, got {type(index).__name__}", path)
    if not isinstance(index.get("cases"), list):
        raise DataError("predictions.json lacks a list 'cases' (not written by `trustseg predict`?)", path)
    classes = index.get("classes")
    if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)):
        raise DataError(f"predictions.json 'classes' must be a list of names, got {classes!r}", path)
    for i, entry in enumerate(index["cases"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            raise DataError(f"cases[{i}] must be an object with a non-empty string 'id'", path)
        where = f"case {entry['id']!r}"
        files = entry.get("files")
        if not isinstance(files, dict) or not files.get("seg"):
            raise DataError(f"{where}: 'files' must be an object naming at least the 'seg' file", path)
        for key in ("measures", "previews"):
            if not isinstance(files.get(key, {}), dict):
                raise DataError(f"{where}: files[{key!r}] must map measure names to files", path)
        shape = entry.get("shape")
        if (shape is not None or files.get("measures")) and (
            not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape)
        ):
            raise DataError(f"{where}: 'shape' must be a list of integers, got {shape!r}", path)


def read_index(pred_dir: str | Path, *, allow_outside: bool = False) -> dict[str, Any]:
    """``predictions.json`` of a prediction folder, with every case's files checked to lie inside the folder.

    Args:
        pred_dir: The prediction folder.
        allow_outside: Accept files outside ``pred_dir`` (absolute paths, ``..``, symlinks leaving it).

    Raises:
        DataError: no index (not a prediction folder), an index that is not valid JSON or of the wrong shape
            (:func:`check_index`), or a case file outside the folder (unless ``allow_outside``).
    """
    path = index_path(pred_dir)
    if not path.is_file():
        raise DataError("not a prediction folder (no predictions.json; run `trustseg predict`)", Path(pred_dir))
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"cannot parse predictions.json: {e}", path) from None
    check_index(index, path)
    for entry in index["cases"]:
        case_files(pred_dir, entry, allow_outside=allow_outside)
    return index


def completeness(index: dict[str, Any]) -> tuple[int, int] | None:
    """``(k, n)``: ``k`` of the ``n`` expected cases are indexed, for an index marked incomplete; ``None`` when it
    is complete or carries no marker (a folder written before the marker existed counts as complete).

    >>> completeness({"complete": False, "expected": ["a", "b", "c"], "cases": [{"id": "a"}]})
    (1, 3)
    >>> completeness({"complete": True, "expected": ["a"], "cases": [{"id": "a"}]}) is None
    True
    >>> completeness({"cases": [{"id": "a"}]}) is None
    True
    """
    if index.get("complete", True) is not False:
        return None
    expected = [str(c) for c in index.get("expected") or []]
    have = {c.get("id") for c in index.get("cases", []) if isinstance(c, dict)}
    return sum(cid in have for cid in expected), len(expected)


def check_complete(pred_dir: str | Path, index: dict[str, Any], partial: bool = False) -> dict[str, int] | None:
    """Refuse an incomplete prediction folder unless ``partial``.

    Returns:
        ``None`` for a complete folder; with ``partial``, ``{"scored": k, "expected": n}`` for an incomplete one.

    Raises:
        DataError: naming ``predictions.json``, for an incomplete folder without ``partial``.
    """
    counts = completeness(index)
    if counts is None:
        return None
    if not partial:
        raise DataError(
            f"{counts[0]} of {counts[1]} cases predicted; finish it with trustseg predict --resume, or evaluate "
            "what is there with --partial",
            index_path(pred_dir),
        )
    return {"scored": counts[0], "expected": counts[1]}


def read_map(path: str | Path) -> np.ndarray:
    """Read one map of a prediction folder (``.npy``, or NIfTI read as ``(C, *spatial)``)."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:  # EOFError: a zero-byte or truncated file
            raise DataError(f"cannot read map: {e or 'the file is empty'}", path) from None
    return read_image(path).array


def load_prediction(
    pred_dir: str | Path,
    case_id: str,
    *,
    entry: dict[str, Any] | None = None,
    seg: bool = True,
    allow_outside: bool = False,
) -> dict[str, Any]:
    """One case of a prediction folder, as arrays.

    Args:
        pred_dir: The prediction folder.
        case_id: The case.
        entry: The case's entry of ``predictions.json``, when the caller has read the index already (saves
            reading it again per case).
        seg: Read the segmentation (``False``: ``"seg"`` is None, for callers that hold it already).
        allow_outside: Accept files outside ``pred_dir`` (absolute paths, ``..``, symlinks leaving it).

    Returns:
        ``{"probs": (K, *spatial) float32 or None (segmentation only), "seg": (*spatial) int64 or None,
        "spacing": the segmentation file's voxel spacing (None with ``seg=False``),
        "maps": {measure: (*spatial) float32}, "samples": (M, K, *spatial) float32 or None}``.

    Raises:
        DataError: the case is not in the index, a file lies outside ``pred_dir`` (unless ``allow_outside``), or a
            file cannot be read.
    """
    pred_dir = Path(pred_dir)
    if entry is None:
        entry = next(
            (c for c in read_index(pred_dir, allow_outside=allow_outside)["cases"] if c["id"] == case_id), None
        )
    if entry is None:
        raise DataError(f"case {case_id!r} is not in this prediction folder", index_path(pred_dir))
    paths = case_files(pred_dir, entry, allow_outside=allow_outside)
    maps = {}
    for name in entry["files"].get("measures", {}):
        m = read_map(paths[f"map:{name}"])
        maps[name] = (m[0] if m.ndim == len(entry["shape"]) + 1 else m).astype(np.float32)
    label, spacing = read_label(paths["seg"])[:2] if seg else (None, None)
    return {
        "probs": read_map(paths["probs"]).astype(np.float32) if "probs" in paths else None,
        "seg": None if label is None else label.astype(np.int64),
        "spacing": None if spacing is None else tuple(spacing),
        "maps": maps,
        "samples": read_map(paths["samples"]).astype(np.float32) if "samples" in paths else None,
    }


def case_files(pred_dir: str | Path, entry: dict[str, Any], *, allow_outside: bool = False) -> dict[str, Path]:
    """The files of one indexed case by role: ``"seg"``, ``"probs"``, ``"samples"`` and ``"map:<measure>"``.

    The colour previews (``files["previews"]``) are checked too but not returned (nothing reads them back).

    Raises:
        DataError: a file lies outside ``pred_dir`` (unless ``allow_outside``) or is not a non-empty string.
    """
    pred_dir, files = Path(pred_dir), entry.get("files", {})
    index, cid = index_path(pred_dir), entry.get("id")

    def check(rel: object, role: str) -> Path:
        where = f"case {cid!r} files[{role!r}]"
        return contained_path(pred_dir, rel, index, where, allow_outside=allow_outside)

    out = {role: check(files[role], role) for role in ("seg", "probs", "samples") if files.get(role) is not None}
    out.update({f"map:{name}": check(f, f"measures.{name}") for name, f in files.get("measures", {}).items()})
    for name, f in files.get("previews", {}).items():
        check(f, f"previews.{name}")
    return out
