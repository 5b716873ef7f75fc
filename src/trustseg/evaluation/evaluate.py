"""Evaluate a prediction folder against a dataset's rater labels.

1. :func:`load_pairs`: match each predicted case (``predictions.json``, :mod:`trustseg.data.predictions`) with
   its dataset case;
2. :func:`evaluate_predictions`: run the :class:`~trustseg.evaluation.suite.EvaluationSuite` (every registered
   component) on every case, optionally the OOD and noise protocols (:mod:`trustseg.evaluation.robustness`, which
   predict again with the model), and write the results JSON and the per-case CSV — once, at the end, so an
   evaluation that fails part-way leaves no half-written results.

A new metric is a registered suite component (:mod:`trustseg.evaluation.component`); nothing here changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trustseg.core.atomic import atomic_write_json, atomic_write_text, csv_text
from trustseg.core.errors import ConfigError, DataError
from trustseg.core.lock import exclusive
from trustseg.data.case import Case
from trustseg.data.dataset import DATASET_JSON, Dataset, load_dataset
from trustseg.data.io import read_label
from trustseg.data.predictions import case_files, check_complete, index_path, load_prediction, read_index
from trustseg.evaluation.context import CaseInputError, SuiteConfig
from trustseg.evaluation.parallel import check_workers, run_blocks
from trustseg.evaluation.results import flatten
from trustseg.evaluation.robustness import NoiseConfig, OODConfig, noise_protocol, ood_detection
from trustseg.evaluation.suite import EvaluationSuite


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


def load_pairs(
    pred_dir: str | Path,
    data_root: str | Path | Dataset,
    split: str | None = None,
    partial: bool = False,
    index: dict[str, Any] | None = None,
    shard: tuple[int, int] | None = None,
):
    """Yield :class:`Pair` for every predicted case (of ``split`` if given) present in the dataset.

    Args:
        pred_dir: The prediction folder.
        data_root: The dataset (its folder, or the opened :class:`~trustseg.data.dataset.Dataset`).
        split: Only the cases of this split.
        partial: Accept a folder whose ``predictions.json`` is marked incomplete (a killed or failed predict).
        index: The folder's ``predictions.json`` when the caller has read it already (else it is read here).
        shard: ``(rank, world_size)``: only the rank's contiguous block of the cases to evaluate (positions
            ``[r·n // W, (r+1)·n // W)`` of the n cases in index order), so the blocks in rank order are the
            cases in the order one process evaluates them (a sharded evaluate under ``torchrun``). Every entry is
            still checked.

    Raises:
        DataError: an incomplete folder without ``partial`` (:func:`trustseg.data.predictions.check_complete`), a
            case listed twice in ``predictions.json``, a predicted case missing from the dataset, or a prediction
            whose shape differs from the labels.
    """
    pred_dir = Path(pred_dir)
    index = read_index(pred_dir) if index is None else index
    check_complete(pred_dir, index, partial)
    ds = data_root if isinstance(data_root, Dataset) else load_dataset(data_root)
    keep = set(ds.split(split)) if split else set(ds.ids)
    known = set(ds.ids)
    seen: set[str] = set()
    for entry in index["cases"]:
        cid = entry["id"]
        if cid in seen:  # it would be scored twice and weigh double in every mean
            raise DataError(f"case {cid!r} is listed more than once", index_path(pred_dir))
        seen.add(cid)
        if cid not in known:
            raise DataError(f"predicted case {cid!r} is not in the dataset {ds.root}", index_path(pred_dir))
    chosen = [entry for entry in index["cases"] if entry["id"] in keep]
    if shard is not None:
        rank, world = shard
        chosen = chosen[rank * len(chosen) // world : (rank + 1) * len(chosen) // world]
    for entry in chosen:
        cid = entry["id"]
        seg_path = pred_dir / entry["files"]["seg"]
        seg, _, _ = read_label(seg_path)
        case = ds[cid]
        if tuple(seg.shape) != tuple(case.labels.shape[1:]):
            raise DataError(f"prediction shape {seg.shape} differs from the labels {case.labels.shape[1:]}", seg_path)
        yield Pair(cid, seg.astype(np.int64), case, entry)


def check_seg_matches_probs(pred_dir: str | Path, pair: Pair, probs: np.ndarray) -> None:
    """Refuse a case whose segmentation is not an argmax of its probabilities ``(K, *spatial)``.

    A voxel agrees when its ``seg`` class has the largest probability (ties: any of the tied classes). Otherwise
    the overlap metrics (from ``seg``) and the calibration metrics (from ``probs``) would describe two different
    predictions in one result.

    Raises:
        DataError: naming both files and the share of voxels that differ.
    """
    seg = pair.seg
    shape_ok = probs.ndim == seg.ndim + 1 and tuple(probs.shape[1:]) == tuple(seg.shape)
    if not shape_ok or seg.size == 0 or seg.min() < 0 or seg.max() >= probs.shape[0] or not np.isfinite(probs).all():
        return  # the suite reports wrong shapes, class counts and values, naming the file
    at_seg = np.take_along_axis(probs, seg[None], axis=0)[0]
    differ = float((at_seg < probs.max(axis=0)).mean())
    if differ > 0:
        files = case_files(pred_dir, pair.entry)
        raise DataError(
            f"case {pair.case_id!r}: the segmentation {files['seg'].name} is not the argmax of the probabilities "
            f"{files['probs'].name} in {differ:.2%} of the voxels (the folder mixes two predictions?)",
            files["seg"],
        )


def culprit(pred_dir: str | Path, entry: dict[str, Any], error: CaseInputError) -> Path:
    """The file of a predicted case that a suite input error is about (from the error's ``source``/``measure``):
    the map it names, the samples, the index for its ``qc`` entry, else the probabilities (the segmentation for a
    segmentation-only case)."""
    if error.source == "qc":
        return index_path(pred_dir)
    files = case_files(pred_dir, entry)
    if error.source == "map" and f"map:{error.measure}" in files:
        return files[f"map:{error.measure}"]
    if error.source == "samples" and "samples" in files:
        return files["samples"]
    return files.get("probs", files.get("seg", index_path(pred_dir)))


RESULT_KEYS = ("pred_dir", "data", "summary", "per_case", "csv")
"""Keys every results JSON written by :func:`evaluate_predictions` holds (how an earlier one is recognised)."""


def is_results_json(path: str | Path) -> bool:
    """Whether ``path`` is a results JSON written by :func:`evaluate_predictions` (trustseg's own artefact)."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(obj, dict) and all(k in obj for k in RESULT_KEYS)


def check_results_out(out_json: str | Path, pred_dir: str | Path, data_root: str | Path) -> Path:
    """Refuse a results path whose writing would destroy an input or a file trustseg did not write.

    Refused: ``out_json`` (or the per-case CSV beside it) being the prediction index (``predictions.json``) or
    ``dataset.json``, a ``.csv`` name (the JSON and its table would be one file), or an existing file that is not
    an earlier results JSON (an earlier results JSON and its CSV are replaced).

    Raises:
        ConfigError: naming the path and the problem.
    """
    out_json = Path(out_json)
    csv_path = out_json.with_suffix(".csv")
    if out_json.suffix.lower() == ".csv":
        raise ConfigError(f"{out_json}: the results file needs a .json name (the per-case table is the .csv beside it)")
    protected = {
        index_path(pred_dir).resolve(): "the prediction index",
        (Path(data_root) / DATASET_JSON).resolve(): "the dataset index",
    }
    for path in (out_json, csv_path):
        role = protected.get(path.resolve())
        if role is not None:
            raise ConfigError(f"{path}: is {role}; evaluate never writes over its inputs: choose another --out")
        if path.exists() and not path.is_file():
            raise ConfigError(f"{path}: exists and is not a file; choose another --out")
    earlier = out_json.is_file() and is_results_json(out_json)
    if out_json.exists() and not earlier:
        raise ConfigError(
            f"{out_json}: exists and is not an earlier trustseg results JSON; it is never replaced: "
            "choose another --out"
        )
    if csv_path.exists() and not earlier:
        raise ConfigError(
            f"{csv_path}: the per-case table would replace this existing file, which no earlier results JSON at "
            f"{out_json.name} wrote; choose another --out"
        )
    return out_json


def evaluate_predictions(
    pred_dir: str | Path,
    data_root: str | Path,
    out_json: str | Path,
    split: str | None = None,
    empty: str | None = None,
    suite: SuiteConfig | None = None,
    *,
    use_image: bool = True,
    predictor: Any = None,
    ood: OODConfig | None = None,
    noise: NoiseConfig | None = None,
    progress: bool = False,
    partial: bool = False,
    workers: int = 1,
) -> dict[str, Any]:
    """Evaluate a prediction folder with the full suite and write ``out_json`` plus a per-case CSV next to it.

    Every case goes through :class:`~trustseg.evaluation.suite.EvaluationSuite` (segmentation, calibration,
    CURVAS, multi-rater, uncertainty quality, SURE's gradient metrics, quality control; sample-based metrics when
    the folder holds samples). A folder with segmentations only (no probability maps, e.g. from another tool) is
    scored with one-hot probabilities, so its calibration is that of hard masks.

    Args:
        pred_dir: Folder written by :func:`trustseg.engine.predict.predict_folder`.
        data_root: The dataset holding the rater labels.
        out_json: Result file; the per-case table goes beside it with the suffix ``.csv``.
        split: Evaluate only the predicted cases of this split.
        empty: Dice/IoU of a class absent from both maps, for every overlap entry: ``nan`` (left out of the
            means), ``one`` or ``zero``; ``None`` keeps ``suite.empty`` (default ``nan``).
        suite: Settings of the evaluation suite.
        use_image: Pass the dataset image to the suite (SURE's gradient metrics need it).
        predictor: The model that made the predictions (any :class:`~trustseg.inference.predictor.Predictor`),
            needed by ``ood`` and ``noise``, which predict the evaluated cases again.
        ood: Run the OOD protocol (distortions x severities) on the evaluated cases: adds ``ood``.
        noise: Run SURE's noise protocol: adds ``noise_robustness`` (per level) and ``noise_interpretability``
            (UCC_d, UR_d, UR_μ, UCC_μ).
        progress: Show progress bars for the protocols.
        partial: Evaluate a prediction folder marked incomplete (CLI ``--partial``); the result then records
            ``"partial": {"scored": k, "expected": n}``. Without it such a folder is refused.
        workers: Score the cases in this many ``spawn`` processes (CLI ``--workers``): worker i scores the
            contiguous block i of the cases (:func:`load_pairs` ``shard``) with its own suite and
            ``max(1, torch.get_num_threads() // workers)`` threads; the suites merge in block order
            (:meth:`EvaluationSuite.merge <trustseg.evaluation.suite.EvaluationSuite.merge>`), so the per-case
            rows and the CSV are those of one process, byte for byte, and the pooled sums agree to float
            round-off (``docs/evaluation.md``). More workers than cases: one per case.

    Returns:
        ``{"pred_dir", "data", "split", "empty", "classes", "raters", "cases" (ids), "num_cases", "config",
        "components", "higher_is_better", "summary", "mean", "count", "calibration", "uncertainty",
        "quality_control", "per_case", "csv"}``, ``"quality_prediction"`` when cases carry a ``qc`` entry, and
        when asked, ``"ood"``, ``"noise_robustness"``, ``"noise_interpretability"`` (``docs/evaluation.md``).

    Raises:
        ConfigError: an ``out_json`` refused by :func:`check_results_out` (checked before any work).
        DataError: another process writes results into the folder of ``out_json`` (its lock file); no prediction
            folder, a case missing from the dataset or of another shape, a class or rater
            name that cannot be a results key (naming ``dataset.json``), or an input the suite cannot score
            (naming the case and the prediction file).
    """
    if (ood is not None or noise is not None) and predictor is None:
        raise ConfigError("the OOD and noise protocols predict again: pass the model (predictor=..., CLI --run RUN)")
    workers = check_workers(workers)
    out_json = check_results_out(out_json, pred_dir, data_root)
    with exclusive(out_json.parent, "results folder"):
        return _evaluate(
            pred_dir,
            data_root,
            out_json,
            split,
            empty,
            suite,
            use_image,
            predictor,
            ood,
            noise,
            progress,
            partial,
            workers,
        )


def _evaluate(
    pred_dir: str | Path,
    data_root: str | Path,
    out_json: Path,
    split: str | None,
    empty: str | None,
    suite: SuiteConfig | None,
    use_image: bool,
    predictor: Any,
    ood: OODConfig | None,
    noise: NoiseConfig | None,
    progress: bool,
    partial: bool,
    workers: int = 1,
) -> dict[str, Any]:
    """The body of :func:`evaluate_predictions` (under the writer lock of the results folder)."""
    cfg = suite or SuiteConfig()
    if empty is not None:
        cfg = replace(cfg, empty=empty)
    ev, incomplete = score_parallel(pred_dir, data_root, split, cfg, use_image, partial, workers)
    return write_results(ev, pred_dir, data_root, out_json, split, cfg, incomplete, predictor, ood, noise, progress)


def score_cases(
    pred_dir: str | Path,
    data_root: str | Path,
    split: str | None,
    cfg: SuiteConfig,
    use_image: bool = True,
    partial: bool = False,
    shard: tuple[int, int] | None = None,
) -> tuple[EvaluationSuite, dict[str, int] | None]:
    """Run the suite over the predicted cases (of ``split``; of the ``shard``'s block, see :func:`load_pairs`).

    Returns:
        The suite holding the cases' states and rows, and the completeness record of an incomplete folder
        (``None`` for a complete one).
    """
    ds = load_dataset(data_root)
    ev = EvaluationSuite(ds.classes, ds.raters, cfg, names_from=ds.root / DATASET_JSON)
    index = read_index(pred_dir)  # read once: the completeness record and the pairs come from it
    incomplete = check_complete(pred_dir, index, partial)
    for pair in load_pairs(pred_dir, ds, split, partial, index=index, shard=shard):
        pred = load_prediction(pred_dir, pair.case_id, entry=pair.entry, seg=False)  # seg: read by load_pairs
        samples = None if pred["samples"] is None else torch.from_numpy(pred["samples"])
        if pred["probs"] is None:  # a segmentation-only folder: its probabilities are the one-hot masks
            probs = torch.nn.functional.one_hot(torch.from_numpy(pair.seg), len(ds.classes)).movedim(-1, 0).float()
        else:
            check_seg_matches_probs(pred_dir, pair, pred["probs"])
            probs = torch.from_numpy(pred["probs"])
        try:
            ev.add_case(
                pair.case_id,
                probs,
                torch.from_numpy(pair.case.labels),
                spacing=tuple(pair.case.spacing),
                maps={k: torch.from_numpy(v) for k, v in pred["maps"].items()},
                samples=samples,
                image=torch.from_numpy(np.asarray(pair.case.image)) if use_image else None,
                qc=pair.entry.get("qc"),
                valid=None if pair.case.mask is None else torch.from_numpy(pair.case.mask),
            )
        except CaseInputError as e:
            raise e.at(culprit(pred_dir, pair.entry, e)) from None
    return ev, incomplete


def score_parallel(
    pred_dir: str | Path,
    data_root: str | Path,
    split: str | None,
    cfg: SuiteConfig,
    use_image: bool,
    partial: bool,
    workers: int,
) -> tuple[EvaluationSuite, dict[str, int] | None]:
    """:func:`score_cases` over the whole folder, its contiguous blocks scored in ``workers`` processes
    (:func:`trustseg.evaluation.parallel.run_blocks`; at most one per listed case) and merged in block order.

    Raises:
        DataError: as :func:`score_cases` (the first failing block's error, naming the file).
    """
    if check_workers(workers) > 1:
        workers = min(workers, max(1, len(read_index(pred_dir)["cases"])))
    if workers == 1:
        return score_cases(pred_dir, data_root, split, cfg, use_image, partial)
    blocks = run_blocks(score_cases, (pred_dir, data_root, split, cfg, use_image, partial), workers)
    ev, incomplete = blocks[0]
    for other, _ in blocks[1:]:
        ev.merge(other)
    return ev, incomplete


def write_results(
    ev: EvaluationSuite,
    pred_dir: str | Path,
    data_root: str | Path,
    out_json: Path,
    split: str | None,
    cfg: SuiteConfig,
    incomplete: dict[str, int] | None,
    predictor: Any = None,
    ood: OODConfig | None = None,
    noise: NoiseConfig | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """The results of a scored suite (plus the OOD and noise protocols when asked), written as ``out_json`` and
    the per-case CSV beside it (the CSV first); returns them.

    Raises:
        DataError: no case was scored.
    """
    ds = load_dataset(data_root)
    rows = ev.rows()
    if not rows:
        raise DataError(f"no predicted case to evaluate{f' in split {split!r}' if split else ''}", Path(pred_dir))
    csv_path = out_json.with_suffix(".csv")
    result = {
        "pred_dir": str(pred_dir),
        "data": str(data_root),
        "split": split,
        "empty": cfg.empty,
        **ev.result(),
        "per_case": rows,
        "csv": str(csv_path),
    }
    if incomplete is not None:
        result["partial"] = incomplete
    cases = ds.subset([r["case"] for r in rows])  # a lazy view: the protocols read one case at a time
    if ood is not None:
        result["ood"] = ood_detection(predictor, cases, ood, progress)
    if noise is not None:
        protocol = noise_protocol(predictor, cases, noise, progress)
        result["noise_robustness"] = protocol["levels"]
        result["noise_interpretability"] = protocol["interpretability"]
    text = csv_text([flatten(r) for r in rows])
    result["csv_sha256"] = hashlib.sha256(text.encode()).hexdigest()  # ties the CSV to this JSON (F6)
    atomic_write_text(csv_path, text)  # the CSV first: a JSON on disk always names the CSV it was written with
    atomic_write_json(out_json, result)
    return result


def verify_results(out_json: str | Path) -> dict[str, Any]:
    """Read a results JSON and check that the per-case CSV beside it is the one written with it.

    ``evaluate`` writes the CSV, then the JSON holding the CSV's SHA-256; a run killed between the two writes, or
    a CSV edited or replaced afterwards, leaves a mismatch that this reports instead of pairing two evaluations.

    Returns:
        The results.

    Raises:
        DataError: an unreadable JSON, a missing CSV, or a CSV whose hash differs (naming the CSV).
    """
    out_json = Path(out_json)
    try:
        result = json.loads(out_json.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read results: {e}", out_json) from None
    digest = result.get("csv_sha256") if isinstance(result, dict) else None
    csv_path = out_json.with_suffix(".csv")
    if digest is None:
        return result  # written before the hash existed: nothing to check against
    if not csv_path.is_file():
        raise DataError(f"the per-case table {csv_path.name} written with these results is missing", csv_path)
    if hashlib.sha256(csv_path.read_bytes()).hexdigest() != digest:
        raise DataError(
            f"this per-case table is not the one written with {out_json.name} (an interrupted or later evaluate?); "
            "run evaluate again",
            csv_path,
        )
    return result
