"""The prediction folder written by :func:`trustseg.engine.predict.predict_folder` (the writing half).

* :func:`iter_inputs`: the images to predict (a folder, a list of files, or a dataset root and split).
* :class:`FolderWriter`: writes one case at a time, atomically, and keeps the index current.
* :func:`load_prediction`, :func:`read_map`: read a case back; they live in :mod:`trustseg.data.predictions`
  (the on-disk format and its index) and are re-exported here.

Output folder of :func:`predict_folder`::

    NIfTI input (same affine, spacing and origin as the input):
        <case>_probs.nii.gz       K channels (float32), the predictive mean p̄
        <case>_seg.nii.gz         argmax of p̄ (uint8 class indices)
        <case>_<measure>.nii.gz   one per measure (float32)
    any other input (PNG, TIFF, JPEG, NumPy):
        <case>_seg.png            class indices (2D; .npy for volumes)
        <case>_probs.npy          (K, *spatial) float32
        <case>_<measure>.npy      (*spatial) float32, plus <case>_<measure>.png, a colour preview (2D only)
    predictions.json              index: method, classes, measures, and per case its source and files
    summary.csv                   case, predicted volume per class (voxels x voxel volume), and each measure's
                                  mean oriented higher = more uncertain (``mean_entropy``,
                                  ``mean_one_minus_confidence``)

Every file is written atomically and ``predictions.json``/``summary.csv`` are rewritten after each case, so a
failure part-way leaves the finished cases complete and indexed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress

from trustseg.core.atomic import atomic_path, atomic_write_csv, atomic_write_json
from trustseg.core.errors import ConfigError, DataError
from trustseg.core.predictive import Predictive
from trustseg.data.dataset import DATASET_JSON, load_dataset
from trustseg.data.io import NIFTI_EXTS, has_known_ext, read_image, split_ext, write_image, write_label
from trustseg.data.predictions import load_prediction, read_map
from trustseg.evaluation.context import oriented_name
from trustseg.measures import MEASURES
from trustseg.measures.pixel import available_measures, compute_measures
from trustseg.measures.registry import as_uncertainty

__all__ = ["FolderWriter", "InputItem", "iter_inputs", "load_prediction", "read_map"]


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

        loaders = [lambda cid=cid: from_case(cid) for cid in ids]
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

    return [lambda f=f: from_file(f) for f in files]


def _shown(inputs: str | Path | Sequence[str | Path]) -> str:
    """The inputs as a message names them."""
    if isinstance(inputs, (str, Path)):
        return str(inputs)
    items = [str(f) for f in inputs]
    return ", ".join(items[:3]) + (f" (+{len(items) - 3} more)" if len(items) > 3 else "")


class FolderWriter:
    """Writes one case's outputs at a time and keeps ``predictions.json`` and ``summary.csv`` up to date.

    Args:
        out: Output folder.
        info: The run's ``run.json`` contents (method, classes).
        measures: Requested measure names, or ``None`` for all available ones.
    """

    def __init__(
        self, out: Path, info: dict[str, Any], measures: Sequence[str] | str | None, save_samples: bool = False
    ):
        self.out = Path(out)
        self.save_samples = save_samples
        self.info = info
        if isinstance(measures, str):
            measures = [m.strip() for m in measures.split(",") if m.strip()]
        self.requested = None if measures is None else [MEASURES.entry(m).name for m in measures]
        self.measures: list[str] | None = None
        self.cases: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        #: What the folder does not hold although it was asked for, and why (also written to predictions.json).
        self.notes: dict[str, str] = {}

    def track(self, loaders: list, progress: bool):
        """Iterate over the loaded items, with a progress bar if asked."""
        if not progress:
            for load in loaders:
                yield load()
            return
        with Progress() as bar:
            task = bar.add_task("predicting", total=len(loaders))
            for load in loaders:
                yield load()
                bar.advance(task)

    def _measure_names(self, pred: Predictive) -> list[str]:
        avail = available_measures(pred)
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
        if not bool(torch.isfinite(pred.probs).all()):
            raise DataError(
                f"case {item.case_id!r}: the model {self.info.get('run_dir') or self.info['method']!r} predicted NaN "
                "or infinite probabilities (diverged weights?); nothing was written for it",
                item.source,
            )
        if self.measures is None:
            self.measures = self._measure_names(pred)
        maps = {k: v[0].numpy().astype(np.float32) for k, v in compute_measures(pred, self.measures).items()}
        probs = pred.mean()[0].numpy().astype(np.float32)
        seg = probs.argmax(0).astype(np.int64)
        sd = seg.ndim
        nifti = item.ext in NIFTI_EXTS
        geo = {"spacing": tuple(item.spacing), "origin": tuple(item.origin), "affine": item.affine}
        files: dict[str, Any] = {"measures": {}, "previews": {}}
        cid = item.case_id
        if nifti:
            files["probs"] = write_image(self.out / f"{cid}_probs.nii.gz", probs, spatial_dims=sd, **geo).name
            files["seg"] = write_label(self.out / f"{cid}_seg.nii.gz", seg, **geo).name
            for name, m in maps.items():
                path = write_image(self.out / f"{cid}_{name}.nii.gz", m, spatial_dims=sd, **geo)
                files["measures"][name] = path.name
        else:
            seg_ext = ".png" if sd == 2 else ".npy"
            files["probs"] = _save_npy(self.out / f"{cid}_probs.npy", probs).name
            files["seg"] = write_label(self.out / f"{cid}_seg{seg_ext}", seg).name
            for name, m in maps.items():
                files["measures"][name] = _save_npy(self.out / f"{cid}_{name}.npy", m).name
                if sd == 2:
                    preview = write_image(self.out / f"{cid}_{name}.png", _colour(m), spatial_dims=2)
                    files["previews"][name] = preview.name
        if self.save_samples and pred.num_samples > 1:
            samples = pred.probs[:, 0].numpy().astype(np.float16)
            files["samples"] = _save_npy(self.out / f"{cid}_samples.npy", samples).name
        elif self.save_samples:
            self.notes["samples"] = (
                f"not written: the prediction has one sample (M = 1, method {self.info['method']!r}); the sample-based "
                "metrics (GED, Hungarian IoU) need a method with several (mc-dropout, ensemble, tta, layer-ensemble)"
            )
        self.cases.append({"id": cid, "source": str(item.source), "shape": list(seg.shape), "files": files})
        voxel = float(np.prod(item.spacing))
        row: dict[str, Any] = {"case": cid}
        for k, cls in enumerate(self.info["classes"]):
            row[f"volume_{cls}"] = float((seg == k).sum()) * voxel
        # image-level means in the one orientation of the results: higher = more uncertain, certainty measures
        # named one_minus_<measure> (the map files keep each measure's own values)
        row.update({f"mean_{oriented_name(n)}": float(as_uncertainty(n, float(m.mean()))) for n, m in maps.items()})
        self.rows.append(row)
        self._write_index()
        atomic_write_csv(self.out / "summary.csv", self.rows)

    def _write_index(self) -> None:
        atomic_write_json(
            self.out / "predictions.json",
            {
                "method": self.info["method"],
                "run": self.info.get("run_dir"),
                "classes": self.info["classes"],
                "measures": self.measures or [],
                "temperature": self.info.get("temperature", 1.0),
                "notes": self.notes,
                "cases": self.cases,
            },
        )

    def finish(self) -> Path:
        """Write the final index (also when no case was written) and return the folder."""
        self.out.mkdir(parents=True, exist_ok=True)
        self._write_index()
        return self.out


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
