"""The trustseg dataset layout: writing it (atomically) and reading it back lazily.

Layout::

    ROOT/dataset.json
    ROOT/images/<case>.<ext>              image (C, *spatial)
    ROOT/labels/<case>/<rater>.<ext>      one integer class map (*spatial) per rater
    ROOT/masks/<case>.<ext>               optional field-of-view mask (*spatial), 1 inside, 0 outside

``dataset.json`` (``format_version`` 1)::

    {"name": str, "format_version": 1,
     "classes": ["background", ...],          # K names, background first
     "raters": ["rater0", ...],               # R ids, the same for every case
     "spatial_dims": 2 | 3, "channels": C, "file_ext": ".nii.gz",
     "cases": [{"id", "group", "image": "images/<id><ext>", "labels": {rater: "labels/<id>/<rater><ext>"},
                "shape": [...spatial], "spacing": [...], "origin": [...],
                "mask": "masks/<id><ext>"}, ...],     # "mask" only for cases with a field of view
     "splits": {"fixed": {"train": [...], "val": [...], "test": [...]},
                "kfold": {"k": 5, "folds": [[ids], ...]}}}

The k folds partition the cases outside the fixed test set (the test set never enters cross-validation).
A case's mask (:attr:`trustseg.data.case.Case.mask`) marks the voxels that count: outside it nothing is trained
(the training loader passes it as the batch's ``valid`` map) or scored (the evaluation leaves those voxels out).
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trustseg.core.atomic import atomic_dir, atomic_write_json
from trustseg.core.errors import DataError, UnknownNameError
from trustseg.core.lock import exclusive
from trustseg.data.case import Case
from trustseg.data.io import EXTENSIONS, read_image, read_label, write_image, write_label
from trustseg.data.paths import contained_path
from trustseg.data.splits import DEFAULT_FRACTIONS, PARTS, fixed_split, kfold_split
from trustseg.data.validate import check_case_id, check_mask, check_names, check_unique_ids, validate_case

FORMAT_VERSION = 1
DATASET_JSON = "dataset.json"


def _progress(total: int | None, description: str, enabled: bool):
    """A rich progress bar (or a no-op stand-in) with ``.advance()``; use as a context manager."""
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(lambda n=1: None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    class _Bar:
        def __enter__(self):
            self.p = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self.p.__enter__()
            task = self.p.add_task(description, total=total)
            return lambda n=1: self.p.advance(task, n)

        def __exit__(self, *exc):
            return self.p.__exit__(*exc)

    return _Bar()


def _case_raters(case: Case) -> list[str]:
    raters = case.meta.get("raters") if case.meta else None
    if raters is None:
        return [f"rater{r}" for r in range(case.num_raters)]
    raters = [str(r) for r in raters]
    if len(raters) != case.num_raters or len(set(raters)) != len(raters):
        raise DataError(
            f"meta['raters'] {raters} must name each of the {case.num_raters} raters once", f"case {case.case_id!r}"
        )
    return raters


def default_splits(
    ids: Sequence[str],
    groups: Sequence[str],
    seed: int = 0,
    k: int = 5,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> dict[str, Any]:
    """Fixed split by group (``fractions`` train/val/test, default 70/15/15), and ``min(k, groups)``-fold split
    by group of the non-test cases."""
    fixed = fixed_split(ids, groups, fractions, seed)
    return {"fixed": fixed} | _kfold(ids, groups, fixed, seed, k)


def _kfold(ids, groups, fixed, seed, k=5) -> dict[str, Any]:
    test = set(fixed["test"]) if fixed else set()
    rest = [(i, g) for i, g in zip(ids, groups) if i not in test]
    n_groups = len({g for _, g in rest})
    k = min(k, n_groups)
    if k < 2:
        return {"kfold": {"k": 0, "folds": []}}
    return {"kfold": {"k": k, "folds": kfold_split([i for i, _ in rest], [g for _, g in rest], k, seed)}}


def _check_splits(splits: dict[str, Any], ids: Sequence[str], where) -> dict[str, Any]:
    known = set(ids)
    if not isinstance(splits, dict):
        raise DataError(f"'splits' must be an object with 'fixed' (and 'kfold'), got {type(splits).__name__}", where)
    fixed = splits.get("fixed")
    if not isinstance(fixed, dict) or set(fixed) - set(PARTS):
        raise DataError(f"splits['fixed'] must map {PARTS} to id lists", where)
    if not all(isinstance(fixed.get(p, []), list) for p in PARTS):
        raise DataError(f"splits['fixed'] must map {PARTS} to lists of case ids", where)
    fixed = {p: [str(i) for i in fixed.get(p, [])] for p in PARTS}
    seen: list[str] = [i for p in PARTS for i in fixed[p]]
    unknown = sorted(set(seen) - known)
    if unknown:
        raise DataError(f"splits name unknown case ids: {unknown[:5]}", where)
    if len(seen) != len(set(seen)) or set(seen) != known:
        raise DataError("splits['fixed'] must put every case in exactly one of train/val/test", where)
    kf = splits.get("kfold", {"k": 0, "folds": []})
    raw = kf.get("folds", []) if isinstance(kf, dict) else None
    if not isinstance(raw, list) or not all(isinstance(f, list) for f in raw):
        raise DataError("splits['kfold'] must be {'k': int, 'folds': [[case ids], ...]}", where)
    folds = [[str(i) for i in f] for f in raw]
    flat = [i for f in folds for i in f]
    if len(flat) != len(set(flat)) or set(flat) - known or set(flat) & set(fixed["test"]):
        raise DataError("splits['kfold'] folds must be disjoint, known, non-test case ids", where)
    return {"fixed": fixed, "kfold": {"k": len(folds), "folds": folds}}


def check_dataset_out(out: str | Path, overwrite: bool = False, src: str | Path | None = None) -> Path:
    """Refuse a dataset output folder whose contents would be lost.

    A missing or empty ``out`` is fine. An existing trustseg dataset (a folder holding ``dataset.json``) is
    replaced only with ``overwrite``; anything else (a file, a folder of other files) is never replaced. With
    ``src`` (an importer's source), ``out`` equal to or inside ``src`` is refused: the source is never modified.

    Raises:
        DataError: naming ``out`` and the problem (and the ``--overwrite`` option where it would help).
    """
    out = Path(out)
    if src is not None:
        s, o = Path(src).resolve(), out.resolve()
        if o == s or s in o.parents:
            raise DataError(
                f"the output folder is {'the' if o == s else 'inside the'} import source {src}; "
                "the source is never modified: choose an --out outside it",
                out,
            )
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return out
    if not out.is_dir():
        raise DataError("exists and is not a folder; choose another --out", out)
    if not (out / DATASET_JSON).is_file():
        raise DataError(
            f"exists, is not empty and is not a trustseg dataset (no {DATASET_JSON}); it is never replaced "
            "(not even with --overwrite): choose a new or empty --out folder",
            out,
        )
    if not overwrite:
        raise DataError("is an existing trustseg dataset; pass --overwrite (overwrite=True) to replace it", out)
    return out


def write_dataset(
    cases: Iterable[Case],
    out: str | Path,
    classes: Sequence[str],
    name: str = "dataset",
    ext: str = ".nii.gz",
    splits: dict | None = None,
    seed: int = 0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    progress: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write cases into the trustseg layout, atomically.

    The dataset is built in a temporary folder beside ``out`` (:func:`trustseg.core.atomic.atomic_dir`) and
    swapped in only when complete: a failure leaves nothing behind and an existing dataset at ``out`` intact.
    Cases are streamed (one in memory at a time).

    Args:
        cases: The cases; every one is validated (:func:`validate_case`). Rater ids come from
            ``case.meta["raters"]`` when present, else ``rater0 .. rater{R-1}``; all cases must have the same ids.
        out: Dataset root folder.
        classes: K class names, background first.
        name: Dataset name.
        ext: File extension for images and labels (one of :data:`trustseg.data.io.EXTENSIONS`).
        splits: ``{"fixed": {...}, "kfold": {...}}``; a missing entry is computed (:func:`default_splits`).
        seed: Seed of the default splits.
        fractions: ``(train, val, test)`` fractions of the default fixed split (when ``splits`` has none).
        progress: Show a rich progress bar.
        overwrite: Replace an earlier trustseg dataset at ``out`` (see :func:`check_dataset_out`).

    Returns:
        ``out`` as a :class:`Path`.

    Raises:
        DataError: ``out`` is refused by :func:`check_dataset_out`; another process writes a dataset to ``out``
            (its lock); invalid case (shape, labels, NaN, no rater), raters or channel count differing between
            cases, duplicate ids, empty dataset, bad splits.
    """
    out = Path(out)
    check_dataset_out(out, overwrite)
    with exclusive(writing_lock(out), "dataset"):  # a second synth/import into the same folder fails fast
        return _write_dataset(cases, out, classes, name, ext, splits, seed, fractions, progress, overwrite)


def writing_lock(out: Path) -> Path:
    """The folder holding the writer lock of a dataset being written to ``out``: ``.NAME.writing`` beside it
    (``out`` itself is swapped in whole at the end, so the lock cannot live inside it); removed afterwards."""
    return out.parent / f".{out.name}.writing"


def _write_dataset(
    cases: Iterable[Case],
    out: Path,
    classes: Sequence[str],
    name: str,
    ext: str,
    splits: dict | None,
    seed: int,
    fractions: Sequence[float],
    progress: bool,
    overwrite: bool,
) -> Path:
    """The body of :func:`write_dataset`, under the writer lock."""
    ext = ext if ext.startswith(".") else f".{ext}"
    if ext.lower() not in EXTENSIONS:
        raise DataError(f"unsupported dataset file extension {ext!r}; use one of {', '.join(EXTENSIONS)}", out)
    if isinstance(classes, str):
        raise DataError(f"classes must be a list of names (background first), got the string {classes!r}", out)
    classes = check_names([str(c) for c in classes], "classes", out, min_count=2)
    records: list[dict[str, Any]] = []
    raters: list[str] | None = None
    sdims = channels = None
    total = len(cases) if hasattr(cases, "__len__") else None  # type: ignore[arg-type]
    with atomic_dir(out, overwrite=True) as tmp, _progress(total, f"writing {out.name}", progress) as advance:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        seen: set[str] = set()
        for case in cases:
            src = case.meta.get("source")  # importers record the file a case was read from
            where = f"case {case.case_id!r}" + (f" ({src})" if src else "")
            validate_case(case, len(classes), where)
            if case.case_id in seen:
                raise DataError(f"duplicate case id {case.case_id!r}", out)
            seen.add(case.case_id)
            ids = _case_raters(case)
            if raters is None:
                raters, sdims, channels = ids, case.spatial_dims, int(case.image.shape[0])
            elif ids != raters:
                missing = sorted(set(raters) - set(ids))
                raise DataError(
                    f"raters {ids} differ from the dataset's {raters}" + (f" (missing {missing})" if missing else ""),
                    where,
                )
            elif case.spatial_dims != sdims or case.image.shape[0] != channels:
                raise DataError(
                    f"image {case.image.shape} differs from the dataset's {sdims}D, {channels}-channel images", where
                )
            rec = _write_case(tmp, case, raters, ext)
            records.append(rec)
            advance(1)
        ids = check_unique_ids([r["id"] for r in records], out)
        groups = [r["group"] for r in records]
        splits = dict(splits or {})
        if "fixed" not in splits:
            splits = default_splits(ids, groups, seed, fractions=fractions) | splits
        elif "kfold" not in splits:
            splits |= _kfold(ids, groups, splits["fixed"], seed)
        splits = _check_splits(splits, ids, out)
        meta = {
            "name": name,
            "format_version": FORMAT_VERSION,
            "classes": classes,
            "raters": raters,
            "spatial_dims": sdims,
            "channels": channels,
            "file_ext": ext,
            "cases": records,
            "splits": splits,
        }
        atomic_write_json(tmp / DATASET_JSON, meta)
    return out


def _write_case(root: Path, case: Case, raters: list[str], ext: str) -> dict[str, Any]:
    cid = case.case_id
    image_rel = f"images/{cid}{ext}"
    try:
        write_image(root / image_rel, np.asarray(case.image), case.spacing, case.origin, spatial_dims=case.spatial_dims)
    except DataError as e:
        raise DataError(
            f"cannot store the image as {ext}: {e.problem} (importers: choose the file type with --opt ext=.nii.gz)",
            f"case {cid!r}",
        ) from None
    (root / "labels" / cid).mkdir()
    labels = {}
    for r, rater in enumerate(raters):
        rel = f"labels/{cid}/{rater}{ext}"
        write_label(root / rel, np.asarray(case.labels[r]), case.spacing, case.origin)
        labels[rater] = rel
    mask_rel = None
    if case.mask is not None:
        mask_rel = f"masks/{cid}{ext}"
        (root / "masks").mkdir(exist_ok=True)
        write_label(root / mask_rel, np.asarray(case.mask, dtype=np.uint8), case.spacing, case.origin)
    simple = {k: v for k, v in (case.meta or {}).items() if k != "raters" and isinstance(v, (str, int, float, bool))}
    rec = {
        "id": cid,
        "group": str(case.group),
        "image": image_rel,
        "labels": labels,
        "shape": list(case.spatial_shape),
        "spacing": [float(s) for s in case.spacing],
        "origin": [float(o) for o in case.origin],
    }
    if mask_rel is not None:
        rec["mask"] = mask_rel
    if simple:
        rec["meta"] = simple
    return rec


class Dataset:
    """A trustseg dataset on disk (or a view on some of its cases); cases are read lazily and validated on read.

    Args:
        root: Dataset root (holds ``dataset.json``).
        meta: The parsed ``dataset.json`` (read from ``root`` when ``None``).
        ids: Restrict to these case ids (a view; ``None`` for all).
        allow_outside: Accept case files outside ``root`` (absolute paths, ``..``, symlinks leaving the folder);
            by default they are refused when ``dataset.json`` is read (:func:`trustseg.data.paths.contained_path`).
            A ``meta`` given by the caller is taken as checked.
    """

    def __init__(
        self,
        root: str | Path,
        meta: dict[str, Any] | None = None,
        ids: Sequence[str] | None = None,
        *,
        allow_outside: bool = False,
    ):
        self.root = Path(root)
        self.allow_outside = allow_outside
        self._meta = meta if meta is not None else _read_meta(self.root, allow_outside)
        self._records = {c["id"]: c for c in self._meta["cases"]}
        if ids is None:
            self._ids = [c["id"] for c in self._meta["cases"]]
        else:
            unknown = [i for i in ids if i not in self._records]
            if unknown:
                raise DataError(f"unknown case ids {unknown[:5]}", self.root / DATASET_JSON)
            if len(set(ids)) != len(ids):
                raise DataError("a dataset view cannot repeat case ids", self.root / DATASET_JSON)
            self._ids = list(ids)
        self._idset = set(self._ids)

    # -- description --------------------------------------------------------------------------------------------
    name = property(lambda self: str(self._meta["name"]), doc="Dataset name.")
    classes = property(lambda self: list(self._meta["classes"]), doc="K class names, background first.")
    num_classes = property(lambda self: len(self._meta["classes"]), doc="K.")
    raters = property(lambda self: list(self._meta["raters"]), doc="R rater ids.")
    num_raters = property(lambda self: len(self._meta["raters"]), doc="R.")
    spatial_dims = property(lambda self: int(self._meta["spatial_dims"]), doc="2 or 3.")
    channels = property(lambda self: int(self._meta["channels"]), doc="Image channels C.")
    file_ext = property(lambda self: str(self._meta["file_ext"]), doc="Extension of the stored files.")
    ids = property(lambda self: list(self._ids), doc="Case ids of this dataset (or view), in order.")
    groups = property(
        lambda self: [str(self._records[i].get("group", i)) for i in self._ids],
        doc="Group of each case (its id when dataset.json names none).",
    )
    meta = property(lambda self: self._meta, doc="The parsed dataset.json.")
    has_masks = property(
        lambda self: any(self._records[i].get("mask") is not None for i in self._ids),
        doc="Whether any case of this dataset (or view) has a field-of-view mask.",
    )

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[Case]:
        return (self[i] for i in self._ids)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, {len(self)} cases, {self.spatial_dims}D, C={self.channels}, "
            f"K={self.num_classes}, R={self.num_raters}, root={str(self.root)!r})"
        )

    # -- cases --------------------------------------------------------------------------------------------------
    def _case_id(self, key: int | str) -> str:
        """The id of the case at position ``key`` or with id ``key`` ("did you mean" for an unknown id)."""
        if isinstance(key, (int, np.integer)):
            return self._ids[key]
        if key in self._idset:
            return key
        close = difflib.get_close_matches(str(key), self._ids, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UnknownNameError(f"no case {key!r} in {self.name}{hint}")

    def image(self, key: int | str) -> np.ndarray:
        """Only the image ``(C, *spatial)`` of a case (no label is read; e.g. to fit intensity statistics)."""
        return read_image(self.root / self._records[self._case_id(key)]["image"]).array

    def __getitem__(self, key: int | str) -> Case:
        """The case at position ``key`` or with id ``key``, read from disk and validated."""
        cid = self._case_id(key)
        rec = self._records[cid]
        img_path = self.root / rec["image"]
        img = read_image(img_path)
        if img.array.ndim - 1 != self.spatial_dims or img.array.shape[0] != self.channels:
            raise DataError(
                f"image {tuple(img.array.shape)} is not (C={self.channels}, {self.spatial_dims} spatial axes) as "
                f"{DATASET_JSON} declares",
                img_path,
            )
        maps = []
        for rater in self._meta["raters"]:
            rel = rec["labels"].get(rater)
            if rel is None:
                raise DataError(f"case {cid!r} has no label entry for rater {rater!r}", self.root / DATASET_JSON)
            lab, _, _ = read_label(self.root / rel)
            if lab.shape != img.array.shape[1:]:
                raise DataError(f"label shape {lab.shape} does not match image {img.array.shape[1:]}", self.root / rel)
            if lab.size and (lab.min() < 0 or lab.max() >= self.num_classes):
                bad = sorted(int(v) for v in np.unique(lab[(lab < 0) | (lab >= self.num_classes)])[:5])
                raise DataError(
                    f"label values {bad} outside the declared classes [0, {self.num_classes}) {self.classes}",
                    self.root / rel,
                )
            maps.append(lab)
        mask = None
        if rec.get("mask") is not None:
            mask_path = self.root / rec["mask"]
            mask = check_mask(read_label(mask_path)[0], img.array.shape[1:], mask_path)
        case = Case(
            case_id=cid,
            image=img.array,
            labels=np.stack(maps, 0),
            spacing=tuple(rec.get("spacing") or img.spacing),
            origin=tuple(rec.get("origin") or img.origin),
            group=rec.get("group", cid),
            meta={"image": str(img_path), "affine": img.affine, "raters": self.raters, **rec.get("meta", {})},
            mask=mask,
        )
        validate_case(case, self.num_classes, img_path)
        return case

    # -- splits -------------------------------------------------------------------------------------------------
    def split(self, name: str) -> list[str]:
        """Ids of the fixed split part ``name`` (``train``/``val``/``test``) that are in this view."""
        fixed = self._meta["splits"]["fixed"]
        if name not in fixed:
            close = difflib.get_close_matches(name, list(fixed), n=1)
            raise DataError(
                f"unknown split {name!r}"
                + (f"; did you mean {close[0]!r}?" if close else "")
                + f" Known: {', '.join(fixed)}",
                self.root / DATASET_JSON,
            )
        return [i for i in fixed[name] if i in self._idset]

    @property
    def num_folds(self) -> int:
        """k of the stored k-fold split (0 when there is none)."""
        return len(self._meta["splits"]["kfold"]["folds"])

    def fold(self, k: int) -> tuple[list[str], list[str]]:
        """``(train_ids, val_ids)`` of cross-validation round ``k``: val = fold ``k``, train = the other folds."""
        folds = self._meta["splits"]["kfold"]["folds"]
        if not 0 <= k < len(folds):
            raise DataError(f"fold {k} out of range: this dataset has {len(folds)} folds", self.root / DATASET_JSON)
        val = [i for i in folds[k] if i in self._idset]
        train = [i for j, f in enumerate(folds) if j != k for i in f if i in self._idset]
        return train, val

    def subset(self, ids: Sequence[str]) -> Dataset:
        """A view on the cases ``ids`` (same files, same splits restricted to them)."""
        return Dataset(self.root, self._meta, list(ids), allow_outside=self.allow_outside)


def _read_meta(root: Path, allow_outside: bool = False) -> dict[str, Any]:
    path = root / DATASET_JSON
    if not path.is_file():
        raise DataError("dataset.json not found (not a trustseg dataset? see `trustseg import`)", path)
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot parse dataset.json: {e}", path) from None
    if not isinstance(meta, dict):
        raise DataError("dataset.json must hold a JSON object", path)
    required = ("name", "format_version", "classes", "raters", "spatial_dims", "channels", "cases", "splits")
    missing = [k for k in required if k not in meta]
    if missing:
        raise DataError(f"dataset.json lacks the keys {missing}", path)
    if meta["format_version"] != FORMAT_VERSION:
        raise DataError(f"unsupported format_version {meta['format_version']} (this trustseg reads 1)", path)
    if not meta["raters"]:
        raise DataError("dataset.json declares no raters", path)
    check_names(meta["classes"], "classes", path, min_count=2)
    check_names(meta["raters"], "raters", path)
    ext = meta.setdefault("file_ext", ".nii.gz")  # written by every trustseg version; older or hand-made: NIfTI
    if not isinstance(ext, str) or ext.lower() not in EXTENSIONS:
        raise DataError(f"'file_ext' must be one of {', '.join(EXTENSIONS)}, got {ext!r}", path)
    sd, ch = meta["spatial_dims"], meta["channels"]
    if isinstance(sd, bool) or not isinstance(sd, int) or sd not in (2, 3):
        raise DataError(f"'spatial_dims' must be 2 or 3 (an integer), got {sd!r}", path)
    if isinstance(ch, bool) or not isinstance(ch, int) or ch < 1:
        raise DataError(f"'channels' must be a positive integer, got {ch!r}", path)
    if not isinstance(meta["name"], str):
        raise DataError(f"'name' must be a string, got {meta['name']!r}", path)
    if not isinstance(meta["cases"], list):
        raise DataError(f"'cases' must be a list of case entries, got {type(meta['cases']).__name__}", path)
    try:
        ids = [str(c["id"]) for c in meta["cases"]]
        for c in meta["cases"]:
            check_case_id(c["id"], path)
            c["image"], c["labels"]  # noqa: B018 - presence check
    except (KeyError, TypeError) as e:
        raise DataError(f"malformed case entry in dataset.json (missing {e})", path) from None
    check_unique_ids(ids, path)
    for c in meta["cases"]:
        cid = c["id"]
        if not isinstance(c.get("group", ""), str):
            raise DataError(f"case {cid!r}: 'group' must be a string, got {c['group']!r}", path)
        for key in ("spacing", "origin"):
            v = c.get(key)
            if v is not None and (
                not isinstance(v, list)
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
            ):
                raise DataError(f"case {cid!r}: {key!r} must be a list of finite numbers, got {v!r}", path)
        if not isinstance(c.get("meta", {}), dict):
            raise DataError(f"case {cid!r}: 'meta' must be an object, got {c['meta']!r}", path)
        contained_path(root, c["image"], path, f"case {cid!r} image", allow_outside=allow_outside)
        if not isinstance(c["labels"], dict):
            raise DataError(f"case {cid!r}: 'labels' must map rater ids to files, got {c['labels']!r}", path)
        for rater, rel in c["labels"].items():
            contained_path(root, rel, path, f"case {cid!r} labels[{rater!r}]", allow_outside=allow_outside)
        if c.get("mask") is not None:
            if not isinstance(c["mask"], str):
                raise DataError(f"case {cid!r}: 'mask' must be a file path (string), got {c['mask']!r}", path)
            contained_path(root, c["mask"], path, f"case {cid!r} mask", allow_outside=allow_outside)
    meta["splits"] = _check_splits(meta["splits"], ids, path)
    return meta


def load_dataset(root: str | Path, *, allow_outside: bool = False) -> Dataset:
    """Open the trustseg dataset at ``root`` (files are read when a case is accessed).

    Args:
        root: Dataset root (holds ``dataset.json``).
        allow_outside: Accept case files outside ``root``: absolute paths, ``..`` or symlinks leaving the folder
            (also on inside :func:`trustseg.data.paths.outside_allowed`, e.g. the CLI's ``--allow-outside``).

    Raises:
        DataError: missing or corrupt ``dataset.json``; ``classes``/``raters`` not lists of distinct non-empty
            names; unknown ``file_ext``; a case file outside ``root`` (unless ``allow_outside``); duplicate ids,
            empty dataset, bad splits. Missing or corrupt image/label files are reported when their case is read.
    """
    return Dataset(root, allow_outside=allow_outside)
