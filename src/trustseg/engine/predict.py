"""Prediction with a trained run: load its members, predict images, write maps for a folder of inputs.

* :func:`load_run`: the method and its trained member networks (``best.pt`` of each member, else ``last.pt``),
  loaded with ``weights_only=True``; the post-hoc temperature of ``run.json`` is applied.
* :func:`predict_image`: one image ``(C, *spatial)`` -> :class:`Predictive` with ``B = 1``. 2D images and
  volumes no larger than the training patch are predicted whole (zero-padded to the U-Net's size multiple and
  cropped back); larger 3D volumes by sliding window (:mod:`trustseg.engine.sliding_window`).
* :func:`predict_folder`: predictions and uncertainty maps for many images, written in the input's format
  (layout below).

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
    summary.csv                   case, predicted volume per class (voxels x voxel volume), mean of each measure

Every file is written atomically and ``predictions.json``/``summary.csv`` are rewritten after each case, so a
failure part-way leaves the finished cases complete and indexed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from trustseg.core.errors import DataError
from trustseg.core.predictive import Predictive
from trustseg.engine import checkpoint as ck
from trustseg.engine.config import load_run_config
from trustseg.engine.loader import pad_batch_tensor
from trustseg.engine.sliding_window import sliding_window_predict
from trustseg.methods.base import Method, build_method


def _padded(method: Method, models: Sequence[nn.Module], x: Tensor, multiple: int) -> Predictive:
    """``method.predict`` on ``x`` zero-padded to a multiple of ``multiple``, cropped back."""
    xp, spatial = pad_batch_tensor(x, multiple)
    pred = method.predict(models, xp)
    if tuple(xp.shape[2:]) == spatial:
        return pred
    crop = tuple(slice(0, s) for s in spatial)
    return pred.map(lambda t: t[(..., *crop)])


def predict_tensor(
    method: Method,
    models: Sequence[nn.Module],
    x: Tensor,
    patch_size: Sequence[int] | None = None,
    multiple: int = 1,
    overlap: float = 0.5,
    blend: str = "gaussian",
) -> Predictive:
    """Predict a batch ``x`` ``(B, C, *spatial)`` (models already in eval mode, on ``x``'s device).

    Args:
        method: The method (its ``predict`` turns the models' outputs into a Predictive).
        models: Trained member networks.
        x: ``(B, C, *spatial)`` images.
        patch_size: Training patch size; 3D inputs larger than it along any axis go through a sliding window.
        multiple: Pad whole-image inputs (and windows) to a multiple of this.
        overlap: Sliding-window overlap.
        blend: Sliding-window blending (``gaussian`` or ``constant``).

    Returns:
        Predictive ``(M, B, K, *spatial)`` on ``x``'s device.
    """
    spatial = tuple(x.shape[2:])
    if patch_size is not None and len(spatial) == 3 and any(s > p for s, p in zip(spatial, patch_size)):
        return sliding_window_predict(
            lambda w: _padded(method, models, w, multiple), x, patch_size, overlap=overlap, blend=blend
        )
    return _padded(method, models, x, multiple)


def load_run(
    run_dir: str | Path, device: str | torch.device = "cpu", which: str = "best"
) -> tuple[Method, list[nn.Module], dict[str, Any]]:
    """Load a trained run.

    Args:
        run_dir: Run folder (``config.yaml``, ``run.json``, ``member_<m>/``).
        device: Where to put the models.
        which: ``best`` (``best.pt``, falling back to ``last.pt``) or ``last``.

    Returns:
        ``(method, models, info)``: the method (temperature set from ``run.json``), one eval-mode network per
        member, and the ``run.json`` contents plus ``checkpoints`` (the files loaded) and ``run_dir``.

    Raises:
        DataError: not a run folder, or a member without a checkpoint.
    """
    from trustseg.engine.train import CONFIG, read_run_json

    run_dir = Path(run_dir)
    info = read_run_json(run_dir)
    cfg = load_run_config(run_dir / CONFIG)
    params = dict(info["params"])
    if info["method"] == "mc-dropout" and "where" not in params:
        # trained before the `where` option existed: dropout sat where net.dropout_where put it (decoder), not
        # in the later default "last"; predict with the placement the weights were trained with
        params["where"] = None
    method = build_method(
        info["method"], cfg.net, info["spatial_dims"], info["in_channels"], info["num_classes"], params
    )
    method.temperature = float(info.get("temperature") or 1.0)
    models, files = [], []
    for m in range(int(info["members"])):
        mdir = ck.member_dir(run_dir, m)
        order = [ck.BEST, ck.LAST] if which == "best" else [ck.LAST]
        path = next((mdir / name for name in order if (mdir / name).is_file()), None)
        if path is None:
            raise DataError(f"member {m} has no checkpoint (is training finished?)", mdir)
        state = ck.load_checkpoint(path)
        model = method.build_model(m)
        model.load_state_dict(state["model"])
        models.append(model.to(device).eval())
        files.append(str(path))
    info = {**info, "checkpoints": files, "run_dir": str(run_dir)}
    return method, models, info


@torch.no_grad()
def predict_image(
    method: Method,
    models: Sequence[nn.Module],
    image: np.ndarray | Tensor,
    patch_size: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    multiple: int = 1,
    overlap: float = 0.5,
) -> Predictive:
    """Predict one image.

    Args:
        method: The trained run's method.
        models: Its member networks (eval mode).
        image: ``(C, *spatial)`` intensities.
        patch_size: Training patch size (``run.json``'s ``patch_size``): 3D volumes larger than it are predicted
            by sliding window; ``None`` predicts whole.
        device: Device of the computation (default: that of the first model's parameters).
        multiple: The U-Net's size multiple (``run.json``'s ``pad_multiple``).
        overlap: Sliding-window overlap.

    Returns:
        Predictive with ``B = 1``, on the CPU, float32.
    """
    if device is None:
        device = next(iter(models[0].parameters())).device
    x = torch.as_tensor(np.asarray(image, dtype=np.float32) if not isinstance(image, Tensor) else image).float()
    if x.dim() < 3:
        raise DataError(f"an image must be (C, *spatial), got shape {tuple(x.shape)}")
    pred = predict_tensor(method, models, x[None].to(device), patch_size, multiple, overlap)
    return pred.map(lambda t: t.float().cpu())


def predict_folder(
    run_dir: str | Path,
    inputs: str | Path | Sequence[str | Path],
    out: str | Path,
    measures: Sequence[str] | str | None = None,
    progress: bool = True,
    split: str | None = None,
    device: str = "auto",
    overlap: float = 0.5,
    save_samples: bool = False,
) -> Path:
    """Predict every input image with a trained run and write probabilities, segmentations and uncertainty maps.

    Args:
        run_dir: Trained run folder.
        inputs: A folder of images, a list of image files, or a trustseg dataset root (``dataset.json``).
        out: Output folder (created).
        measures: Uncertainty measures to write (names of ``trustseg.measures.MEASURES``, list or comma string);
            ``None`` = every measure available for the method.
        progress: Show a progress bar.
        split: With a dataset root: predict only this split (``train``/``val``/``test``); default all cases.
        device: Computation device (``auto``: CUDA when available, else CPU).
        overlap: Sliding-window overlap for large volumes.
        save_samples: Also write ``<case>_samples.npy``, the M sample probabilities ``(M, K, *spatial)`` in
            float16, when the method has M > 1 (needed by the sample-based metrics GED and Hungarian IoU).

    Returns:
        ``out``, holding per-case files, ``predictions.json`` and ``summary.csv``
        (see the module docstring).
    """
    from trustseg.engine.train import resolve_device

    device = resolve_device(device)
    method, models, info = load_run(run_dir, device=device)
    items = iter_inputs(inputs, split)
    writer = FolderWriter(Path(out), info, measures, save_samples=save_samples)
    patch = info.get("patch_size")
    for item in writer.track(items, progress):
        if item.image.shape[0] != info["in_channels"]:
            raise DataError(
                f"image has {item.image.shape[0]} channels, the run was trained on {info['in_channels']}", item.source
            )
        if item.image.ndim - 1 != info["spatial_dims"]:
            raise DataError(
                f"image is {item.image.ndim - 1}D, the run was trained on {info['spatial_dims']}D images", item.source
            )
        pred = predict_image(method, models, item.image, patch, device, int(info.get("pad_multiple", 1)), overlap)
        writer.write(item, pred)
    return writer.finish()


# ------------------------------------------------------------------------------------------ folder input/output
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
        DataError: nothing to predict, an unknown extension, or duplicate case names.
    """
    from trustseg.data.io import has_known_ext, read_image, split_ext

    if isinstance(inputs, (str, Path)) and (Path(inputs) / "dataset.json").is_file():
        from trustseg.data.dataset import load_dataset

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
    if isinstance(inputs, (str, Path)):
        root = Path(inputs)
        if root.is_dir():
            files = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith(".") and has_known_ext(p))
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
        from trustseg.measures import MEASURES

        self.out = Path(out)
        self.save_samples = save_samples
        self.info = info
        if isinstance(measures, str):
            measures = [m.strip() for m in measures.split(",") if m.strip()]
        self.requested = None if measures is None else [MEASURES.entry(m).name for m in measures]
        self.measures: list[str] | None = None
        self.cases: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []

    def track(self, loaders: list, progress: bool):
        """Iterate over the loaded items, with a progress bar if asked."""
        if not progress:
            for load in loaders:
                yield load()
            return
        from rich.progress import Progress

        with Progress() as bar:
            task = bar.add_task("predicting", total=len(loaders))
            for load in loaders:
                yield load()
                bar.advance(task)

    def _measure_names(self, pred: Predictive) -> list[str]:
        from trustseg.core.errors import ConfigError
        from trustseg.measures.pixel import available_measures

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
        """Write the files of one case and refresh the index."""
        from trustseg.core.atomic import atomic_write_csv
        from trustseg.data.io import NIFTI_EXTS, write_image, write_label
        from trustseg.measures.pixel import compute_measures

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
        self.cases.append({"id": cid, "source": str(item.source), "shape": list(seg.shape), "files": files})
        voxel = float(np.prod(item.spacing))
        row: dict[str, Any] = {"case": cid}
        for k, cls in enumerate(self.info["classes"]):
            row[f"volume_{cls}"] = float((seg == k).sum()) * voxel
        row.update({f"mean_{n}": float(m.mean()) for n, m in maps.items()})
        self.rows.append(row)
        self._write_index()
        atomic_write_csv(self.out / "summary.csv", self.rows)

    def _write_index(self) -> None:
        from trustseg.core.atomic import atomic_write_json

        atomic_write_json(
            self.out / "predictions.json",
            {
                "method": self.info["method"],
                "run": self.info.get("run_dir"),
                "classes": self.info["classes"],
                "measures": self.measures or [],
                "temperature": self.info.get("temperature", 1.0),
                "cases": self.cases,
            },
        )

    def finish(self) -> Path:
        """Write the final index (also when no case was written) and return the folder."""
        self.out.mkdir(parents=True, exist_ok=True)
        self._write_index()
        return self.out


def read_map(path: str | Path) -> np.ndarray:
    """Read one map written by :class:`FolderWriter` (``.npy``, or NIfTI read as ``(C, *spatial)``)."""
    from trustseg.data.io import read_image

    path = Path(path)
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read map: {e}", path) from None
    return read_image(path).array


def load_prediction(pred_dir: str | Path, case_id: str) -> dict[str, Any]:
    """One case of a prediction folder, as arrays.

    Returns:
        ``{"probs": (K, *spatial) float32 or None (segmentation only), "seg": (*spatial) int64,
        "maps": {measure: (*spatial) float32}, "samples": (M, K, *spatial) float32 or None}``.
    """
    from trustseg.data.io import read_label

    pred_dir = Path(pred_dir)
    index = json.loads((pred_dir / "predictions.json").read_text())
    entry = next((c for c in index["cases"] if c["id"] == case_id), None)
    if entry is None:
        raise DataError(f"case {case_id!r} is not in this prediction folder", pred_dir / "predictions.json")
    files = entry["files"]
    maps = {}
    for name, fname in files.get("measures", {}).items():
        m = read_map(pred_dir / fname)
        maps[name] = (m[0] if m.ndim == len(entry["shape"]) + 1 else m).astype(np.float32)
    samples = files.get("samples")
    return {
        "probs": read_map(pred_dir / files["probs"]).astype(np.float32) if "probs" in files else None,
        "seg": read_label(pred_dir / files["seg"])[0].astype(np.int64),
        "maps": maps,
        "samples": None if samples is None else read_map(pred_dir / samples).astype(np.float32),
    }


def _save_npy(path: Path, array: np.ndarray) -> Path:
    """``np.save`` atomically, the array exactly as given."""
    from trustseg.core.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array, allow_pickle=False)
    return path


def _colour(m: np.ndarray) -> np.ndarray:
    """A viridis preview ``(3, H, W)`` uint8 of a map, min-max scaled."""
    from matplotlib import colormaps

    lo, hi = float(m.min()), float(m.max())
    scaled = (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)
    rgb = colormaps["viridis"](scaled)[..., :3]
    return np.ascontiguousarray(np.moveaxis((rgb * 255).round().astype(np.uint8), -1, 0))
