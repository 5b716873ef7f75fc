"""Evaluate a prediction folder against a dataset's rater labels.

Structured in three steps so that more metrics plug in without touching the rest:

1. :func:`load_pairs`: match each predicted case (``predictions.json``) with its dataset case;
2. :func:`case_metrics`: one flat ``name -> float`` dict per case;
3. :func:`aggregate`: the mean of every metric over cases (NaNs ignored) and how many cases entered it.

:func:`evaluate_predictions` runs the full :class:`~trustseg.engine.suite.EvaluationSuite` on every case
(segmentation, calibration, CURVAS, multi-rater, uncertainty quality, quality control; see that module for the
conventions) and adds these per-rater Dice columns (``2TP / (2TP + FP + FN)`` per foreground class):

* ``dice/<class>/<rater>``: against each rater;
* ``dice/<class>/majority``: against the per-pixel majority vote of the raters (ties to the lower class);
* ``dice/mean/majority``: mean over foreground classes of the majority-vote Dice;
* ``dice/mean/raters``: mean over foreground classes and raters.

A class absent from both maps scores according to ``empty`` (``one`` -> 1, ``nan`` -> left out of the means,
``zero`` -> 0), see :func:`trustseg.metrics.overlap.dice`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustseg.core.atomic import atomic_write_csv, atomic_write_json
from trustseg.core.errors import DataError
from trustseg.data.case import Case
from trustseg.engine.suite import EvaluationSuite, SuiteConfig


@dataclass
class Pair:
    """A predicted case and its reference.

    Attributes:
        case_id: The case.
        seg: ``(*spatial)`` int64 predicted class map.
        case: The dataset case (image, rater labels ``(R, *spatial)``).
        entry: The case's entry of ``predictions.json`` (its files: probabilities, maps, samples).
    """

    case_id: str
    seg: np.ndarray
    case: Case
    entry: dict[str, Any]


def read_index(pred_dir: str | Path) -> dict[str, Any]:
    """``predictions.json`` of a prediction folder."""
    path = Path(pred_dir) / "predictions.json"
    if not path.is_file():
        raise DataError("not a prediction folder (no predictions.json; run `trustseg predict`)", Path(pred_dir))
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"cannot parse predictions.json: {e}", path) from None


def load_pairs(pred_dir: str | Path, data_root: str | Path, split: str | None = None):
    """Yield :class:`Pair` for every predicted case (of ``split`` if given) present in the dataset.

    Raises:
        DataError: a predicted case missing from the dataset, or a prediction whose shape differs from the labels.
    """
    from trustseg.data.dataset import load_dataset
    from trustseg.data.io import read_label

    pred_dir = Path(pred_dir)
    index = read_index(pred_dir)
    ds = load_dataset(data_root)
    keep = set(ds.split(split)) if split else set(ds.ids)
    known = set(ds.ids)
    for entry in index["cases"]:
        cid = entry["id"]
        if cid not in known:
            raise DataError(f"predicted case {cid!r} is not in the dataset {ds.root}", pred_dir / "predictions.json")
        if cid not in keep:
            continue
        seg_path = pred_dir / entry["files"]["seg"]
        seg, _, _ = read_label(seg_path)
        case = ds[cid]
        if tuple(seg.shape) != tuple(case.labels.shape[1:]):
            raise DataError(f"prediction shape {seg.shape} differs from the labels {case.labels.shape[1:]}", seg_path)
        yield Pair(cid, seg.astype(np.int64), case, entry)


def _case_file(pred_dir: Path, entry: dict[str, Any], problem: str) -> Path:
    """The file of a predicted case that a problem is about: a measure map it names, else the probabilities."""
    files = entry.get("files", {})
    for name, fname in files.get("measures", {}).items():
        if f"map {name!r}" in problem:
            return pred_dir / fname
    return pred_dir / files.get("probs", files.get("seg", "predictions.json"))


def case_metrics(pair: Pair, classes: list[str], raters: list[str], empty: str = "one") -> dict[str, float]:
    """Dice per foreground class against each rater and the majority vote, and their means.

    Returns:
        Flat ``metric name -> value`` (see the module docstring for the names).
    """
    from trustseg.metrics.overlap import dice

    k = len(classes)
    out: dict[str, float] = {}
    per_rater = []
    for r, rater in enumerate(raters):
        d = dice(pair.seg, pair.case.labels[r], k, empty=empty).numpy()  # (K - 1,)
        per_rater.append(d)
        for c, name in enumerate(classes[1:]):
            out[f"dice/{name}/{rater}"] = float(d[c])
    maj = dice(pair.seg, pair.case.majority_vote(k), k, empty=empty).numpy()
    for c, name in enumerate(classes[1:]):
        out[f"dice/{name}/majority"] = float(maj[c])
    out["dice/mean/majority"] = _nanmean(maj)
    out["dice/mean/raters"] = _nanmean(np.stack(per_rater))
    return out


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def aggregate(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean over cases of every numeric metric (NaNs ignored) and the number of cases that entered it."""
    names: list[str] = []
    for row in rows:
        names += [k for k, v in row.items() if k != "case" and isinstance(v, float) and k not in names]
    mean, count = {}, {}
    for n in names:
        vals = np.array([row.get(n, math.nan) for row in rows], dtype=np.float64)
        count[n] = int(np.isfinite(vals).sum())
        mean[n] = float(np.nanmean(vals)) if count[n] else float("nan")
    return {"mean": mean, "count": count}


def evaluate_predictions(
    pred_dir: str | Path,
    data_root: str | Path,
    out_json: str | Path,
    split: str | None = None,
    empty: str = "one",
    suite: SuiteConfig | None = None,
) -> dict[str, Any]:
    """Evaluate a prediction folder with the full suite and write ``out_json`` plus a per-case CSV next to it.

    Every case goes through :class:`~trustseg.engine.suite.EvaluationSuite` (segmentation, calibration, CURVAS,
    multi-rater, uncertainty quality, quality control; sample-based metrics when the folder holds samples) and
    :func:`case_metrics` (Dice against each rater by name). A folder with segmentations only (no probability
    maps, e.g. from another tool) is scored with one-hot probabilities, so its calibration is that of hard masks.

    Args:
        pred_dir: Folder written by :func:`trustseg.engine.predict.predict_folder`.
        data_root: The dataset holding the rater labels.
        out_json: Result file; the per-case table goes beside it with the suffix ``.csv``.
        split: Evaluate only the predicted cases of this split.
        empty: Dice of a class absent from both maps in the per-rater table: ``one``, ``nan`` or ``zero``.
        suite: Settings of the evaluation suite.

    Returns:
        ``{"pred_dir", "data", "split", "classes", "raters", "empty", "cases" (ids), "num_cases", "summary", "mean",
        "count",
        "calibration", "uncertainty", "quality_control", "per_case", "csv", ...}``.
    """
    from trustseg.data.dataset import load_dataset
    from trustseg.engine.prediction_folder import load_prediction

    ds = load_dataset(data_root)
    classes, raters = ds.classes, ds.raters
    ev = EvaluationSuite(classes, len(raters), suite)
    rows = []
    for pair in load_pairs(pred_dir, data_root, split):
        pred = load_prediction(pred_dir, pair.case_id, entry=pair.entry, seg=False)  # seg: read by load_pairs
        samples = None if pred["samples"] is None else torch.from_numpy(pred["samples"])
        if pred["probs"] is None:  # a segmentation-only folder: its probabilities are the one-hot masks
            probs = torch.nn.functional.one_hot(torch.from_numpy(pair.seg), len(classes)).movedim(-1, 0).float()
        else:
            probs = torch.from_numpy(pred["probs"])
        try:
            row = ev.add_case(
                pair.case_id,
                probs,
                torch.from_numpy(pair.case.labels),
                spacing=tuple(pair.case.spacing),
                maps={k: torch.from_numpy(v) for k, v in pred["maps"].items()},
                samples=samples,
            )
        except ValueError as e:  # the suite's input checks (NaN, shapes, sums): name the prediction's file
            problem = str(getattr(e, "problem", e))
            culprit = _case_file(Path(pred_dir), pair.entry, problem)
            raise DataError(f"case {pair.case_id}: {problem}", culprit) from None
        rows.append({**row, **case_metrics(pair, classes, raters, empty)})
    if not rows:
        raise DataError(f"no predicted case to evaluate{f' in split {split!r}' if split else ''}", Path(pred_dir))
    out_json = Path(out_json)
    full = ev.result()
    table = aggregate(rows)  # mean and count of every per-case column (the suite's and the per-rater Dice)
    csv_path = out_json.with_suffix(".csv")
    result = {
        "pred_dir": str(pred_dir),
        "data": str(data_root),
        "split": split,
        "classes": classes,
        "raters": raters,
        "empty": empty,
        **full,
        "summary": {**full["summary"], "dice_raters": table["mean"]["dice/mean/raters"]},
        "mean": table["mean"],
        "count": table["count"],
        "per_case": rows,
        "csv": str(csv_path),
    }
    atomic_write_csv(csv_path, rows)
    atomic_write_json(out_json, result)
    return result


def summary(mean: dict[str, float], classes: list[str]) -> dict[str, float]:
    """Headline numbers: ``dice_majority``, ``dice_raters`` and ``dice_majority/<class>`` (means over cases)."""
    out = {"dice_majority": mean["dice/mean/majority"], "dice_raters": mean["dice/mean/raters"]}
    out.update({f"dice_majority/{c}": mean[f"dice/{c}/majority"] for c in classes[1:]})
    return out
