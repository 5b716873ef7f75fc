"""Prediction with a trained run: load its members, predict images, write maps for a folder of inputs.

* :func:`load_run`: the method and its trained member networks (``best.pt`` of each member, else ``last.pt``),
  loaded with ``weights_only=True``; the post-hoc temperature of ``run.json`` is applied.
* :func:`predict_image`: one image ``(C, *spatial)`` -> :class:`Predictive` with ``B = 1``. 2D images and
  volumes no larger than the training patch are predicted whole (zero-padded to the U-Net's size multiple and
  cropped back); larger 3D volumes by sliding window (:mod:`trustseg.engine.sliding_window`).
* :func:`predict_folder`: predictions and uncertainty maps for many images, written in the input's format
  (layout: :mod:`trustseg.engine.prediction_folder`).

The output folder's layout, and reading it back (:func:`load_prediction`), are in
:mod:`trustseg.engine.prediction_folder`.
"""

from __future__ import annotations

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
from trustseg.engine.prediction_folder import FolderWriter, iter_inputs, load_prediction, read_map
from trustseg.engine.sliding_window import sliding_window_predict
from trustseg.methods.base import Method, build_method

__all__ = ["load_prediction", "load_run", "predict_folder", "predict_image", "predict_tensor", "read_map"]


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
