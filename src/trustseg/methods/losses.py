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


def soft_dice_loss(probs: Tensor, target: Tensor, include_background: bool = True, eps: float = 1e-5) -> Tensor:
    """Soft Dice loss, per image and class, averaged.

    ``D_bk = (2 Σ_x p_bkx y_bkx + eps) / (Σ_x p_bkx + Σ_x y_bkx + eps)`` and the loss is ``1 − mean_{b,k} D_bk``
    (classes ``k ≥ 1`` only when ``include_background`` is false). The ``eps`` in numerator and denominator makes a
    class absent from both prediction and target count as a perfect match (D = 1).

    Args:
        probs: ``(B, K, *spatial)`` probabilities.
        target: ``(B, K, *spatial)`` soft or one-hot target.
        include_background: Whether class 0 enters the mean.
        eps: Smoothing constant.

    Returns:
        Scalar loss in ``[0, 1]``.
    """
    _check(probs, target)
    if not include_background:
        if probs.shape[1] < 2:
            raise ValueError("include_background=False needs at least two classes")
        probs, target = probs[:, 1:], target[:, 1:]
    dims = tuple(range(2, probs.dim()))
    inter = (probs * target).sum(dims)
    denom = probs.sum(dims) + target.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice.mean()


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy with a soft target: ``mean_{b,x} [ −Σ_k y_bkx log softmax(z)_bkx ]``.

    Args:
        logits: ``(B, K, *spatial)``.
        target: ``(B, K, *spatial)`` distributions over K.

    Returns:
        Scalar loss (equals the usual cross-entropy for one-hot targets).
    """
    _check(logits, target)
    return -(target * torch.log_softmax(logits, dim=1)).sum(1).mean()


def dice_ce_loss(logits: Tensor, target: Tensor, w_dice: float = 1.0, w_ce: float = 1.0) -> Tensor:
    """``w_dice · soft_dice_loss(softmax(z), y) + w_ce · soft_cross_entropy(z, y)`` (background included).

    Args:
        logits: ``(B, K, *spatial)``.
        target: ``(B, K, *spatial)``.
        w_dice: Weight of the Dice term.
        w_ce: Weight of the cross-entropy term.

    Returns:
        Scalar loss.
    """
    return w_dice * soft_dice_loss(torch.softmax(logits, 1), target) + w_ce * soft_cross_entropy(logits, target)
