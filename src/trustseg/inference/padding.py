"""The one place where inputs are padded for a network: zero-padding to the network's size multiple.

A network declares the multiple its input sizes must have (a U-Net of depth L: ``2^(L-1)``; see
:mod:`trustseg.models`). Every inference path (prediction, validation, temperature fitting, the OOD and noise
protocols, sliding windows) pads through :func:`pad_to_multiple` and crops the outputs back with
:func:`crop_prediction`, so a network never sees a size it was not built for and every path gives the same numbers.

Example:
    >>> import torch
    >>> x, spatial = pad_to_multiple(torch.ones(1, 1, 5, 8), 4)
    >>> tuple(x.shape), spatial
    ((1, 1, 8, 8), (5, 8))
    >>> float(x[0, 0, 5:].abs().sum())  # zeros at the end of each padded axis
    0.0
    >>> tuple(pad_to_multiple(torch.ones(1, 1, 1, 3), 4)[0].shape)  # a tiny image: two voxels at the coarsest level
    (1, 1, 8, 8)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from trustseg.core.predictive import Predictive


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, tuple[int, ...]]:
    """Zero-pad the spatial axes of ``x`` ``(B, C, *spatial)`` at their end to a multiple of ``multiple``, and an
    axis of at most ``multiple`` voxels to twice it (the network's coarsest level then has two voxels along it:
    instance normalisation cannot normalise a single voxel).

    Args:
        x: ``(B, C, *spatial)`` images.
        multiple: The network's size multiple (``>= 1``).

    Returns:
        The padded tensor (``x`` itself when no axis needs padding) and the original spatial shape.
    """
    if multiple < 1:
        raise ValueError(f"size multiple must be >= 1, got {multiple}")
    spatial = tuple(int(s) for s in x.shape[2:])
    target = [max(math.ceil(s / multiple), 2 if multiple > 1 else 1) * multiple for s in spatial]
    pad: list[int] = []
    for s, t in zip(reversed(spatial), reversed(target)):
        pad += [0, t - s]
    if any(pad):
        x = F.pad(x, pad)
    return x, spatial


def crop_prediction(pred: Predictive, spatial: tuple[int, ...]) -> Predictive:
    """Crop every map of ``pred`` back to ``spatial`` (the inverse of :func:`pad_to_multiple`)."""
    if tuple(pred.spatial_shape) == tuple(spatial):
        return pred
    crop = tuple(slice(0, s) for s in spatial)
    return pred.map(lambda t: t[(..., *crop)])


def padded(fn: Callable[[Tensor], Predictive], x: Tensor, multiple: int) -> Predictive:
    """``fn`` applied to ``x`` zero-padded to ``multiple``, its prediction cropped back to ``x``'s size."""
    xp, spatial = pad_to_multiple(x, multiple)
    return crop_prediction(fn(xp), spatial)
