"""The cases a QC model reads: a prediction folder's cases as :class:`~trustseg.quality.inputs.CaseInput`, with
their true quality when a dataset with labels is given, and the image when the CNN predictor needs it.

Images come from the dataset (``data``), from the inputs the folder was predicted from (``images``: a folder,
files or a dataset root, as ``trustseg predict`` takes them), or else from each case's recorded ``source`` file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trustseg.core.errors import DataError
from trustseg.data.dataset import Dataset, load_dataset
from trustseg.data.io import has_known_ext, read_image
from trustseg.data.predictions import check_complete, index_path, load_prediction, read_index
from trustseg.engine.prediction_folder import iter_inputs
from trustseg.evaluation.evaluate import load_pairs
from trustseg.methods.base import METHODS
from trustseg.quality.inputs import CaseInput, case_input
from trustseg.quality.targets import true_quality


@dataclass
class QCCase:
    """One case of a QC fit or prediction.

    Attributes:
        inp: The prediction (and image).
        truth: The true quality (target of the fit), or None without labels.
        group: The case's group in the dataset (patient), or None: the calibration split keeps groups whole.
    """

    inp: CaseInput
    truth: float | None = None
    group: str | None = None


def samples_are_heads(index: dict[str, Any]) -> bool:
    """Whether the folder's method predicts layer-ensemble heads (its registered class says so)."""
    method = str(index.get("method"))
    return bool(method in METHODS and getattr(METHODS.get(method), "samples_are_heads", False))


def _image_source(
    pred_dir: Path, images: str | Path | Sequence[str | Path] | None
) -> Callable[[dict[str, Any]], np.ndarray | None]:
    """A function giving a case's image ``(C, *spatial)`` from ``images`` or its recorded source (None if none)."""
    loaders = {load.case_id: load for load in iter_inputs(images)} if images is not None else None

    def image(entry: dict[str, Any]) -> np.ndarray | None:
        if loaders is not None:
            if entry["id"] not in loaders:
                raise DataError(f"case {entry['id']!r} has no image among the inputs {images}", index_path(pred_dir))
            return loaders[entry["id"]]().image
        src = Path(str(entry.get("source", "")))
        return read_image(src).array if src.is_file() and has_known_ext(src) else None

    return image


def read_cases(
    pred_dir: str | Path,
    data: str | Path | Dataset | None = None,
    *,
    target: str = "dice",
    with_image: bool = False,
    images: str | Path | Sequence[str | Path] | None = None,
    split: str | None = None,
    partial: bool = False,
    index: dict[str, Any] | None = None,
) -> Iterator[QCCase]:
    """Yield the cases of a prediction folder, one at a time (nothing is kept: memory stays one case).

    Args:
        pred_dir: A folder written by ``trustseg predict`` (with probabilities; ``--samples`` adds the
            sample-based features).
        data: The dataset with the rater labels: gives ``truth`` (the ``target``), groups and images.
        target: The quality target (:data:`~trustseg.quality.targets.QC_TARGETS`).
        with_image: Attach each case's image (the CNN predictor's input).
        images: Where images come from when ``data`` is not given (see the module docstring).
        split: Only the cases of this dataset split (needs ``data``).
        partial: Accept a folder marked incomplete.
        index: The folder's ``predictions.json`` when the caller has read it already (else it is read here).

    Raises:
        DataError: no prediction folder, an incomplete one without ``partial``, a case missing from the dataset
            or of another shape, a case without probabilities, or no image where one is needed.
    """
    pred_dir = Path(pred_dir)
    index = read_index(pred_dir) if index is None else index
    heads = samples_are_heads(index)
    if data is not None:  # the evaluation's pairing: completeness, duplicates, membership and shapes checked there
        ds = data if isinstance(data, Dataset) else load_dataset(data)
        for pair in load_pairs(pred_dir, ds, split, partial, index=index):
            loaded = {**load_prediction(pred_dir, pair.case_id, entry=pair.entry, seg=False), "seg": pair.seg}
            case = pair.case
            truth = true_quality(target, pair.seg, case.labels, len(ds.classes), case.spacing)
            image = np.asarray(case.image) if with_image else None
            inp = case_input(pair.case_id, loaded, layer_heads=heads, spacing=case.spacing, image=image)
            yield QCCase(inp, truth, case.group)
        return
    if split:
        raise DataError("a split needs the dataset (--data)", index_path(pred_dir))
    check_complete(pred_dir, index, partial)
    image_of = _image_source(pred_dir, images) if with_image else None
    seen: set[str] = set()
    for entry in index["cases"]:
        cid = entry["id"]
        if cid in seen:
            raise DataError(f"case {cid!r} is listed more than once", index_path(pred_dir))
        seen.add(cid)
        loaded = load_prediction(pred_dir, cid, entry=entry)
        image = image_of(entry) if image_of is not None else None
        if with_image and image is None:
            raise DataError(
                f"case {cid!r}: the CNN predictor needs its image; give the dataset (--data) or the inputs "
                "(--images) it was predicted from",
                index_path(pred_dir),
            )
        yield QCCase(case_input(cid, loaded, layer_heads=heads, spacing=loaded["spacing"], image=image))


def truths(cases: Sequence[QCCase]) -> np.ndarray:
    """The true quality of each case ``(N,)`` float64 (raises when a case has none)."""
    missing = [c.inp.case_id for c in cases if c.truth is None]
    if missing:
        raise DataError(f"cases {missing[:5]} have no true quality (fit needs the dataset's labels)")
    return np.asarray([c.truth for c in cases], dtype=np.float64)


def drop_samples(case: QCCase) -> QCCase:
    """The case without its samples (after its features are computed: only the CNN's channels stay needed)."""
    case.inp.samples = None
    return case


__all__ = ["QCCase", "drop_samples", "read_cases", "samples_are_heads", "truths"]
