"""The prediction folder written by :func:`trustseg.engine.predict.predict_folder` (the writing half).

* :func:`iter_inputs`: the images to predict (a folder, a list of files, or a dataset root and split).
* :class:`FolderWriter`: writes one case at a time, atomically, and keeps the index current.
* :func:`load_prediction`, :func:`read_map`: read a case back; they live in :mod:`trustseg.data.predictions`
  (the on-disk format and its index) and are re-exported here.

The folder's layout and its index ``predictions.json`` are documented once, in :mod:`trustseg.data.predictions`
(the on-disk format). ``summary.csv`` holds, per case, the predicted volume per class (voxels x voxel volume) and
each measure's mean oriented higher = more uncertain (``mean_entropy``, ``mean_one_minus_confidence``).

Every file is written atomically and ``predictions.json``/``summary.csv`` are rewritten after each case, so a
failure part-way leaves the finished cases complete and indexed. The index carries ``"expected"`` (the case ids
of the inputs) and ``"complete"``: ``false`` from the first write, ``true`` only once :meth:`FolderWriter.finish`
ran after every expected case (``trustseg evaluate`` refuses an incomplete folder unless ``--partial``).

An output folder that already exists (:meth:`FolderWriter.begin`) must be empty, or an earlier prediction folder
that is resumed (``resume``: its indexed cases are kept, the rest predicted; the same model, measures and
samples setting only) or replaced (``overwrite``: the files its index lists are removed, nothing else).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress
from torch import Tensor

from trustseg.core.atomic import atomic_path, atomic_write_csv, atomic_write_json, make_dirs
from trustseg.core.errors import ConfigError, DataError
from trustseg.core.lock import LOCK
from trustseg.core.predictive import Predictive, precomputed_measures
from trustseg.data.dataset import DATASET_JSON, load_dataset
from trustseg.data.io import NIFTI_EXTS, has_known_ext, read_image, split_ext, write_image, write_label
from trustseg.data.predictions import INDEX, SUMMARY, case_files, load_prediction, read_index, read_map
from trustseg.engine.checkpoint import remove_leftover_temps
from trustseg.engine.npy_stream import slab_slices, write_npy_slabs
from trustseg.evaluation.context import oriented_name
from trustseg.measures import MEASURES
from trustseg.measures.pixel import available_measures, compute_measures
from trustseg.measures.registry import as_uncertainty

#: Storage types of the probability file (``trustseg predict --dtype``).
PROBS_DTYPES = ("float32", "float16")

__all__ = ["PROBS_DTYPES", "FolderWriter", "InputItem", "check_out_dir", "iter_inputs", "load_prediction", "read_map"]


#: ``annotate(case_id, probs (K, *sp), seg (*sp), maps {measure: (*sp)}, samples (M, K, *sp) | None, image
#: (C, *sp), spacing) -> dict`` (see :class:`FolderWriter`).
Annotator = Callable[..., dict[str, Any]]


class InputItem:
    """One image to predict, with its geometry and the format to write its outputs in.

    Attributes:
        case_id: Output file prefix.
        source: The image file.
        image: ``(C, *spatial)`` float32.
        spacing, origin, affine: Geometry to copy onto NIfTI outputs.
        ext: The input's extension (NIfTI inputs give NIfTI outputs).
    """

    def __init__(self, case_id, source, image, spacing, origin, affine, ext):
        self.case_id, self.source, self.image = case_id, Path(source), image
        self.spacing, self.origin, self.affine, self.ext = spacing, origin, affine, ext


def iter_inputs(inputs: str | Path | Sequence[str | Path], split: str | None = None) -> list:
    """Resolve ``inputs`` into a list of zero-argument loaders, each giving an :class:`InputItem`.

    A dataset root (a folder with ``dataset.json``) gives its cases (of ``split`` if given); another folder gives
    every file in it with a known image extension, sorted by name; a file or a list gives those files.

    Raises:
        DataError: nothing to predict, an unknown extension, duplicate case names, or a broken or looping
            symbolic link with an image extension in the folder (named; it is not skipped).
        ConfigError: ``split`` given with a folder or files that are not a dataset root.
    """
    if isinstance(inputs, (str, Path)) and (Path(inputs) / "dataset.json").is_file():
        ds = load_dataset(inputs)
        ids = ds.split(split) if split else ds.ids

        def from_case(cid):
            case = ds[cid]
            src = case.meta.get("image", ds.root)
            return InputItem(cid, src, case.image, case.spacing, case.origin, case.meta.get("affine"), ds.file_ext)

        loaders = [_Loader(cid, lambda cid=cid: from_case(cid)) for cid in ids]
        if not loaders:
            raise DataError(f"no cases to predict{f' in split {split!r}' if split else ''}", Path(inputs))
        return loaders
    if split:
        raise ConfigError(
            f"--split only applies to a dataset folder (one with {DATASET_JSON}); {_shown(inputs)} is not one"
        )
    if isinstance(inputs, (str, Path)):
        root = Path(inputs)
        if root.is_dir():
            entries = sorted(p for p in root.iterdir() if not p.name.startswith(".") and has_known_ext(p))
            for p in entries:
                if p.is_symlink() and not p.exists():
                    raise DataError("broken or looping symbolic link among the inputs", p)
            files = [p for p in entries if p.is_file()]
            if not files:
                raise DataError("no image files with a known extension in this folder", root)
        elif root.is_file():
            files = [root]
        else:
            raise DataError("input not found", root)
    else:
        files = [Path(f) for f in inputs]
        if not files:
            raise DataError("no input files given")
    names = [split_ext(f)[0] for f in files]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"several inputs share the case names {dupes[:5]} (outputs would collide)")

    def from_file(path: Path) -> InputItem:
        img = read_image(path)
        stem, ext = split_ext(path)
        return InputItem(stem, path, img.array, img.spacing, img.origin, img.affine, ext)

    return [_Loader(n, lambda f=f: from_file(f)) for n, f in zip(names, files)]


class _Loader:
    """A zero-argument loader of one :class:`InputItem` that knows its case id before loading."""

    def __init__(self, case_id: str, load):
        self.case_id, self._load = case_id, load

    def __call__(self) -> InputItem:
        return self._load()


def check_out_dir(inputs: str | Path | Sequence[str | Path], out: str | Path) -> None:
    """Refuse an output folder equal to or inside the input folder or dataset root (outputs would mix with the
    inputs and be read as inputs by the next run).

    Raises:
        ConfigError: naming both folders.
    """
    if not isinstance(inputs, (str, Path)) or not Path(inputs).is_dir():
        return
    src, dst = Path(inputs).resolve(), Path(out).resolve()
    if dst == src or src in dst.parents:
        raise ConfigError(
            f"the output folder {out} is {'the' if dst == src else 'inside the'} input folder {inputs}: "
            "write the predictions elsewhere (--out)"
        )


def _shown(inputs: str | Path | Sequence[str | Path]) -> str:
    """The inputs as a message names them."""
    if isinstance(inputs, (str, Path)):
        return str(inputs)
    items = [str(f) for f in inputs]
    return ", ".join(items[:3]) + (f" (+{len(items) - 3} more)" if len(items) > 3 else "")


def loaded(loaders: list, progress: bool) -> Iterator[Any]:
    """What each of ``loaders`` (e.g. :func:`iter_inputs`) returns, called when reached, with a progress bar if
    asked."""
    if not progress:
        for load in loaders:
            yield load()
        return
    with Progress() as bar:
        task = bar.add_task("predicting", total=len(loaders))
        for load in loaders:
            yield load()
            bar.advance(task)


@dataclass(frozen=True)
class WriterJob:
    """The :func:`~trustseg.engine.predict.predict_folder` options of the same names, as every predict path (one
    process, cases over ``torchrun`` ranks, members over ranks) gives them to its folder writer.

    Example:
        >>> WriterJob(dtype="float16").options()["dtype"]
        'float16'
    """

    measures: Sequence[str] | str | None = None
    progress: bool = False
    save_samples: bool = False
    resume: bool = False
    overwrite: bool = False
    annotate: Annotator | None = None
    annotation: str | None = None
    dtype: str = "float32"

    def options(self) -> dict[str, Any]:
        """The writer's keyword options: ``save_samples``, ``annotate``, ``annotation``, ``dtype``."""
        return {
            "save_samples": self.save_samples,
            "annotate": self.annotate,
            "annotation": self.annotation,
            "dtype": self.dtype,
        }

    def writer(self, out: Path, info: dict[str, Any]) -> FolderWriter:
        """The :class:`FolderWriter` of ``out`` with these options (``info``: the run description)."""
        return FolderWriter(out, info, self.measures, **self.options())


class FolderWriter:
    """Writes one case's outputs at a time and keeps ``predictions.json`` and ``summary.csv`` up to date.

    Args:
        out: Output folder.
        info: The run's ``run.json`` contents (method, classes).
        measures: Requested measure names, or ``None`` for all available ones.
        save_samples: Write the samples of predictions with M > 1.
        annotate: A per-case hook (``trustseg predict --qc``: the quality model's prediction) called as
            ``annotate(case_id, probs, seg, maps, samples, image, spacing)`` with the arrays written; the dict it
            returns becomes the case's ``"qc"`` entry in ``predictions.json`` and columns of ``summary.csv``.
        annotation: What ``annotate`` is (the QC model's folder), recorded as ``"qc_model"`` in the index; a
            resume must use the same.
        dtype: Storage of ``<case>_probs.npy``: ``float32`` (default) or ``float16`` (half the file and the write
            buffer; absolute error ≤ 2.4e-4 for values in [0, 1]). NIfTI probabilities stay float32 (NIfTI-1 has
            no half type). The segmentation and the measures always come from the float32 probabilities.
    """

    def __init__(
        self,
        out: Path,
        info: dict[str, Any],
        measures: Sequence[str] | str | None,
        save_samples: bool = False,
        annotate: Annotator | None = None,
        annotation: str | None = None,
        dtype: str = "float32",
    ):
        if dtype not in PROBS_DTYPES:
            raise ConfigError(f"the probabilities' dtype must be one of {list(PROBS_DTYPES)} (--dtype), got {dtype!r}")
        self.dtype = dtype
        self.out = Path(out)
        self.save_samples = save_samples
        self.annotate = annotate
        self.annotation = annotation
        self.info = info
        if isinstance(measures, str):
            measures = [m.strip() for m in measures.split(",") if m.strip()]
        self.requested = None if measures is None else [MEASURES.entry(m).name for m in measures]
        self.measures: list[str] | None = None
        self.cases: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        #: What the folder does not hold although it was asked for, and why (also written to predictions.json).
        self.notes: dict[str, str] = {}
        #: The case ids the folder is to hold (``predictions.json``'s ``"expected"``).
        self.expected: list[str] = []
        self.complete = False

    def begin(self, expected: Sequence[str], resume: bool = False, overwrite: bool = False) -> set[str]:
        """Prepare the output folder and write the first (incomplete) index; return the case ids already done.

        Args:
            expected: The case ids of the inputs.
            resume: Continue an earlier prediction folder: its indexed cases whose files are all present are kept
                (and returned), the index never loses a case; the model, measures and samples setting must match.
            overwrite: Replace an earlier prediction folder: first remove the files its index lists (case files,
                ``predictions.json``, ``summary.csv``), nothing else.

        Raises:
            ConfigError: ``out`` is a file, a non-empty folder that is not a prediction folder, an earlier
                prediction folder without ``resume``/``overwrite``, both flags, or a resume whose model, measures
                or samples setting differ (named).
            DataError: the earlier index cannot be read.
        """
        if resume and overwrite:
            raise ConfigError("give either resume (--resume) or overwrite (--overwrite), not both")
        out = self.out
        if out.exists() and not out.is_dir():
            raise ConfigError(f"the output {out} is a file, not a folder")
        done: set[str] = set()
        if (out / INDEX).is_file():
            old = read_index(out)
            if not resume and not overwrite:
                raise ConfigError(
                    f"{out} holds an earlier prediction ({len(old.get('cases', []))} cases): continue it with "
                    "--resume (resume=True) or replace it with --overwrite (overwrite=True)"
                )
            remove_leftover_temps(out)
            if overwrite:
                for entry in old.get("cases", []):
                    for path in case_files(out, entry).values():
                        path.unlink(missing_ok=True)
                    for rel in entry.get("files", {}).get("previews", {}).values():
                        (out / rel).unlink(missing_ok=True)
                (out / SUMMARY).unlink(missing_ok=True)
                (out / INDEX).unlink()
            else:
                done = self._resume_from(old)
        elif out.is_dir() and any(p.name != LOCK for p in out.iterdir()):
            raise ConfigError(
                f"the output folder {out} is not empty and is not a prediction folder (no {INDEX}): "
                "choose a new or empty folder"
            )
        self.expected = list(dict.fromkeys([*(c["id"] for c in self.cases), *expected]))
        make_dirs(out)
        self._write_index()
        atomic_write_csv(out / SUMMARY, self.rows)
        return done

    def _resume_from(self, old: dict[str, Any]) -> set[str]:
        """Take over an earlier index (refusing another model, measures or samples setting); the ids done."""
        differ = []
        for key, now in (
            ("method", self.info["method"]),
            ("run", self.info.get("run_dir")),
            ("temperature", self.info.get("temperature", 1.0)),
        ):
            same = _same_run(old[key], now) if key == "run" and key in old else old.get(key) == now
            if key in old and not same:
                differ.append(f"{key}: {old[key]!r} -> {now!r}")
        old_requested = old.get("requested_measures", old.get("measures"))
        if self.requested is not None and old_requested is not None and sorted(self.requested) != sorted(old_requested):
            differ.append(f"measures: {old_requested} -> {self.requested}")
        elif self.requested is None and old.get("requested_measures", None) is not None:
            differ.append(f"measures: {old['requested_measures']} -> all available")
        if old.get("qc_model") != self.annotation:
            differ.append(f"qc model: {old.get('qc_model')!r} -> {self.annotation!r}")
        if old.get("probs_dtype", "float32") != self.dtype:
            differ.append(f"dtype: {old.get('probs_dtype', 'float32')} -> {self.dtype}")
        if "samples" in old and bool(old["samples"]) != self.save_samples:
            differ.append(f"samples: {bool(old['samples'])} -> {self.save_samples}")
        if differ:
            raise ConfigError(
                f"cannot resume {self.out / INDEX}: it was written with other settings ({'; '.join(differ)}); "
                "use the same ones, or --overwrite"
            )
        self.measures = list(old.get("measures") or []) or None
        self.notes = dict(old.get("notes", {}))
        self.cases = list(old.get("cases", []))
        rows = {}
        if (self.out / SUMMARY).is_file():
            with open(self.out / SUMMARY, newline="") as fh:
                rows = {r.get("case"): dict(r) for r in csv.DictReader(fh)}
        self.rows = [rows[c["id"]] for c in self.cases if c["id"] in rows]
        return {c["id"] for c in self.cases if all(p.is_file() for p in case_files(self.out, c).values())}

    def track(self, loaders: list, progress: bool) -> Iterator[Any]:
        """Iterate over the loaded items, with a progress bar if asked (:func:`loaded`)."""
        return loaded(loaders, progress)

    def _measure_names(self, pred: Predictive) -> list[str]:
        avail = list(dict.fromkeys([*available_measures(pred), *precomputed_measures(pred)]))
        if self.requested is None:
            return avail
        missing = [m for m in self.requested if m not in avail]
        if missing:
            raise ConfigError(
                f"measures {missing} are not available for method {self.info['method']!r}; available: {avail}"
            )
        return list(self.requested)

    def write(self, item: InputItem, pred: Predictive) -> None:
        """Write the files of one case and refresh the index.

        Raises:
            DataError: the prediction holds NaN or infinite probabilities (nothing of the case is written).
        """
        if not _all_finite(pred.probs):
            raise DataError(
                f"case {item.case_id!r}: the model {self.info.get('run_dir') or self.info['method']!r} predicted NaN "
                "or infinite probabilities (diverged weights?); nothing was written for it",
                item.source,
            )
        if self.measures is None:
            self.measures = self._measure_names(pred)
        spatial = tuple(pred.probs.shape[3:])
        sd = len(spatial)
        nifti = item.ext in NIFTI_EXTS
        # Full-volume arrays only where a consumer needs one (NIfTI files, 2D previews, the annotation hook); else
        # every file is written slab by slab from the prediction (temporaries of about SLAB_VOXELS values).
        keep = self.annotate is not None
        whole = nifti or sd < 3 or keep
        geo = {"spacing": tuple(item.spacing), "origin": tuple(item.origin), "affine": item.affine}
        files: dict[str, Any] = {"measures": {}, "previews": {}}
        cid = item.case_id
        seg = _argmax(pred)  # from the float32 p̄, as uint8 when K <= 256
        probs: np.ndarray | None = None
        if whole:
            probs = _mean_probs(pred)
            if nifti:
                files["probs"] = write_image(self.out / f"{cid}_probs.nii.gz", probs, spatial_dims=sd, **geo).name
            else:
                files["probs"] = _save_npy(self.out / f"{cid}_probs.npy", probs.astype(self.dtype, copy=False)).name
        else:
            k = pred.num_classes
            pieces = (_mean_slab(pred, sl, c) for c in range(k) for sl in slab_slices(spatial))
            files["probs"] = write_npy_slabs(self.out / f"{cid}_probs.npy", (k, *spatial), self.dtype, pieces).name
        if nifti:
            files["seg"] = write_label(self.out / f"{cid}_seg.nii.gz", seg, **geo).name
        else:
            files["seg"] = write_label(self.out / f"{cid}_seg{'.png' if sd == 2 else '.npy'}", seg).name
        maps: dict[str, np.ndarray] = {}
        means: dict[str, float] = {}
        for name in self.measures:
            if not whole:
                total = [0.0]
                pieces = (_summed(_measure_slab(pred, name, sl), total) for sl in slab_slices(spatial))
                path = write_npy_slabs(self.out / f"{cid}_{name}.npy", spatial, np.float32, pieces)
                files["measures"][name] = path.name
                means[name] = total[0] / max(1, math.prod(spatial))
                continue
            m = _measure_map(pred, name)
            means[name] = float(m.mean(dtype=np.float64))
            if nifti:
                files["measures"][name] = write_image(self.out / f"{cid}_{name}.nii.gz", m, spatial_dims=sd, **geo).name
            else:
                files["measures"][name] = _save_npy(self.out / f"{cid}_{name}.npy", m).name
                if sd == 2:
                    preview = write_image(self.out / f"{cid}_{name}.png", _colour(m), spatial_dims=2)
                    files["previews"][name] = preview.name
            if keep:
                maps[name] = m
            del m
        if self.save_samples and pred.num_samples > 1:
            shape = (pred.num_samples, pred.num_classes, *spatial)
            pieces = (
                pred.probs[m, 0, c, sl].numpy().astype(np.float16)
                for m in range(shape[0])
                for c in range(shape[1])
                for sl in slab_slices(spatial)
            )
            files["samples"] = write_npy_slabs(self.out / f"{cid}_samples.npy", shape, np.float16, pieces).name
        elif self.save_samples:
            self.notes["samples"] = (
                f"not written: the prediction has one sample (M = 1, method {self.info['method']!r}); the sample-based "
                "metrics (GED, Hungarian IoU) need a method with several (mc-dropout, ensemble, tta, layer-ensemble)"
            )
        entry: dict[str, Any] = {
            "id": cid,
            "source": str(item.source.absolute()),
            "shape": list(seg.shape),
            "files": files,
        }
        qc = None
        if self.annotate is not None:
            samples_np = pred.probs[:, 0].numpy().astype(np.float32) if pred.num_samples > 1 else None
            assert probs is not None  # whole: the annotation hook gets the full arrays
            qc = self.annotate(cid, probs, seg, maps, samples_np, np.asarray(item.image), tuple(item.spacing))
            entry["qc"] = qc
        at = next((i for i, c in enumerate(self.cases) if c["id"] == cid), None)  # resumed with files missing
        if at is None:
            self.cases.append(entry)
        else:
            self.cases[at] = entry
        voxel = float(np.prod(item.spacing))
        row: dict[str, Any] = {"case": cid}
        for k, cls in enumerate(self.info["classes"]):
            row[f"volume_{cls}"] = float((seg == k).sum()) * voxel
        # image-level means in the one orientation of the results: higher = more uncertain, certainty measures
        # named one_minus_<measure> (the map files keep each measure's own values)
        row.update({f"mean_{oriented_name(n)}": float(as_uncertainty(n, v)) for n, v in means.items()})
        row.update(qc or {})
        self.rows = [r for r in self.rows if r.get("case") != cid] + [row]
        self._written()

    def _written(self) -> None:
        """Record the state after a case was written: the index and ``summary.csv`` (a rank of a sharded predict
        writes its own part instead: :class:`trustseg.engine.sharded_predict.ShardWriter`)."""
        self._write_index()
        atomic_write_csv(self.out / SUMMARY, self.rows)

    def _write_index(self) -> None:
        atomic_write_json(
            self.out / "predictions.json",
            {
                "method": self.info["method"],
                "run": self.info.get("run_dir"),
                "classes": self.info["classes"],
                "measures": self.measures or [],
                "temperature": self.info.get("temperature", 1.0),
                "requested_measures": self.requested,
                "samples": self.save_samples,
                "probs_dtype": self.dtype,
                "qc_model": self.annotation,
                "notes": self.notes,
                "complete": self.complete,
                "expected": self.expected,
                "cases": self.cases,
            },
        )

    def finish(self) -> Path:
        """Write the final index, ``"complete": true`` when every expected case is indexed, and return the
        folder."""
        make_dirs(self.out)
        have = {c["id"] for c in self.cases}
        self.complete = all(cid in have for cid in self.expected)
        self._write_index()
        return self.out


def _same_run(a: Any, b: Any) -> bool:
    """Whether two ``run`` entries name the same run folder (spelled either way)."""
    if isinstance(a, str) and isinstance(b, str):
        return Path(a).resolve() == Path(b).resolve()
    return a == b


def _all_finite(probs: Tensor) -> bool:
    """Whether every value of ``probs`` ``(M, B, K, *spatial)`` is finite (checked slab by slab)."""
    spatial = tuple(probs.shape[3:])
    rest = (slice(None),) * max(0, len(spatial) - 1)
    return all(bool(torch.isfinite(probs[:, :, :, sl, *rest]).all()) for sl in slab_slices(spatial))


def _mean_slab(pred: Predictive, sl: slice, k: int | None = None) -> np.ndarray:
    """p̄ of the first image on the slab ``sl`` of the first spatial axis: ``(K, slab, *rest)`` float32, or the
    class ``k`` only (``(slab, *rest)``); no copy for M = 1 (the same values as ``pred.mean()``)."""
    rest = (slice(None),) * max(0, pred.probs.dim() - 4)
    cls: Any = slice(None) if k is None else k
    part = pred.probs[:, 0, cls, sl, *rest]
    return (part[0] if pred.num_samples == 1 else part.mean(0)).numpy().astype(np.float32, copy=False)


def _mean_probs(pred: Predictive) -> np.ndarray:
    """p̄ of the first image ``(K, *spatial)`` float32 (no copy for M = 1)."""
    mean = pred.probs[0] if pred.num_samples == 1 else pred.mean()
    return mean[0].numpy().astype(np.float32, copy=False)


def _argmax(pred: Predictive) -> np.ndarray:
    """``argmax`` over the classes of p̄ of the first image, slab by slab, as uint8 (uint16 for K > 256)."""
    spatial = tuple(pred.probs.shape[3:])
    seg = np.empty(spatial, dtype=np.uint8 if pred.num_classes <= 256 else np.uint16)
    if seg.ndim == 0:
        return _mean_probs(pred).argmax(0).astype(seg.dtype)
    for sl in slab_slices(spatial):
        seg[sl] = _mean_slab(pred, sl).argmax(0)
    return seg


def _measure_slab(pred: Predictive, name: str, sl: slice) -> np.ndarray:
    """One voxel-wise measure of the first image on the slab ``sl`` of the first spatial axis, float32 (a
    precomputed map, :func:`~trustseg.core.predictive.precomputed_measures`, is taken as it is)."""
    rest = (slice(None),) * max(0, pred.probs.dim() - 4)
    given = precomputed_measures(pred).get(name)
    if given is not None:  # streamed by the predictor (or summed over ranks) over members it did not keep
        return given[0, 0][(sl, *rest)].numpy().astype(np.float32)
    part = pred.map(lambda t: t[..., sl, *rest])
    return compute_measures(part, [name])[name][0].numpy().astype(np.float32, copy=False)


def _measure_map(pred: Predictive, name: str) -> np.ndarray:
    """One voxel-wise measure of the first image ``(*spatial)`` float32, computed slab by slab along the first
    spatial axis (its class- and sample-sized temporaries stay slab-sized)."""
    given = precomputed_measures(pred).get(name)
    if given is not None:  # streamed by the predictor over members it did not keep
        return given[0, 0].numpy().astype(np.float32)
    spatial = tuple(pred.probs.shape[3:])
    if not spatial:
        return compute_measures(pred, [name])[name][0].numpy().astype(np.float32)
    out = np.empty(spatial, dtype=np.float32)
    for sl in slab_slices(spatial):
        out[sl] = _measure_slab(pred, name, sl)
    return out


def _summed(slab: np.ndarray, total: list[float]) -> np.ndarray:
    """``slab``, adding its float64 sum to ``total[0]`` (the running mean of a map written slab by slab)."""
    total[0] += float(slab.sum(dtype=np.float64))
    return slab


def _save_npy(path: Path, array: np.ndarray) -> Path:
    """``np.save`` atomically, the array exactly as given."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    return path


def _colour(m: np.ndarray) -> np.ndarray:
    """A viridis preview ``(3, H, W)`` uint8 of a map, min-max scaled."""
    from matplotlib import colormaps  # optional plotting dependency, loaded only for previews

    lo, hi = float(m.min()), float(m.max())
    scaled = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    rgb = colormaps["viridis"](scaled)[..., :3]
    return np.ascontiguousarray(np.moveaxis((rgb * 255).round().astype(np.uint8), -1, 0))
