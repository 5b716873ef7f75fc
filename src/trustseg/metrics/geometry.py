"""Geometry of label maps and images used by SURE's principles and metrics: boundary distance, band, gradient.

Conventions (ours, where SURE's paper leaves them open):

* **Boundary pixels** are pixels with at least one neighbour of a different class, so both sides of every class
  change are boundary pixels; this is the union of all class boundaries. The neighbourhood is the full
  ``3^ndim`` cube by default (``connectivity="full"``, the same as the SURE training loss in
  :mod:`trustseg.methods.sure_losses`) or face-neighbours only (``"face"``: 4 in 2D, 6 in 3D).
  The image border is not a boundary.
* **Boundary distance** ``d`` is the Euclidean distance (in ``spacing`` units, pixels by default) from a pixel's
  centre to the nearest boundary pixel's centre; boundary pixels have ``d = 0``. A map with a single class has
  no boundary: ``d = +inf`` everywhere.
* **Gradient magnitude** uses central differences ``(x[i+1] − x[i−1]) / 2`` inside and one-sided differences
  ``x[1] − x[0]`` / ``x[n−1] − x[n−2]`` at the image border (``torch.gradient``, ``edge_order=1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from trustseg.core.errors import ConfigError, DataError

_CONNECTIVITY = ("full", "face")


def boundary_mask(labels: Tensor, connectivity: str = "full") -> Tensor:
    """Pixels with a neighbour of another class (``"full"``: any of the ``3^ndim`` cube; ``"face"``: face-neighbours).

    Args:
        labels: ``(*spatial)`` integer class map.
        connectivity: ``"full"`` or ``"face"``.

    Returns:
        ``(*spatial)`` bool.
    """
    if connectivity not in _CONNECTIVITY:
        raise ConfigError(f"connectivity must be one of {_CONNECTIVITY}, got {connectivity!r}")
    if connectivity == "full":
        lab = labels.cpu().numpy()
        hi = ndimage.maximum_filter(lab, size=3, mode="nearest")
        lo = ndimage.minimum_filter(lab, size=3, mode="nearest")
        return torch.from_numpy(hi != lo).to(labels.device)
    b = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    for ax in range(labels.dim()):
        n = labels.shape[ax]
        if n < 2:
            continue
        diff = labels.narrow(ax, 1, n - 1) != labels.narrow(ax, 0, n - 1)
        b.narrow(ax, 1, n - 1).logical_or_(diff)
        b.narrow(ax, 0, n - 1).logical_or_(diff)
    return b


def boundary_distance(labels: Tensor, spacing: Sequence[float] | None = None, connectivity: str = "full") -> Tensor:
    """Euclidean distance of every pixel to the nearest boundary pixel (union of class boundaries).

    Args:
        labels: ``(*spatial)`` integer class map (2D or 3D).
        spacing: Pixel size per axis (default 1 = pixel units).
        connectivity: Neighbourhood defining boundary pixels, ``"full"`` or ``"face"`` (see :func:`boundary_mask`).

    Returns:
        ``(*spatial)`` float64 tensor on ``labels``' device; ``0`` on the boundary, ``+inf`` without a boundary.
    """
    if labels.dim() < 1:
        raise DataError(f"labels must be (*spatial), got {tuple(labels.shape)}")
    if labels.is_floating_point():
        raise DataError("labels must be an integer class map, got a float tensor")
    b = boundary_mask(labels, connectivity)
    if not b.any():
        return torch.full(labels.shape, torch.inf, dtype=torch.float64, device=labels.device)
    d = ndimage.distance_transform_edt(~b.cpu().numpy(), sampling=None if spacing is None else list(spacing))
    return torch.from_numpy(np.asarray(d, dtype=np.float64)).to(labels.device)


#: Largest ball (in voxels) :func:`boundary_band` dilates with; a wider band uses the distance transform.
MAX_BALL = 343


def ball_offsets(width: float, spacing: Sequence[float]) -> np.ndarray:
    """The bool structuring element of the integer offsets ``o`` with ``|o · spacing| ≤ width`` (centred).

    Example:
        >>> int(ball_offsets(1.0, (1.0, 1.0, 1.0)).sum()), int(ball_offsets(1.5, (1.0, 1.0)).sum())
        (7, 9)
    """
    reach = [int(np.floor(width / s)) if width >= 0 else 0 for s in spacing]
    grids = np.meshgrid(*[np.arange(-r, r + 1, dtype=np.float64) * s for r, s in zip(reach, spacing)], indexing="ij")
    return np.sqrt(sum(g * g for g in grids)) <= width


def boundary_band(
    labels: Tensor, width: float = 1.0, spacing: Sequence[float] | None = None, connectivity: str = "full"
) -> Tensor:
    """Pixels within ``width`` of the boundary: ``boundary_distance(labels) <= width`` ``(*spatial)`` bool.

    Computed as the boundary mask dilated by the ball of radius ``width`` (:func:`ball_offsets`; the same set as
    the distance test, 1 byte per voxel instead of the distance transform's float64 map and int32 feature
    indices), or by the distance transform when the ball has more than :data:`MAX_BALL` voxels.
    """
    if width < 0:
        return torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
    sp = [1.0] * labels.dim() if spacing is None else [float(s) for s in spacing]
    ball = ball_offsets(float(width), sp)
    if ball.size > MAX_BALL or labels.dim() < 1 or labels.is_floating_point():
        return boundary_distance(labels, spacing, connectivity) <= width
    b = boundary_mask(labels, connectivity).cpu().numpy()
    return torch.from_numpy(ndimage.binary_dilation(b, structure=ball)).to(labels.device)


def gradient_magnitude(image: Tensor, spacing: Sequence[float] | None = None) -> Tensor:
    """Image gradient magnitude ``|∇x| = sqrt(Σ_d (∂x/∂d)²)`` per channel, averaged over channels.

    Args:
        image: ``(C, *spatial)``; every spatial size must be at least 2.
        spacing: Pixel size per axis (default 1).

    Returns:
        ``(*spatial)``, the dtype of ``image`` (float32 for integer images).
    """
    if image.dim() < 2:
        raise DataError(f"image must be (C, *spatial), got {tuple(image.shape)}")
    x = image if image.is_floating_point() else image.float()
    if min(x.shape[1:]) < 2:
        raise DataError(f"gradient needs every spatial size >= 2, got {tuple(x.shape[1:])}")
    sp = [1.0] * (x.dim() - 1) if spacing is None else [float(s) for s in spacing]
    out: Tensor | None = None
    for c in range(x.shape[0]):  # one channel and one axis at a time: two image-sized temporaries
        acc: Tensor | None = None
        for ax in range(x.dim() - 1):
            kw: dict[str, Any] = {} if spacing is None else {"spacing": [sp[ax]]}
            (g,) = torch.gradient(x[c], dim=ax, **kw)
            acc = g * g if acc is None else acc.add_(g * g)
            del g
        mag = torch.sqrt_(cast(Tensor, acc))
        out = mag if out is None else out.add_(mag)
    return cast(Tensor, out).div_(x.shape[0])
