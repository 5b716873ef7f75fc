"""Test-time views for predictors of plain modules (``--tta``), registered by name in :data:`TTA_VIEWS`.

* ``none``: the identity only;
* ``flips``: every combination of flips of the spatial axes, the identity included (``2^n`` views for ``n``
  spatial axes: 4 in 2D, 8 in 3D, as nnU-Net's mirroring). Each flip is its own inverse, applied to the outputs.

Geometric transforms address spatial axes from the end, so the same inverse applies to logits ``(B, K, *sp)``
and probabilities ``(M, B, K, *sp)``.

Example:
    >>> [v.name for v in TTA_VIEWS.get("flips")(2)]
    ['identity', 'flip0', 'flip1', 'flip0,1']
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor

from trustseg.core.registry import Registry
from trustseg.methods.tta import View

#: name -> function(spatial_dims) -> list of views (identity first)
TTA_VIEWS: Registry[Callable[[int], list[View]]] = Registry("test-time augmentation")


def _identity(t: Tensor) -> Tensor:
    return t


def _flip(dims: tuple[int, ...]) -> Callable[[Tensor], Tensor]:
    return lambda t: torch.flip(t, dims)


@TTA_VIEWS.register("none", doc="no test-time augmentation (the identity)")
def no_views(spatial_dims: int) -> list[View]:
    """The identity."""
    return [View("identity", _identity, _identity)]


@TTA_VIEWS.register("flips", doc="every combination of flips of the spatial axes (2^n views, identity included)")
def all_flips(spatial_dims: int) -> list[View]:
    """``2^n`` views: the identity, then each non-empty set of flipped axes (fewest axes first)."""
    views = no_views(spatial_dims)
    axes = range(spatial_dims)
    for k in range(1, spatial_dims + 1):
        for subset in itertools.combinations(axes, k):
            dims = tuple(a - spatial_dims for a in subset)
            views.append(View("flip" + ",".join(map(str, subset)), _flip(dims), _flip(dims)))
    return views
