"""The soft Dice confidence (SDC; Borges et al., arXiv 2402.10665): a tuning-free estimate of a segmentation's
Dice from its own probabilities, the no-training baseline every quality predictor must beat.

For a class with probabilities ``p_i`` and the predicted mask ``ŷ_i`` (the segmentation's voxels of that class)::

    SDC = 2 Σ_i ŷ_i p_i / Σ_i (ŷ_i + p_i)

It is the Dice between ``ŷ`` and ``p`` read as a soft mask: for a binary ``p`` it is the Dice of ``ŷ`` and ``p``;
for a calibrated ``p`` it approximates the expected Dice of ``ŷ`` against a true mask drawn voxel-wise from
``Bernoulli(p)`` (the ratio of the expectations of the Dice's numerator and denominator).

Empty prediction (our convention; the paper does not treat it): with ``Σ ŷ = 0`` the Dice is 1 if the true mask
is empty too and 0 otherwise (the evaluation's ``qc_dice`` convention), so its expectation under independent
``Bernoulli(p_i)`` voxels is ``Π_i (1 − p_i)``, which is what SDC returns then (1 for ``p ≡ 0``).

Per case, :func:`soft_dice_confidence` gives one value per foreground class and their mean, matching the
target ``qc_dice`` (the mean over foreground classes of the per-class Dice).
"""

from __future__ import annotations

import torch
from torch import Tensor

from trustseg.core.errors import DataError


def soft_dice_confidence_binary(p: Tensor, pred: Tensor) -> Tensor:
    """SDC of one class: ``p`` ``(*spatial)`` probabilities, ``pred`` ``(*spatial)`` bool predicted mask.

    Returns:
        A float64 scalar tensor in ``[0, 1]``.

    Example:
        >>> p = torch.tensor([0.9, 0.8, 0.3, 0.0])
        >>> soft_dice_confidence_binary(p, p > 0.5)  # 2 (0.9 + 0.8) / (2 + 2.0)
        tensor(0.8500, dtype=torch.float64)
        >>> soft_dice_confidence_binary(torch.tensor([0.1, 0.2]), torch.tensor([False, False]))  # 0.9 * 0.8
        tensor(0.7200, dtype=torch.float64)
    """
    if p.shape != pred.shape:
        raise DataError(f"soft Dice confidence: probabilities {tuple(p.shape)} vs mask {tuple(pred.shape)}")
    q = p.double().clamp(0, 1)
    y = pred.bool()
    if not bool(y.any()):
        return torch.exp(torch.log1p(-q.clamp(max=1 - 1e-12)).sum())
    return 2 * q[y].sum() / (y.sum() + q.sum())


def soft_dice_confidence(probs: Tensor, seg: Tensor) -> tuple[Tensor, Tensor]:
    """Per-class SDC and their mean for one case.

    Args:
        probs: ``(K, *spatial)`` class probabilities p̄.
        seg: ``(*spatial)`` predicted classes.

    Returns:
        ``(per_class (K − 1,), mean)`` float64, classes ``1 .. K − 1``.

    Raises:
        DataError: shapes that do not agree, or non-finite probabilities.

    Example:
        >>> probs = torch.tensor([[0.1, 0.2, 0.7, 1.0], [0.9, 0.8, 0.3, 0.0]])
        >>> per_class, mean = soft_dice_confidence(probs, probs.argmax(0))
        >>> per_class, mean
        (tensor([0.8500], dtype=torch.float64), tensor(0.8500, dtype=torch.float64))
    """
    if probs.dim() != seg.dim() + 1 or tuple(probs.shape[1:]) != tuple(seg.shape):
        raise DataError(f"soft Dice confidence: probabilities {tuple(probs.shape)} vs segmentation {tuple(seg.shape)}")
    if not bool(torch.isfinite(probs).all()):
        raise DataError("soft Dice confidence: probabilities contain NaN or infinite values")
    vals = torch.stack([soft_dice_confidence_binary(probs[k], seg == k) for k in range(1, probs.shape[0])])
    return vals, vals.mean()
