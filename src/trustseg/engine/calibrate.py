"""Post-hoc temperature scaling: of a trained run (``trustseg train --calibrate``, ``trustseg calibrate RUN``),
or of any predictor whose scheme gives logits (``trustseg calibrate --model SPEC --data DATA --out temp.json``).

* :func:`calibrate_run`: the run's temperature, stored in its ``run.json`` and applied by
  :func:`trustseg.inference.run_predictor.load_run`;
* :func:`calibrate_predictor`: any predictor with the ``logits`` capability (``predict_logits(image, spacing)``
  -> untempered sample logits ``(M, 1, K, *spatial)``; ``run:``, ``torchscript:``, ``state_dict:``); the fit is
  the same (:class:`~trustseg.methods.temperature.LogitSubsample`: one T minimising the NLL of the raters' mean
  label ȳ under ``mean_m softmax(z_m / T)``), written to a temperature file
  ``{"temperature": T, "model", "data", "split", "cases", "max_voxels", "seed"}``;
* :func:`apply_temperature`: ``trustseg predict --temperature temp.json``, or the file beside the model
  (``model.pt`` -> ``model.temperature.json``, :func:`temperature_sidecar`), sets the predictor's temperature
  (capability ``temperature``): its probabilities become ``softmax(z / T)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustseg.core.atomic import atomic_write_json
from trustseg.core.errors import ConfigError, DataError
from trustseg.data.dataset import load_dataset
from trustseg.data.normalization import NormStats
from trustseg.data.targets import soft_label
from trustseg.engine.config import load_saved_run_config
from trustseg.engine.loader import collate
from trustseg.engine.setup import load_data, split_ids
from trustseg.inference.device import resolve_device
from trustseg.inference.predictor import PREDICTORS, Predictor, load_predictor, split_spec
from trustseg.inference.run_folder import CONFIG, RUN_JSON, read_run_json, size_multiple
from trustseg.inference.run_predictor import load_run
from trustseg.methods.base import Batch
from trustseg.methods.temperature import DEFAULT_MAX_VOXELS, LogitSubsample, fit_method_temperature

#: Suffix of the temperature file beside a model file: ``model.pt`` -> ``model.temperature.json``.
TEMPERATURE_SUFFIX = ".temperature.json"


def case_batches(
    dataset, ids: Sequence[str], multiple: int = 1, normalization: NormStats | None = None
) -> Iterator[tuple[Batch, list[tuple[int, ...]]]]:
    """One batch per case, read when needed: ``(batch, [unpadded spatial shape])``.

    The image is normalised as in training (``normalization``, the run's stored statistics; ``None`` for runs
    trained on raw intensities), then zero-padded at the end of each axis to a multiple of ``multiple`` (the
    network's size multiple; a case's field-of-view mask becomes the batch's ``valid`` map, so the voxels outside
    it are left out of the fit too); the shape lets
    :func:`~trustseg.methods.temperature.fit_method_temperature` drop the padded voxels. At most one case is in
    memory at a time.
    """
    for cid in ids:
        case = dataset[cid]
        image = case.image if normalization is None else normalization.apply(case.image, where=f"case {cid!r}")
        valid = None if case.mask is None else [case.mask]
        yield collate([image], [case.labels], dataset.num_classes, multiple, valid), [tuple(case.image.shape[1:])]


def calibrate_run(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    split: str | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    seed: int = 0,
    device: str = "auto",
) -> float:
    """Fit a post-hoc temperature on validation cases of a trained run and store it in ``run.json``.

    Uses :func:`trustseg.methods.temperature.fit_method_temperature`: one ``T`` minimising the NLL of the soft
    label ȳ under the predictive mean of the (tempered) samples. The cases are predicted whole, one per batch
    (zero-padded to the network's size multiple; the padding is cropped off before the fit, so it does not count
    as background), and at most ``max_voxels`` voxels per case are kept (a seeded uniform subsample, weighted so
    that the NLL estimate is unbiased; all voxels when the case is smaller).

    Args:
        run_dir: The trained run folder.
        data: A trustseg dataset to fit on instead of the run's own (same classes).
        split: Fixed split of the dataset to use. Default: the run's validation cases (its ``train.fold`` if set)
            for the run's dataset, ``val`` for ``data``.
        max_voxels: Voxels kept per case.
        seed: Seed of the voxel subsample.
        device: Where to run the networks (``auto``: CUDA when available, as ``trustseg predict``).

    Returns:
        The fitted temperature.

    Raises:
        ConfigError: no cases to fit on, a dataset whose classes differ from the run's, or a method without
            logits.
    """
    run_dir = Path(run_dir)
    cfg = load_saved_run_config(run_dir / CONFIG)
    method, models, info = load_run(run_dir, device=resolve_device(device, "calibrate device"))
    dataset = load_data(cfg) if data is None else load_dataset(data)
    if data is None and split is None:
        _, ids = split_ids(dataset, cfg)
    else:
        ids = dataset.split(split or "val")
    if not ids:
        raise ConfigError(f"{dataset.root}: no {split or 'validation'} cases to fit a temperature on")
    if dataset.num_classes != int(info["num_classes"]):
        raise ConfigError(
            f"{dataset.root}: {dataset.num_classes} classes, but the run {run_dir} predicts {info['num_classes']}"
        )
    method.temperature = 1.0
    stored = info.get("normalization")
    stats = None if stored is None else NormStats.from_dict(stored, where=str(run_dir / RUN_JSON))
    batches = case_batches(dataset, ids, size_multiple(info), stats)
    t = float(fit_method_temperature(method, models, batches, target="soft", max_voxels=max_voxels, seed=seed))
    record = read_run_json(run_dir)
    record["temperature"] = t
    atomic_write_json(run_dir / RUN_JSON, record)
    return t


def temperature_sidecar(spec: str | Path) -> Path | None:
    """The temperature file beside the model file of ``spec`` (``torchscript:model.pt?classes=2`` ->
    ``model.temperature.json``); ``None`` for a model that is a folder (a run keeps its temperature in
    ``run.json``).

    Example:
        >>> str(temperature_sidecar("torchscript:models/net.pt?classes=2"))
        'models/net.temperature.json'
    """
    _, location = split_spec(spec)
    path = Path(location.split("?", 1)[0])
    if not path.suffix or path.is_dir():
        return None
    return path.with_suffix(TEMPERATURE_SUFFIX)


def read_temperature(path: str | Path) -> float:
    """The temperature of a file written by :func:`calibrate_predictor`.

    Raises:
        DataError: unreadable, or not a finite number > 0 under ``"temperature"`` (naming the file).
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text())["temperature"]
        t = float(value)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(
            f'not a temperature file ({{"temperature": T}} written by trustseg calibrate): {e}', path
        ) from None
    if not math.isfinite(t) or t <= 0:
        raise DataError(f"temperature must be a finite number > 0, got {value!r}", path)
    return t


def apply_temperature(predictor: Predictor, temperature: str | Path | float | None, spec: str | Path | None) -> float:
    """Set ``predictor.temperature`` from a number or a temperature file; with ``None`` from the file beside
    the model of ``spec`` when there is one (else the predictor keeps its own). Returns the temperature in use.

    Raises:
        ConfigError: a temperature for a predictor without the ``temperature`` capability.
        DataError: a bad temperature file (:func:`read_temperature`).
    """
    if temperature is None:
        side = None if spec is None else temperature_sidecar(spec)
        if side is None or not side.is_file():
            return float(getattr(predictor, "temperature", 1.0))
        temperature = side
    t = float(temperature) if isinstance(temperature, (int, float)) else read_temperature(temperature)
    if not math.isfinite(t) or t <= 0:
        raise ConfigError(f"--temperature must be a finite number > 0, got {t!r}")
    if "temperature" not in predictor.info.capabilities:
        takers = [e.name + ":" for e in PREDICTORS if "temperature" in e.meta.get("capabilities", ())]
        raise ConfigError(
            f"the model {predictor.info.source or predictor.info.method!r} takes no temperature (capability "
            f"'temperature'){'; models that do: ' + ', '.join(takers) if takers else ''}"
        )
    predictor.temperature = t  # type: ignore[attr-defined]  # capability "temperature"
    return t


def calibrate_predictor(
    model: str | Path | Predictor,
    data: str | Path,
    out: str | Path | None = None,
    *,
    split: str | None = "val",
    max_voxels: int = DEFAULT_MAX_VOXELS,
    seed: int = 0,
    device: str = "auto",
) -> float:
    """Fit one post-hoc temperature for any predictor with the ``logits`` capability and write it to ``out``.

    Per case of ``split`` (all cases for ``None``): the predictor's untempered sample logits of the raw image
    (``predict_logits``), the raters' mean label ȳ (:func:`trustseg.data.targets.soft_label`) and the field of
    view go into a :class:`~trustseg.methods.temperature.LogitSubsample` (at most ``max_voxels`` voxels per case,
    seeded); T minimises the NLL of ȳ under ``mean_m softmax(z_m / T)``.

    Args:
        model: A predictor, or a spec (``torchscript:model.pt?classes=...``, ``run:RUN``, ...).
        data: A trustseg dataset with the same classes.
        out: The temperature file (JSON); ``None`` writes nothing.
        split: The dataset's split to fit on.
        max_voxels: Voxels kept per case.
        seed: Seed of the voxel subsample.
        device: Where a spec is loaded.

    Returns:
        T.

    Raises:
        ConfigError: a predictor without the ``logits`` capability, no cases, or other classes than the model.
    """
    predictor = load_predictor(model, device) if isinstance(model, (str, Path)) else model
    info = predictor.info
    fn = getattr(predictor, "predict_logits", None)
    if "logits" not in info.capabilities or fn is None:
        takers = [e.name + ":" for e in PREDICTORS if "logits" in e.meta.get("capabilities", ())]
        raise ConfigError(
            f"the model {info.source or info.method!r} gives no logits (capability 'logits'), so no temperature can "
            f"be fitted for it{'; models that do: ' + ', '.join(takers) if takers else ''}"
        )
    dataset = load_dataset(data)
    ids = dataset.split(split) if split else dataset.ids
    if not ids:
        raise ConfigError(f"{dataset.root}: no {split or ''} cases to fit a temperature on (--split)")
    if dataset.num_classes != info.num_classes:
        raise ConfigError(f"{dataset.root}: {dataset.num_classes} classes, but the model predicts {info.num_classes}")
    sub = LogitSubsample(max_voxels, seed)
    for cid in ids:
        case = dataset[cid]
        z = fn(case.image, tuple(case.spacing))  # (M, 1, K, *spatial)
        valid = None if case.mask is None else torch.from_numpy(np.asarray(case.mask, dtype=bool))
        sub.add(z[:, 0], soft_label(case.labels, dataset.num_classes), valid)
    t = sub.fit()
    if out is not None:
        record: dict[str, Any] = {
            "temperature": t,
            "model": str(model) if isinstance(model, (str, Path)) else info.source,
            "data": str(data),
            "split": split,
            "cases": len(ids),
            "max_voxels": max_voxels,
            "seed": seed,
        }
        atomic_write_json(Path(out), record)
    return t
