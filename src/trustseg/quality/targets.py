"""What a quality predictor predicts: the per-case target computed from the ground truth where it is known
(training and evaluation), registered by name (``trustseg qc fit --target NAME``).

Each target is a function ``(seg (*spatial) int64, labels (R, *spatial) int64, num_classes, spacing) -> float``
registered in :data:`QC_TARGETS` with the metadata

* ``higher_is_better``: Dice yes, HD95 no (the review flag catches cases *below* a Dice threshold, *above* an
  HD95 threshold);
* ``y_range``: the range predictions are clipped to;
* ``threshold``: the default review threshold (CLI ``--review-below`` / ``--review-above``).

=======  ===================================================================================================
dice     mean over foreground classes of the Dice against the raters' majority vote, a class absent from both
         maps counting 1: the evaluation suite's ``qc_dice/majority/mean``, so predicted and evaluated Dice are
         one number
hd95     mean over foreground classes of the HD95 against the majority vote in spacing units (surface
         convention, union pooling: :mod:`trustseg.metrics.surface`); a class absent from both maps counts 0, a
         class absent from exactly one counts the image diagonal (the largest distance the image allows), so
         that every case has a finite target
=======  ===================================================================================================

Example:
    >>> import torch
    >>> seg = torch.tensor([[0, 1, 1, 0]])
    >>> labels = torch.tensor([[[0, 1, 0, 0]], [[0, 1, 1, 0]], [[0, 1, 1, 0]]])  # 3 raters, majority = seg
    >>> true_quality("dice", seg, labels, num_classes=2)
    1.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from trustseg.core.errors import DataError
from trustseg.core.registry import Registry
from trustseg.data.targets import majority_vote
from trustseg.metrics.overlap import dice
from trustseg.metrics.surface import surface_metrics

#: name -> fn(seg, labels, num_classes, spacing) -> float; metadata ``higher_is_better``, ``y_range``,
#: ``threshold``.
QC_TARGETS: Registry[Callable[..., float]] = Registry("quality target")


def _register(name: str, *, higher_is_better: bool, y_range: tuple[float, float], threshold: float, doc: str):
    meta: dict[str, Any] = {"higher_is_better": higher_is_better, "y_range": y_range, "threshold": threshold}
    return QC_TARGETS.register(name, doc=doc, **meta)


@_register("dice", higher_is_better=True, y_range=(0.0, 1.0), threshold=0.7, doc="Dice vs majority (qc_dice)")
def dice_target(seg: Tensor, labels: Tensor, num_classes: int, spacing: Sequence[float] | None = None) -> float:
    """Mean foreground Dice of ``seg`` against the majority vote of ``labels``, empty-vs-empty = 1."""
    return float(dice(seg, majority_vote(labels, num_classes), num_classes, empty="one").mean())


@_register("hd95", higher_is_better=False, y_range=(0.0, float("inf")), threshold=10.0, doc="HD95 vs majority")
def hd95_target(seg: Tensor, labels: Tensor, num_classes: int, spacing: Sequence[float] | None = None) -> float:
    """Mean foreground HD95 of ``seg`` against the majority vote of ``labels`` (empty conventions above)."""
    sp = np.ones(seg.dim()) if spacing is None else np.asarray(spacing, dtype=np.float64)
    diagonal = float(np.sqrt((((np.asarray(seg.shape) - 1) * sp) ** 2).sum()))
    hd = surface_metrics(seg, majority_vote(labels, num_classes), num_classes, spacing=spacing)["hd95"]
    return float(torch.where(torch.isinf(hd), torch.full_like(hd, diagonal), hd).mean())


def true_quality(
    target: str,
    seg: Tensor | np.ndarray,
    labels: Tensor | np.ndarray,
    num_classes: int,
    spacing: Sequence[float] | None = None,
) -> float:
    """The ground-truth value of ``target`` for one predicted case.

    Args:
        target: A name registered in :data:`QC_TARGETS`.
        seg: ``(*spatial)`` predicted classes.
        labels: ``(R, *spatial)`` rater labels.
        num_classes: K, background included.
        spacing: Voxel spacing (HD95 is in its units).

    Raises:
        DataError: shapes that do not agree.
    """
    s, y = torch.as_tensor(np.asarray(seg)).long(), torch.as_tensor(np.asarray(labels)).long()
    if tuple(y.shape[1:]) != tuple(s.shape):
        raise DataError(f"labels {tuple(y.shape)} do not match the segmentation {tuple(s.shape)}")
    return QC_TARGETS.get(target)(s, y, num_classes, spacing)
