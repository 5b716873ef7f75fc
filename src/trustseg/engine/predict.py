"""Prediction of a folder of images with any :class:`~trustseg.inference.predictor.Predictor`.

* :func:`predict_folder`: predictions and uncertainty maps for many images, written in the input's format
  (layout: :mod:`trustseg.engine.prediction_folder`). The model is a predictor, or a spec
  (``run:RUN_DIR``, or a run folder) loaded with :func:`trustseg.inference.predictor.load_predictor`.
* :func:`predict_image`: one image ``(C, *spatial)`` with a method and its networks -> :class:`Predictive`
  (``B = 1``), through the one inference function :func:`trustseg.inference.tensor.predict_tensor`.

Loading a trained run (:func:`load_run`) and predicting batches (:func:`predict_tensor`) live in
:mod:`trustseg.inference`; they are re-exported here for the Python API of earlier versions.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from trustseg.core.errors import ConfigError, DataError
from trustseg.core.lock import exclusive
from trustseg.core.predictive import Predictive
from trustseg.engine.calibrate import apply_temperature
from trustseg.engine.case_prediction import predict_case
from trustseg.engine.distributed import env_info, session
from trustseg.engine.members_over_ranks import check_members_sharding, predict_members_sharded
from trustseg.engine.prediction_folder import (
    Annotator,
    WriterJob,
    check_out_dir,
    iter_inputs,
    load_prediction,
    read_map,
)
from trustseg.engine.sharded_predict import predict_sharded
from trustseg.inference.predictor import Predictor, load_predictor
from trustseg.inference.run_predictor import load_run
from trustseg.inference.tensor import predict_tensor
from trustseg.methods.base import Method

#: ``trustseg predict --shard``: what the ``torchrun`` ranks share -> the function that predicts a folder so.
SHARDINGS: dict[str, Callable[..., Path]] = {"cases": predict_sharded, "members": predict_members_sharded}

__all__ = ["SHARDINGS", "load_prediction", "load_run", "predict_folder", "predict_image", "predict_tensor", "read_map"]


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
    """Predict one image with a method and its networks.

    Args:
        method: The trained run's method.
        models: Its member networks (eval mode).
        image: ``(C, *spatial)`` intensities, as the network takes them.
        patch_size: Training patch size (``run.json``'s ``patch_size``): 3D volumes larger than it are predicted
            by sliding window; ``None`` predicts whole.
        device: Device of the computation (default: that of the first model's parameters).
        multiple: The network's size multiple (``run.json``'s ``pad_multiple``).
        overlap: Sliding-window overlap.

    Returns:
        Predictive with ``B = 1``, on the CPU, float32.

    Raises:
        DataError: an image that is not ``(C, *spatial)`` or holds NaN/Inf values.
    """
    if device is None:
        device = next(iter(models[0].parameters())).device
    x = torch.as_tensor(np.asarray(image, dtype=np.float32) if not isinstance(image, Tensor) else image).float()
    if x.dim() < 3:
        raise DataError(f"an image must be (C, *spatial), got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise DataError("image contains NaN or infinite values")
    pred = predict_tensor(method, models, x[None].to(device), patch_size, multiple, overlap)
    return pred.map(lambda t: t.float().cpu())


def predict_folder(
    model: str | Path | Predictor,
    inputs: str | Path | Sequence[str | Path],
    out: str | Path,
    measures: Sequence[str] | str | None = None,
    progress: bool = True,
    split: str | None = None,
    device: str = "auto",
    overlap: float = 0.5,
    save_samples: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    annotate: Annotator | None = None,
    annotation: str | None = None,
    dtype: str = "float32",
    temperature: str | Path | float | None = None,
    shard: str = "cases",
) -> Path:
    """Predict every input image and write probabilities, segmentations and uncertainty maps.

    Args:
        model: A :class:`Predictor`, or a spec: ``run:RUN_DIR`` or a trained run folder.
        inputs: A folder of images, a list of image files, or a trustseg dataset root (``dataset.json``).
        out: Output folder (created).
        measures: Uncertainty measures to write (names of ``trustseg.measures.MEASURES``, list or comma string);
            ``None`` = every measure available for the method.
        progress: Show a progress bar.
        split: With a dataset root: predict only this split (``train``/``val``/``test``); default all cases.
        device: Computation device when ``model`` is a spec (``auto``: CUDA when available, else CPU).
        overlap: Sliding-window overlap for large volumes (when ``model`` is a spec).
        save_samples: Also write ``<case>_samples.npy``, the M sample probabilities ``(M, K, *spatial)`` in
            float16, when the prediction has M > 1 (needed by the sample-based metrics GED and Hungarian IoU).
        resume: ``out`` holds an earlier prediction folder of the same model, measures and samples setting: keep
            its cases and predict only the missing ones (CLI ``--resume``).
        overwrite: ``out`` holds an earlier prediction folder: remove the files its index lists, then predict
            (CLI ``--overwrite``). Without either, an earlier prediction folder is refused.
        annotate: A per-case hook whose dict becomes the case's ``"qc"`` entry and ``summary.csv`` columns
            (``trustseg predict --qc``: :func:`trustseg.quality.run.qc_annotator`; see
            :class:`~trustseg.engine.prediction_folder.FolderWriter`).
        annotation: What ``annotate`` is (recorded as ``"qc_model"`` in ``predictions.json``).
        dtype: Storage of the ``.npy`` probabilities, ``float32`` or ``float16`` (CLI ``--dtype``; NIfTI stays
            float32); recorded as ``"probs_dtype"`` in the index.
        temperature: A post-hoc temperature for a predictor with the ``temperature`` capability: a number, or
            a JSON file written by ``trustseg calibrate`` (CLI ``--temperature temp.json``); ``None`` uses the
            file beside a model file if there is one (``model.pt`` -> ``model.temperature.json``,
            :func:`trustseg.engine.calibrate.apply_temperature`). Recorded as ``"temperature"`` in the index.
        shard: What ``torchrun`` ranks share (CLI ``--shard``, :data:`SHARDINGS`): ``cases`` (default;
            ignored by one process) or ``members`` (the members of an ensemble; ``torchrun`` only,
            :mod:`trustseg.engine.members_over_ranks`).

    Launched by ``torchrun`` (``WORLD_SIZE > 1``), the cases are shared among the ranks and rank 0 merges one
    index (:mod:`trustseg.engine.sharded_predict`); the folder is the one a single process writes. With
    ``shard="members"`` every rank predicts every case with its share of the members and rank 0 writes.

    Returns:
        ``out``, holding per-case files, ``predictions.json`` (``"complete": true``) and ``summary.csv``
        (see :mod:`trustseg.engine.prediction_folder`).

    Raises:
        ConfigError: ``out`` is (inside) the input folder or dataset root, a non-empty folder that is not a
            prediction folder, or an earlier prediction folder without ``resume``/``overwrite`` (or resumed with
            other settings).
        DataError: another process is predicting into ``out`` (its lock file ``.trustseg.lock``).
    """
    if shard not in SHARDINGS:
        close = difflib.get_close_matches(str(shard), list(SHARDINGS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"--shard must be one of {list(SHARDINGS)}, got {shard!r}{hint}")
    check_out_dir(inputs, out)
    spec = model if isinstance(model, (str, Path)) else None
    predictor = load_predictor(model, device, overlap=overlap) if isinstance(model, (str, Path)) else model
    apply_temperature(predictor, temperature, spec)
    if shard != "cases":  # refused before the process group starts, on every rank alike
        check_members_sharding(predictor, env_info(), save_samples, annotate)
    items = iter_inputs(inputs, split)
    job = WriterJob(measures, progress, save_samples, resume, overwrite, annotate, annotation, dtype)
    with session(getattr(predictor, "device", "cpu")) as dist_info:
        if dist_info.enabled:
            return SHARDINGS[shard](predictor, items, Path(out), dist_info, _writer_info(predictor), job)
    with exclusive(out, "prediction folder"):  # a second predict into the same folder fails fast
        return _predict_into(predictor, items, Path(out), job)


def _predict_into(predictor: Predictor, items: list, out: Path, job: WriterJob) -> Path:
    """The body of :func:`predict_folder`, under the folder's writer lock."""
    writer = job.writer(Path(out), _writer_info(predictor))
    done = writer.begin([load.case_id for load in items], resume=job.resume, overwrite=job.overwrite)
    items = [load for load in items if load.case_id not in done]
    for item in writer.track(items, job.progress):
        predict_case(predictor, item, writer, job.annotate)
    return writer.finish()


def _writer_info(predictor: Predictor) -> dict:
    """The run description the folder writer records in ``predictions.json``."""
    run_info = getattr(predictor, "run_info", None)
    if run_info is not None:
        t = getattr(predictor, "temperature", None)
        if t is None or float(t) == float(run_info.get("temperature") or 1.0):
            return run_info
        return {**run_info, "temperature": float(t)}  # set by --temperature
    info = predictor.info
    record: dict = {"method": info.method, "classes": list(info.classes), "run_dir": info.source}
    if "temperature" in info.capabilities:
        record["temperature"] = float(getattr(predictor, "temperature", 1.0))
    return record
