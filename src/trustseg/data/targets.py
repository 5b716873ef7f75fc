"""Multi-rater targets: the soft label, the majority vote and the rater disagreement (methods.md §1).

The one implementation every layer uses (the data :class:`~trustseg.data.case.Case`, the training
:class:`~trustseg.methods.base.Batch`, calibration against the soft label, Dice against the majority vote and the
uncertainty-quality target). Notation: ``R`` raters with class maps ``y^(r)`` in ``[0, K)``,

* soft label ``ȳ_k = (1/R) Σ_r 1[y^(r) = k]``;
* majority vote ``argmax_k ȳ_k``, ties to the lower class index;
* rater disagreement ``Σ_k ȳ_k (1 − ȳ_k)`` per pixel: 0 where all raters agree, ``1 − 1/K`` at most; for
  ``K = 2`` it is ``2 ȳ_1 (1 − ȳ_1)`` (pass ``classes=[1]`` for the binary ``ȳ(1 − ȳ)``).

Every function takes the rater maps as a torch tensor or a numpy array, with the raters along ``rater_dim``:
``(R, *spatial)`` with ``rater_dim=0`` (one case) or ``(B, R, *spatial)`` with ``rater_dim=1`` (a batch), and
returns torch tensors. The rater axis is replaced by the class axis (soft label) or removed (the maps).

Example:
    >>> import torch
    >>> labels = torch.tensor([[0, 1, 2], [0, 1, 1], [1, 1, 2]])  # R = 3 raters, 3 pixels
    >>> soft_label(labels, 3)
    tensor([[0.6667, 0.0000, 0.0000],
            [0.3333, 1.0000, 0.3333],
            [0.0000, 0.0000, 0.6667]])
    >>> majority_vote(labels, 3)
    tensor([0, 1, 2])
    >>> rater_disagreement(labels, 3)
    tensor([0.4444, 0.0000, 0.4444])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from trustseg.core.errors import DataError


def _as_tensor(labels: Tensor | np.ndarray) -> Tensor:
    if isinstance(labels, np.ndarray):  # flipped or non-native-order arrays are fine too
        return torch.from_numpy(np.ascontiguousarray(labels, dtype=labels.dtype.newbyteorder("=")))
    return torch.as_tensor(labels)


def _labels(labels: Tensor | np.ndarray, num_classes: int, rater_dim: int) -> tuple[Tensor, int]:
    """Checked int64 rater maps and the non-negative rater axis."""
    t = _as_tensor(labels)
    if t.dim() == 0:
        raise DataError("rater labels must have a rater axis, got a scalar")
    if not -t.dim() <= rater_dim < t.dim():
        raise DataError(f"rater_dim {rater_dim} is out of range for rater labels of shape {tuple(t.shape)}")
    if t.is_complex():
        raise DataError(f"rater labels must be integer class indices, got dtype {t.dtype}")
    if t.is_floating_point() and not torch.equal(t, t.round()):
        raise DataError("rater labels must be integer class indices, got non-integer values")
    lab = t.long()
    if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= num_classes):
        raise DataError(f"rater labels must lie in [0, {num_classes}), got [{int(lab.min())}, {int(lab.max())}]")
    if lab.shape[rater_dim % lab.dim()] == 0:
        raise DataError(f"rater labels of shape {tuple(lab.shape)} hold no rater along axis {rater_dim}")
    return lab, rater_dim % lab.dim()


def _float_dtype(labels: Tensor | np.ndarray, dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    dt = labels.dtype if isinstance(labels, (np.ndarray, Tensor)) else torch.as_tensor(labels).dtype
    return torch.float64 if dt in (np.float64, torch.float64) else torch.float32


def soft_label(
    labels: Tensor | np.ndarray, num_classes: int, rater_dim: int = 0, dtype: torch.dtype | None = None
) -> Tensor:
    """Soft label ``ȳ_k = (1/R) Σ_r 1[y^(r) = k]``, the mean over raters of their one-hot maps.

    Args:
        labels: Rater class maps, raters along ``rater_dim``: ``(R, *spatial)`` or ``(B, R, *spatial)``.
        num_classes: K.
        rater_dim: The rater axis (0 for one case, 1 for a batch).
        dtype: Output dtype; default float32 (float64 for float64 labels).

    Returns:
        ``labels.shape`` with the rater axis replaced by ``K`` classes: ``(K, *spatial)`` or ``(B, K, *spatial)``;
        sums to 1 over that axis.

    Raises:
        DataError: non-integer labels, labels outside ``[0, K)`` or a bad ``rater_dim``.
    """
    dt = _float_dtype(labels, dtype)
    lab, rd = _labels(labels, num_classes, rater_dim)
    return torch.stack([(lab == k).to(dt).mean(rd) for k in range(num_classes)], dim=rd)


def majority_vote(labels: Tensor | np.ndarray, num_classes: int, rater_dim: int = 0) -> Tensor:
    """Per-pixel most frequent class among raters, ``argmax_k ȳ_k``; ties go to the lower class index.

    Args:
        labels: Rater class maps ``(R, *spatial)`` or ``(B, R, *spatial)``, raters along ``rater_dim``.
        num_classes: K.
        rater_dim: The rater axis.

    Returns:
        int64 class map, ``labels.shape`` without the rater axis.

    Raises:
        DataError: as :func:`soft_label`.
    """
    lab, rd = _labels(labels, num_classes, rater_dim)
    votes = torch.stack([(lab == k).sum(rd) for k in range(num_classes)], dim=rd)
    return votes.argmax(rd)  # torch.argmax returns the first maximum: the lowest class among ties


def rater_disagreement(
    labels: Tensor | np.ndarray,
    num_classes: int,
    rater_dim: int = 0,
    classes: Sequence[int] | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Per-pixel rater disagreement ``Σ_k ȳ_k (1 − ȳ_k)`` with ``ȳ`` the :func:`soft_label`.

    0 where all raters agree. For ``K = 2`` the sum over both classes is ``2 ȳ_1 (1 − ȳ_1)``; pass
    ``classes=[1]`` for the binary convention ``ȳ(1 − ȳ)``. The image-level disagreement is the sum of this map.

    Args:
        labels: Rater class maps ``(R, *spatial)`` or ``(B, R, *spatial)``, raters along ``rater_dim``.
        num_classes: K.
        rater_dim: The rater axis.
        classes: Restrict the sum to these classes (default all ``K``).
        dtype: Output dtype; default float32 (float64 for float64 labels).

    Returns:
        ``labels.shape`` without the rater axis.

    Raises:
        DataError: as :func:`soft_label`.
    """
    dt = _float_dtype(labels, dtype)
    lab, rd = _labels(labels, num_classes, rater_dim)
    out = torch.zeros(lab.shape[:rd] + lab.shape[rd + 1 :], dtype=dt, device=lab.device)
    for k in range(num_classes) if classes is None else classes:
        ybar = (lab == k).to(dt).mean(rd)
        out += ybar * (1 - ybar)
    return out
