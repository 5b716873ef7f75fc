"""``trustseg qc fit / predict / explain`` as functions over folders: read a prediction folder, fit or apply a
:class:`~trustseg.quality.model.QCModel`, write the outputs atomically.

* :func:`fit_qc`: prediction folder + dataset (labels) -> QC model folder;
* :func:`predict_qc`: prediction folder + QC model -> ``qc.csv`` (one row per case) and ``qc.json`` (the rows,
  the settings and the stated guarantee; with the dataset also the scores of the predicted against the true
  quality);
* :func:`qc_annotator`: the per-case hook ``trustseg predict --qc`` passes to the prediction-folder writer, so the
  same columns land in ``summary.csv`` and ``predictions.json`` in one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trustseg.core.atomic import atomic_dir, atomic_write_csv, atomic_write_json, make_dirs
from trustseg.core.errors import ConfigError, DataError
from trustseg.data.predictions import read_index
from trustseg.quality.cases import QCCase, drop_samples, read_cases
from trustseg.quality.config import QCConfig
from trustseg.quality.inputs import case_input
from trustseg.quality.model import MANIFEST, QCModel, held_out_scores
from trustseg.quality.registry import QC_PREDICTORS

#: Cases predicted together (features and CNN batches); memory holds at most this many cases.
CHUNK = 64


def check_output_folder(out: str | Path, marker: str, what: str, overwrite: bool) -> Path:
    """Refuse an output folder that would destroy something other than an earlier output of the same kind.

    Args:
        out: The output folder.
        marker: The file every earlier output of this kind holds (``qc_model.json``, ``explain.json``).
        what: Its name in messages ("a QC model", "an explanation").
        overwrite: Whether an earlier output of this kind may be replaced.

    Raises:
        ConfigError: ``out`` is a file, a non-empty folder without ``marker``, or an earlier output without
            ``overwrite``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"the output {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / marker).is_file():
            raise ConfigError(f"{out} is not empty and is not {what} folder (no {marker}): choose a new or empty one")
        if not overwrite:
            raise ConfigError(f"{out} holds {what}: replace it with --overwrite (overwrite=True)")
    return out


def fit_qc(
    pred_dir: str | Path,
    data: str | Path,
    out: str | Path,
    config: QCConfig | None = None,
    *,
    split: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> QCModel:
    """Fit a QC model on a prediction folder whose cases have labels in ``data`` and write it to ``out``.

    Args:
        pred_dir: Predictions of cases the segmentation model did not train on (``config.source``).
        data: The dataset with the rater labels.
        out: The model folder (written whole, atomically; an earlier QC model only with ``overwrite``).
        config: The settings (default :class:`QCConfig`).
        split: Only the predicted cases of this dataset split.
        overwrite: Replace an earlier QC model folder.
        progress: Show progress.

    Raises:
        ConfigError: an ``out`` refused by :func:`check_output_folder` (checked before any work).
        DataError: an unreadable prediction folder or dataset, too few cases.
    """
    config = config or QCConfig()
    out = check_output_folder(out, MANIFEST, "a QC model", overwrite)
    index = read_index(pred_dir)
    needs_image = any(QC_PREDICTORS.meta(n)["input"] == "image" for n in config.predictors) and bool(
        config.cnn.get("use_image", True)
    )
    cases = [
        drop_samples(c)
        for c in read_cases(pred_dir, data, target=config.target, with_image=needs_image, split=split, index=index)
    ]
    provenance = {
        "pred_dir": str(pred_dir),
        "data": str(data),
        "split": split,
        "method": index.get("method"),
        "run": index.get("run"),
        "classes": index.get("classes"),
    }
    model = QCModel.fit(cases, config, provenance, progress=progress)
    make_dirs(out.parent)
    with atomic_dir(out, overwrite=True) as tmp:  # the earlier model stays until the new one is complete
        model.save(tmp)
    return model


def _chunks(items: Iterator[QCCase], size: int) -> Iterator[list[QCCase]]:
    chunk: list[QCCase] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict_qc(
    pred_dir: str | Path,
    model: str | Path | QCModel,
    out_csv: str | Path,
    *,
    data: str | Path | None = None,
    images: str | Path | Sequence[str | Path] | None = None,
    split: str | None = None,
    threshold: float | None = None,
    catch: float | None = None,
    confidence: float | None = None,
    partial: bool = False,
) -> dict[str, Any]:
    """Predict the quality of every case of a prediction folder; write ``out_csv`` and ``out_csv``'s ``.json``.

    Args:
        pred_dir: The prediction folder.
        model: A QC model folder (or a loaded model).
        out_csv: The per-case table (``.csv``); the JSON beside it holds the rows, the settings and the
            guarantee statement (and ``"evaluation"`` when ``data`` is given).
        data: A dataset with labels: adds the true quality per case and the scores of the prediction (R², r, ρ,
            MAE, failure AUROC, interval coverage, catch and review rates) — and provides the images.
        images: The inputs the folder was predicted from, for a CNN predictor that reads images (without
            ``data``; default: each case's recorded source file).
        split: Only this dataset split (needs ``data``).
        threshold, catch, confidence: Override the model's review threshold, catch rate and interval coverage.
        partial: Accept an incomplete prediction folder.

    Returns:
        The JSON written: ``{"model", "pred_dir", "settings", "cases": rows, "evaluation"?}``.
    """
    qc = model if isinstance(model, QCModel) else QCModel.load(model)
    out_csv = Path(out_csv)
    if out_csv.suffix != ".csv":
        raise ConfigError(f"the QC table must be a .csv file, got {out_csv}")
    index = read_index(pred_dir)
    trained = qc.manifest.get("training", {}).get("classes")
    if trained is not None and index.get("classes") is not None and list(trained) != list(index["classes"]):
        raise DataError(
            f"the prediction folder's classes {index['classes']} differ from the QC model's {trained}", pred_dir
        )
    rows: list[dict[str, Any]] = []
    truth: list[float] = []
    cases = read_cases(
        pred_dir,
        data,
        target=qc.config.target,
        with_image=qc.uses_images,
        images=images,
        split=split,
        partial=partial,
        index=index,
    )
    for chunk in _chunks(cases, CHUNK):
        got = qc.predict([c.inp for c in chunk], threshold, catch, confidence)
        for c, row in zip(chunk, got):
            if c.truth is not None:
                row[f"true_{qc.config.target}"] = c.truth
                truth.append(c.truth)
        rows.extend(got)
    if not rows:
        raise DataError("no case to assess", Path(pred_dir))
    result: dict[str, Any] = {
        "model": str(model) if not isinstance(model, QCModel) else None,
        "pred_dir": str(pred_dir),
        "settings": qc.statement(threshold, catch),
        "cases": rows,
    }
    if truth:
        result["evaluation"] = evaluate_rows(rows, qc, threshold)
    atomic_write_csv(out_csv, rows)
    atomic_write_json(out_csv.with_suffix(".json"), result)
    return result


def evaluate_rows(rows: Sequence[dict[str, Any]], qc: QCModel, threshold: float | None = None) -> dict[str, Any]:
    """Scores of the predicted against the true quality of rows that carry ``true_<target>``
    (:func:`~trustseg.quality.model.held_out_scores`)."""
    t = qc.config.target

    def col(key: str, dtype: type = np.float64) -> np.ndarray:
        return np.asarray([r[key] for r in rows], dtype=dtype)

    return held_out_scores(
        col(f"predicted_{t}"),
        col(f"true_{t}"),
        qc.config,
        threshold,
        lo=col(f"{t}_low"),
        hi=col(f"{t}_high"),
        review=col("review", bool),
    )


def qc_annotator(model: str | Path | QCModel, layer_heads: bool = False) -> Callable[..., dict[str, Any]]:
    """The per-case hook of ``trustseg predict --qc``: ``hook(case_id, probs, seg, maps, samples, image, spacing)``
    (numpy arrays as the writer holds them) -> the :meth:`QCModel.predict` row without ``case``."""
    qc = model if isinstance(model, QCModel) else QCModel.load(model)

    def annotate(
        case_id: str,
        probs: np.ndarray,
        seg: np.ndarray,
        maps: dict[str, np.ndarray],
        samples: np.ndarray | None,
        image: np.ndarray | None,
        spacing: Sequence[float] | None,
    ) -> dict[str, Any]:
        loaded = {"probs": probs, "seg": seg, "maps": maps, "samples": samples}
        inp = case_input(
            case_id, loaded, layer_heads=layer_heads, spacing=spacing, image=image if qc.uses_images else None
        )
        row = qc.predict([inp])[0]
        row.pop("case")
        return row

    return annotate
