"""Overlap metrics for integer class maps: Dice and IoU per class, a streaming confusion-count accumulator, and
Dice against several raters (each rater, majority vote, CURVAS consensus regions).

Conventions (see ``docs/metrics_segmentation.md``):

- Per class k (one-vs-rest), with TP/FP/FN counted over all voxels:
  ``Dice_k = 2 TP / (2 TP + FP + FN)`` and ``IoU_k = TP / (TP + FP + FN)``.
- **Empty policy**, when a class is absent from both prediction and target (``TP + FP + FN = 0``):
  ``"one"`` -> 1 (perfect agreement, the default), ``"nan"`` -> NaN (callers skip it with
  :func:`trustseg.metrics.reduction.nanmean`), ``"zero"`` -> 0.
- ``include_background=False`` drops class 0 from the output (shape ``(K - 1,)``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from trustseg.core.errors import DataError
from trustseg.data.rater_codes import CodeTables
from trustseg.data.targets import majority_vote
from trustseg.measures.image import pooled_foreground_dice
from trustseg.metrics.reduction import nanmean
from trustseg.metrics.registry import METRICS
from trustseg.metrics.voxel_stats import CHUNK, spans

# Re-exported here, where they used to live: ``majority_vote`` (data.targets), ``pooled_foreground_dice``
# (measures.image), ``nanmean`` (metrics.reduction).
__all__ = [
    "ConfusionCounts",
    "confusion_counts",
    "consensus_dice",
    "dice",
    "dice_from_counts",
    "dice_vs_raters",
    "dice_vs_raters_from_joint",
    "joint_counts",
    "empty_value",
    "iou",
    "iou_from_counts",
    "majority_vote",
    "nanmean",
    "pooled_foreground_dice",
]

EmptyPolicy = Literal["one", "nan", "zero"]
_EMPTY_VALUES = {"one": 1.0, "nan": float("nan"), "zero": 0.0}


def _as_int(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """``x`` as an integer or bool tensor, without a copy (uint8 class maps stay uint8; widened per chunk)."""
    t = torch.as_tensor(x)
    if t.is_floating_point() or t.is_complex():
        raise DataError(f"{name} must be an integer or bool class map, got dtype {t.dtype}")
    return t


def _check_classes(t: torch.Tensor, num_classes: int, name: str) -> None:
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise DataError(f"{name} holds labels outside [0, {num_classes}): min {int(t.min())}, max {int(t.max())}")


def empty_value(empty: str) -> float:
    """The value given to a class absent from both prediction and target under policy ``empty``."""
    if empty not in _EMPTY_VALUES:
        raise ValueError(f"empty must be one of {sorted(_EMPTY_VALUES)}, got {empty!r}")
    return _EMPTY_VALUES[empty]


def confusion_counts(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    num_classes: int,
    batch: bool = False,
    chunk: int = CHUNK,
) -> torch.Tensor:
    """Per-class one-vs-rest TP/FP/FN/TN counts of two class maps.

    Args:
        pred: Predicted class map ``(*spatial)`` or ``(B, *spatial)`` with ``batch=True``; ints in ``[0, K)``.
        target: Reference class map, same shape.
        num_classes: K, background included.
        batch: Whether the first axis is a batch axis (counts are kept per item).
        chunk: Voxels per ``bincount`` (temporaries ``O(chunk)``).

    Returns:
        int64 ``(K, 4)`` (or ``(B, K, 4)``), columns ``TP, FP, FN, TN``, from ``bincount`` of ``target * K +
        pred`` (chunk by chunk): the diagonal of the K×K confusion matrix is TP, column sums minus it FP, row
        sums minus it FN, and TN is the rest.
    """
    p, t = _as_int(pred, "pred"), _as_int(target, "target")
    if p.shape != t.shape:
        raise DataError(f"pred and target shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
    _check_classes(p, num_classes, "pred")
    _check_classes(t, num_classes, "target")
    k = num_classes
    if not batch:
        p, t = p.unsqueeze(0), t.unsqueeze(0)
    b = p.shape[0]
    cm = torch.zeros(b, k * k, dtype=torch.int64)  # [b, target * K + pred]
    for i in range(b):  # per item and chunk of voxels: no (B, N) index temporaries (an expanded pred stays a view)
        pi, ti = p[i].reshape(-1), t[i].reshape(-1)
        for a, e in spans(pi.numel(), chunk):
            cm[i] += torch.bincount(ti[a:e].long() * k + pi[a:e].long(), minlength=k * k)
    n = p[0].numel() if b else 0
    cm = cm.reshape(b, k, k)
    tp = cm.diagonal(dim1=1, dim2=2)
    fp = cm.sum(1) - tp
    fn = cm.sum(2) - tp
    tn = n - tp - fp - fn
    out = torch.stack([tp, fp, fn, tn], dim=-1)
    return out if batch else out[0]


def _ratio(num: torch.Tensor, den: torch.Tensor, empty: str) -> torch.Tensor:
    num, den = num.double(), den.double()
    out = num / den.clamp_min(1)
    return torch.where(den == 0, torch.full_like(out, empty_value(empty)), out)


def dice_from_counts(
    counts: torch.Tensor, empty: EmptyPolicy = "one", include_background: bool = False
) -> torch.Tensor:
    """Dice ``2TP / (2TP + FP + FN)`` per class from ``(..., K, 4)`` counts; see :func:`dice`."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    out = _ratio(2 * tp, 2 * tp + fp + fn, empty)
    return out if include_background else out[..., 1:]


def iou_from_counts(counts: torch.Tensor, empty: EmptyPolicy = "one", include_background: bool = False) -> torch.Tensor:
    """IoU ``TP / (TP + FP + FN)`` per class from ``(..., K, 4)`` counts; see :func:`iou`."""
    tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
    out = _ratio(tp, tp + fp + fn, empty)
    return out if include_background else out[..., 1:]


@METRICS.register("dice", doc="per-class Dice 2TP/(2TP+FP+FN) of class maps; empty policy one|nan|zero")
def dice(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    num_classes: int,
    empty: EmptyPolicy = "one",
    include_background: bool = False,
    batch: bool = False,
) -> torch.Tensor:
    """Per-class Dice of two integer class maps.

    ``Dice_k = 2 |P_k ∩ T_k| / (|P_k| + |T_k|) = 2TP / (2TP + FP + FN)``.

    Args:
        pred: Predicted class map ``(*spatial)`` (or ``(B, *spatial)`` with ``batch=True``).
        target: Reference class map, same shape.
        num_classes: K, background included.
        empty: Value when class k is in neither map: ``"one"`` -> 1, ``"nan"`` -> NaN, ``"zero"`` -> 0.
        include_background: Keep class 0 in the output.
        batch: Treat the first axis as a batch axis.

    Returns:
        float64 ``(K,)`` or ``(K - 1,)`` (``(B, K)`` / ``(B, K - 1)`` when batched).
    """
    return dice_from_counts(confusion_counts(pred, target, num_classes, batch), empty, include_background)


@METRICS.register("iou", doc="per-class IoU TP/(TP+FP+FN) of class maps; empty policy one|nan|zero")
def iou(
    pred: torch.Tensor | np.ndarray,
    target: torch.Tensor | np.ndarray,
    num_classes: int,
    empty: EmptyPolicy = "one",
    include_background: bool = False,
    batch: bool = False,
) -> torch.Tensor:
    """Per-class IoU (Jaccard) of two integer class maps, ``IoU_k = TP / (TP + FP + FN)``.

    Arguments and output shapes as :func:`dice`.
    """
    return iou_from_counts(confusion_counts(pred, target, num_classes, batch), empty, include_background)


class ConfusionCounts:
    """Streaming per-class TP/FP/FN/TN counts: fixed ``(K, 4)`` int64 state, merged by summation.

    Dice/IoU from the accumulated counts are the *pooled* (micro) values over everything seen, e.g. over the
    chunks of one volume (equal to the one-shot value) or over a whole data set.

    Args:
        num_classes: K, background included.
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.counts = torch.zeros(num_classes, 4, dtype=torch.int64)

    def update(self, pred: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> ConfusionCounts:
        """Add the counts of one pair of class maps (any matching shapes)."""
        self.counts += confusion_counts(pred, target, self.num_classes)
        return self

    def merge(self, other: ConfusionCounts) -> ConfusionCounts:
        """Add another accumulator's counts (e.g. from another process)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge counts of {other.num_classes} classes into {self.num_classes}")
        self.counts += other.counts
        return self

    def dice(self, empty: EmptyPolicy = "one", include_background: bool = False) -> torch.Tensor:
        """Pooled per-class Dice of everything seen; see :func:`dice`."""
        return dice_from_counts(self.counts, empty, include_background)

    def iou(self, empty: EmptyPolicy = "one", include_background: bool = False) -> torch.Tensor:
        """Pooled per-class IoU of everything seen; see :func:`iou`."""
        return iou_from_counts(self.counts, empty, include_background)


def consensus_dice(
    pred: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    num_classes: int,
    empty: EmptyPolicy = "one",
    include_background: bool = False,
) -> torch.Tensor:
    """Dice on the consensus regions (CURVAS convention), per class.

    For class k: consensus foreground ``C⁺ = {all raters say k}``, consensus background ``C⁻ = {no rater says k}``,
    dissensus (the rest) is ignored. ``Dice_k = 2|P_k ∩ C⁺| / (|P_k ∩ (C⁺ ∪ C⁻)| + |C⁺|)``. This is the one
    implementation: the CURVAS volumetric Dice (:func:`trustseg.metrics.curvas.consensus_dice`) calls it on the
    binary problem "organ or not" (with ``empty="nan"``, its default).

    Args:
        pred: Predicted class map ``(*spatial)``.
        labels: Rater class maps ``(R, *spatial)``.
        num_classes: K.
        empty: Policy when the denominator is 0, i.e. ``C⁺`` is empty and the prediction has no class-k voxel in
            the consensus region: ``"one"`` -> 1, ``"nan"`` -> NaN, ``"zero"`` -> 0.
        include_background: Keep class 0.

    Returns:
        float64 ``(K,)`` or ``(K - 1,)``.

    Example:
        >>> labels = torch.tensor([[[1, 1, 0, 0]], [[1, 0, 1, 0]]])  # C⁺ = {0}, C⁻ = {3}, dissensus {1, 2}
        >>> consensus_dice(torch.tensor([[1, 1, 1, 1]]), labels, 2)  # 2·1 / (|{0, 3}| + 1)
        tensor([0.6667], dtype=torch.float64)
    """
    p, y = _as_int(pred, "pred"), _as_int(labels, "labels")
    if y.shape[1:] != p.shape:
        raise DataError(f"labels {tuple(y.shape)} must be (R, *pred.shape) with pred {tuple(p.shape)}")
    _check_classes(p, num_classes, "pred")
    _check_classes(y, num_classes, "labels")
    counts = torch.zeros(num_classes, 2, dtype=torch.int64)  # per class: 2|P ∩ C⁺|, |P ∩ (C⁺ ∪ C⁻)| + |C⁺|
    for k in range(0 if include_background else 1, num_classes):
        hit = y == k  # (R, *spatial): one bool map per class, never a one-hot of all classes
        fg, region = hit.all(0), ~(hit.any(0) & ~hit.all(0))
        pk = p == k
        # count_nonzero: a bool .sum() widens to int64 (an int64 temporary of the volume)
        counts[k, 0] = 2 * int(torch.count_nonzero(pk & fg))
        counts[k, 1] = int(torch.count_nonzero(pk & region)) + int(torch.count_nonzero(fg))
    out = _ratio(counts[:, 0], counts[:, 1], empty)
    return out if include_background else out[1:]


@METRICS.register("dice_vs_raters", doc="Dice vs each rater, their mean, the majority vote and CURVAS consensus")
def dice_vs_raters(
    pred: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    num_classes: int,
    empty: EmptyPolicy = "one",
    include_background: bool = False,
    majority: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Per-class Dice of one prediction against several raters.

    Args:
        pred: Predicted class map ``(*spatial)``.
        labels: Rater class maps ``(R, *spatial)``.
        num_classes: K.
        empty: Empty policy (see :func:`dice`).
        include_background: Keep class 0.
        majority: The raters' majority vote when the caller has it (saves computing it again).

    Returns:
        ``{"rater_0": (C,), ..., "rater_{R-1}": (C,), "mean_rater": (C,), "majority": (C,), "consensus": (C,)}``
        with C = K or K - 1. ``mean_rater`` is the NaN-skipping mean of the per-rater values, ``majority`` the Dice
        against :func:`trustseg.data.targets.majority_vote` (ties to the lower class), ``consensus`` is
        :func:`consensus_dice`.
    """
    y = _as_int(labels, "labels")
    p = _as_int(pred, "pred")
    if y.ndim != p.ndim + 1 or y.shape[1:] != p.shape:
        raise DataError(f"labels {tuple(y.shape)} must be (R, *pred.shape) with pred {tuple(p.shape)}")
    per_rater = dice(p.expand_as(y), y, num_classes, empty, include_background, batch=True)  # (R, C)
    out = {f"rater_{i}": per_rater[i] for i in range(y.shape[0])}
    out["mean_rater"] = nanmean(per_rater, dim=0)
    vote = majority_vote(y, num_classes) if majority is None else majority
    out["majority"] = dice(p, vote, num_classes, empty, include_background)
    out["consensus"] = consensus_dice(p, y, num_classes, empty, include_background)
    return out


def joint_counts(pred: torch.Tensor, code: torch.Tensor, num_classes: int, num_codes: int, chunk: int = CHUNK):
    """``(K, C)`` int64 counts of the pairs (predicted class, rater code) (:mod:`trustseg.data.rater_codes`): one
    ``bincount`` of ``pred · C + code`` per chunk, the only pass over the voxels that
    :func:`dice_vs_raters_from_joint` needs.

    Args:
        pred: ``(*spatial)`` predicted class map in ``[0, K)`` (any integer dtype).
        code: ``(*spatial)`` rater codes in ``[0, C)``, same shape.
        num_classes: K.
        num_codes: C.
        chunk: Voxels per ``bincount``.

    Example:
        >>> joint_counts(torch.tensor([0, 1, 1]), torch.tensor([2, 0, 0]), 2, 3).tolist()
        [[0, 0, 1], [2, 0, 0]]
    """
    p, c = pred.reshape(-1), code.reshape(-1)
    if p.shape != c.shape:
        raise DataError(f"pred and code shapes differ: {tuple(pred.shape)} vs {tuple(code.shape)}")
    _check_classes(p, num_classes, "pred")
    kc = num_classes * num_codes
    out = torch.zeros(kc, dtype=torch.int64)
    for a, b in spans(p.numel(), chunk):
        key = p[a:b].long().mul_(num_codes).add_(c[a:b])
        out += torch.bincount(key, minlength=kc)
    return out.view(num_classes, num_codes)


def _counts_of_target(joint: torch.Tensor, target_of_code: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(K, 4)`` TP/FP/FN/TN of the prediction against the target ``target_of_code[code]`` from the joint counts."""
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)  # [target, pred], as confusion_counts
    cm.index_add_(0, target_of_code.long(), joint.T.contiguous())
    tp = cm.diagonal()
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    return torch.stack([tp, fp, fn, cm.sum() - tp - fp - fn], dim=-1)


def dice_vs_raters_from_joint(
    joint: torch.Tensor,
    tables: CodeTables,
    empty: EmptyPolicy = "one",
    include_background: bool = False,
) -> dict[str, torch.Tensor]:
    """:func:`dice_vs_raters` (same keys, same values: the counts are exact) from the :func:`joint_counts` of the
    prediction and the rater codes, plus ``"iou_majority"`` (:func:`iou` against the majority vote) and
    ``"counts_majority"`` (the ``(K, 4)`` counts against the majority vote).

    Every target is a function of the code (:class:`~trustseg.data.rater_codes.CodeTables`), so its confusion
    matrix is the joint counts summed over the codes of each target class; the consensus Dice of class k counts
    ``2|P_k ∩ C⁺|`` and ``|P_k ∩ (C⁺ ∪ C⁻)| + |C⁺|`` over the codes of ``C⁺`` (all raters say k) and ``C⁻`` (none).

    Args:
        joint: ``(K, C)`` counts of (predicted class, code).
        tables: The code tables of the K classes and R raters.
        empty: Empty policy (see :func:`dice`).
        include_background: Keep class 0.

    Example:
        >>> from trustseg.data.rater_codes import code_tables, rater_code
        >>> labels = torch.tensor([[1, 1, 0, 0], [1, 0, 1, 0]])
        >>> pred = torch.tensor([1, 1, 1, 1])
        >>> joint = joint_counts(pred, rater_code(labels, 2), 2, 4)
        >>> d = dice_vs_raters_from_joint(joint, code_tables(2, 2))
        >>> d["consensus"], d["rater_0"]
        (tensor([0.6667], dtype=torch.float64), tensor([0.6667], dtype=torch.float64))
    """
    k = joint.shape[0]
    per_rater = torch.stack([_counts_of_target(joint, lab, k) for lab in tables.labels])  # (R, K, 4)
    d_r = dice_from_counts(per_rater, empty, include_background)
    out = {f"rater_{i}": d_r[i] for i in range(d_r.shape[0])}
    out["mean_rater"] = nanmean(d_r, dim=0)
    maj = _counts_of_target(joint, tables.majority, k)
    out["majority"] = dice_from_counts(maj, empty, include_background)
    fg = tables.all_k.long()  # (K, C)
    region = (~(tables.any_k & ~tables.all_k)).long()
    num = 2 * (joint * fg).sum(1)
    den = (joint * region).sum(1) + (joint.sum(0) * fg).sum(1)
    cons = _ratio(num, den, empty)
    out["consensus"] = cons if include_background else cons[1:]
    out["iou_majority"] = iou_from_counts(maj, empty, include_background)
    out["counts_majority"] = maj
    return out
