"""Segmentation losses on soft targets, shared by the methods.

Targets ``y`` are ``(B, K, *spatial)`` class distributions (one-hot for a single rater, the soft label ȳ for
several); predictions are probabilities ``p`` or logits ``z`` of the same shape.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if pred.dim() < 3:
        raise ValueError(f"expected (B, K, *spatial), got {tuple(pred.shape)}")


def voxel_weight(weight: Tensor | None, like: Tensor) -> Tensor | None:
    """A ``(B, *spatial)`` voxel weight (e.g. a batch's field-of-view ``valid`` map) as ``(B, 1, *spatial)`` in
    ``like``'s dtype, or ``None`` (every voxel weighs 1).

    Raises:
        ValueError: a weight whose shape is not ``like``'s without the class axis.
    """
    if weight is None:
        return None
    if tuple(weight.shape) != (like.shape[0], *like.shape[2:]):
        raise ValueError(f"voxel weight {tuple(weight.shape)} does not match (B, *spatial) of {tuple(like.shape)}")
    return weight.to(like.dtype).unsqueeze(1)


def weighted_mean(values: Tensor, weight: Tensor | None) -> Tensor:
    """``Σ w·v / Σ w`` over every element (the plain mean when ``weight`` is ``None``); ``weight`` broadcasts to
    ``values``. An all-zero weight gives 0 (nothing to learn from), not NaN.

    Example:
        >>> weighted_mean(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 0.0])).item()
        1.0
    """
    if weight is None:
        return values.mean()
    w = weight.expand_as(values)
    return (values * w).sum() / w.sum().clamp_min(1.0)


def soft_dice_loss(
    probs: Tensor, target: Tensor, include_background: bool = True, eps: float = 1e-5, weight: Tensor | None = None
) -> Tensor:
    """Soft Dice loss, per image and class, averaged.

    ``D_bk = (2 Σ_x p_bkx y_bkx + eps) / (Σ_x p_bkx + Σ_x y_bkx + eps)`` and the loss is ``1 − mean_{b,k} D_bk``
    (classes ``k ≥ 1`` only when ``include_background`` is false). The ``eps`` in numerator and denominator makes a
    class absent from both prediction and target count as a perfect match (D = 1).

    Args:
        probs: ``(B, K, *spatial)`` probabilities.
        target: ``(B, K, *spatial)`` soft or one-hot target.
        include_background: Whether class 0 enters the mean.
        eps: Smoothing constant.
        weight: ``(B, *spatial)`` voxel weight (a field of view: 1 inside, 0 outside), multiplying ``p`` and ``y``
            in every sum; ``None``: all voxels.

    Returns:
        Scalar loss in ``[0, 1]``.
    """
    _check(probs, target)
    w = voxel_weight(weight, probs)
    if w is not None:
        probs, target = probs * w, target * w
    if not include_background:
        if probs.shape[1] < 2:
            raise ValueError("include_background=False needs at least two classes")
        probs, target = probs[:, 1:], target[:, 1:]
    dims = tuple(range(2, probs.dim()))
    inter = (probs * target).sum(dims)
    denom = probs.sum(dims) + target.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice.mean()


def soft_cross_entropy(logits: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
    """Cross-entropy with a soft target: ``mean_{b,x} [ −Σ_k y_bkx log softmax(z)_bkx ]``.

    Args:
        logits: ``(B, K, *spatial)``.
        target: ``(B, K, *spatial)`` distributions over K.
        weight: ``(B, *spatial)`` voxel weight; the mean becomes ``Σ_x w_x ce_x / Σ_x w_x``.

    Returns:
        Scalar loss (equals the usual cross-entropy for one-hot targets).
    """
    _check(logits, target)
    ce = -(target * torch.log_softmax(logits, dim=1)).sum(1, keepdim=True)
    return weighted_mean(ce, voxel_weight(weight, logits))


def dice_ce_loss(
    logits: Tensor, target: Tensor, w_dice: float = 1.0, w_ce: float = 1.0, weight: Tensor | None = None
) -> Tensor:
    """``w_dice · soft_dice_loss(softmax(z), y) + w_ce · soft_cross_entropy(z, y)`` (background included).

    Args:
        logits: ``(B, K, *spatial)``.
        target: ``(B, K, *spatial)``.
        w_dice: Weight of the Dice term.
        w_ce: Weight of the cross-entropy term.
        weight: ``(B, *spatial)`` voxel weight of both terms (``None``: all voxels).

    Returns:
        Scalar loss.
    """
    dice = soft_dice_loss(torch.softmax(logits, 1), target, weight=weight)
    return w_dice * dice + w_ce * soft_cross_entropy(logits, target, weight=weight)
