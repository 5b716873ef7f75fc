"""Bring saved probabilities of any tool into trustseg: ``trustseg import-predictions SRC --data DATA --out PRED``
(and ``trustseg evaluate --pred SRC`` on such a folder, which converts it first).

Each case's members ``(M, K, *spatial)`` (:mod:`trustseg.data.saved_predictions`: one stacked file per case, one
file per member, or one folder per member, e.g. nnU-Net folds) become a :class:`~trustseg.core.predictive.Predictive`
and go through the same :class:`~trustseg.engine.prediction_folder.FolderWriter` as ``trustseg predict``: the same
files, the same measures (entropy, MI, EPKL, variance, ... from the members), the samples (with M > 1), and the same
``predictions.json``. The evaluation of the result is therefore that of trustseg's own predictions made of the
same probabilities.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch

from trustseg.core.errors import ConfigError, DataError
from trustseg.core.lock import exclusive
from trustseg.core.predictive import Predictive
from trustseg.data.dataset import load_dataset
from trustseg.data.predictions import INDEX
from trustseg.data.saved_predictions import SpatialOrder, read_saved, scan_saved
from trustseg.engine.prediction_folder import FolderWriter, InputItem, check_out_dir

#: Largest deviation of Σ_k p_k from 1 accepted as probabilities (float16 storage rounds to ~1e-3).
SUM_TOLERANCE = 1e-2


def to_probabilities(members: np.ndarray, kind: Literal["probs", "logits"], where: Path) -> np.ndarray:
    """Members ``(M, K, *sp)`` as probabilities: softmax over K of logits; probabilities checked (finite, in
    [0, 1], summing to 1 within :data:`SUM_TOLERANCE`) and renormalised (kept as saved when they sum to 1 within
    1e-5).

    Raises:
        DataError: non-finite values, or probabilities that are not (naming the file and ``--logits``).
    """
    if not np.isfinite(members).all():
        raise DataError(f"saved {kind} contain NaN or infinite values", where)
    if kind == "logits":
        return torch.softmax(torch.from_numpy(members), 1).numpy()
    low, high, off = float(members.min()), float(members.max()), float(np.abs(members.sum(1) - 1).max())
    if low < -1e-6 or high > 1 + 1e-6 or off > SUM_TOLERANCE:
        raise DataError(
            f"the arrays are not probabilities over the K={members.shape[1]} classes (values in "
            f"[{low:.3g}, {high:.3g}], class sums up to {off:.3g} from 1); if they are logits, pass --logits",
            where,
        )
    if off <= 1e-5:  # probabilities to float32 rounding: kept exactly as saved
        return members
    clipped = np.clip(members, 0, 1)
    return clipped / clipped.sum(1, keepdims=True)


def import_predictions(
    src: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    split: str | None = None,
    kind: Literal["probs", "logits"] = "probs",
    key: str | None = None,
    spatial_order: SpatialOrder = "auto",
    measures: str | None = None,
    method: str = "imported",
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Convert a folder of saved probabilities into a trustseg prediction folder.

    Args:
        src: The folder (layouts in :mod:`trustseg.data.saved_predictions`).
        data: The dataset the predictions are of (case ids, shapes, geometry, class names).
        out: The prediction folder to write (refused when it is ``src`` or inside it).
        split: Only the cases of this split must be present (default: every dataset case found in ``src``).
        kind: ``probs`` (checked) or ``logits`` (softmax over the class axis).
        key: The ``.npz`` array to read (default ``probabilities``, ``probs``, ``array`` or the only one).
        spatial_order: See :func:`~trustseg.data.saved_predictions.read_saved`.
        measures: Measures to write (comma list; default every measure the members support).
        method: The method name recorded in ``predictions.json``.
        overwrite: Replace an earlier prediction folder at ``out``.
        progress: Show a progress bar.

    Returns:
        ``out`` (``predictions.json`` complete).

    Raises:
        ConfigError: ``out`` inside ``src``; ``src`` a trustseg prediction folder already; an earlier folder at
            ``out`` without ``overwrite``.
        DataError: no saved case, a case of ``split`` missing, or an array that is not this case's probabilities.
    """
    src, out = Path(src), Path(out)
    check_out_dir(src, out)
    if (src / INDEX).is_file():
        raise ConfigError(f"{src} is already a trustseg prediction folder ({INDEX}): evaluate it as it is")
    ds = load_dataset(data)
    wanted = ds.split(split) if split else ds.ids
    found = scan_saved(src, wanted)
    if split:
        missing = [c for c in wanted if c not in found]
        if missing:
            raise DataError(f"{len(missing)} cases of split {split!r} have no saved probabilities: {missing[:5]}", src)
    info = {"method": method, "classes": ds.classes, "run_dir": None, "source": str(src)}
    with exclusive(out, "prediction folder"):
        writer = FolderWriter(out, info, measures, save_samples=True)
        writer.begin(list(found), overwrite=overwrite)
        for cid in writer.track([lambda c=c: c for c in found], progress):
            case, files = ds[cid], found[cid]
            members = read_saved(files, case.labels.shape[1:], ds.num_classes, key=key, spatial_order=spatial_order)
            probs = to_probabilities(members, kind, files[0])
            geometry = (case.spacing, case.origin, case.meta.get("affine"))
            item = InputItem(cid, files[0], case.image, *geometry, ds.file_ext)
            writer.write(item, Predictive(torch.from_numpy(probs)[:, None]))
        return writer.finish()
