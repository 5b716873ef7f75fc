"""Resampling a case to a new grid (the importers' ``--size`` / ``--spacing``).

The new grid covers the same extent as the old one (voxel edges aligned, as ``align_corners=False``): a spatial
axis of ``n`` voxels of size ``s`` becomes ``n'`` voxels of size ``s' = s · n / n'``, and the first voxel centre
moves from ``o`` to ``o' = o + (s' − s) / 2``.

* Given ``size`` ``n'``: ``s' = s · n / n'``. Given ``spacing`` ``s'``: ``n' = max(1, round(n · s / s'))``, and the
  spacing stored is the exact ``s · n / n'`` (equal to ``s'`` when ``n · s / s'`` is a whole number).
* Images: area averaging (``torch.nn.functional.interpolate(mode="area")``) when no axis grows, else (bi/tri)linear
  interpolation. An image whose values are all whole numbers (8-bit photographs, CT in HU) is rounded to whole
  numbers afterwards, so it can still be stored losslessly as PNG/TIFF like its source.
* Labels and masks: nearest neighbour at voxel centres (output voxel ``i`` takes input voxel
  ``floor((i + 0.5) · n / n')``, like ``mode="nearest-exact"``), so class values are never mixed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from trustseg.core.errors import ConfigError
from trustseg.data.case import Case


@dataclass(frozen=True)
class Resample:
    """A target grid: exactly one of ``size`` (voxels per spatial axis) and ``spacing`` (mm per axis).

    Attributes:
        size: ``(H, W)`` or ``(D, H, W)``.
        spacing: Voxel size per spatial axis, in the order of the spatial axes.
    """

    size: tuple[int, ...] | None = None
    spacing: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if (self.size is None) == (self.spacing is None):
            raise ConfigError("give either --size or --spacing, not both (a size fixes the spacing and vice versa)")
        axes = self.size if self.size is not None else self.spacing
        assert axes is not None
        option = "--size" if self.size is not None else "--spacing"
        if len(axes) not in (2, 3):
            raise ConfigError(f"{option} needs 2 (H,W) or 3 (D,H,W) values, got {len(axes)}: {axes}")
        if not all(math.isfinite(v) and v > 0 for v in axes):
            raise ConfigError(f"{option} values must be positive, got {axes}")

    @property
    def option(self) -> str:
        """The option that set this target (named in errors)."""
        return "--size" if self.size is not None else "--spacing"

    def grid(self, shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, ...], tuple[float, ...]]:
        """The new ``(shape, spacing)`` of a grid ``shape`` with voxel size ``spacing``.

        Raises:
            ConfigError: the target has another number of axes than the grid (naming the option).

        Example:
            >>> Resample(spacing=(0.5, 2.0)).grid((4, 4), (1.0, 1.0))
            ((8, 2), (0.5, 2.0))
        """
        axes = self.size if self.size is not None else self.spacing
        assert axes is not None
        if len(axes) != len(shape):
            raise ConfigError(
                f"{self.option} has {len(axes)} values but the images have {len(shape)} spatial axes {tuple(shape)}; "
                f"give {len(shape)} values"
            )
        if self.size is not None:
            new = tuple(int(n) for n in self.size)
        else:
            new = tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, axes))
        return new, tuple(float(s) * n / m for s, n, m in zip(spacing, shape, new))


def parse_axes(value: str | Sequence[float] | None, option: str, kind: type) -> tuple | None:
    """``'256,256'`` (or a sequence) -> a tuple of ``kind``; ``None`` stays ``None``.

    Raises:
        ConfigError: a value that is not a comma-separated list of ``kind`` (naming ``option``).

    Example:
        >>> parse_axes("2,256,256", "--size", int)
        (2, 256, 256)
    """
    if value is None:
        return None
    if isinstance(value, (int, float)):
        value = [value]
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        out = tuple(kind(str(v).strip()) for v in items)
    except ValueError:
        raise ConfigError(f"{option} expects comma-separated {kind.__name__}s like 256,256; got {value!r}") from None
    return out


def nearest(arr: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resampling of the last ``len(shape)`` axes (output voxel ``i`` takes input voxel
    ``floor((i + 0.5) · n / n')``).

    Example:
        >>> nearest(np.array([[0, 1, 2, 3]]), (1, 2)).tolist()
        [[1, 3]]
    """
    out = arr
    lead = arr.ndim - len(shape)
    for ax, m in enumerate(shape):
        n = arr.shape[lead + ax]
        idx = np.minimum(np.floor((np.arange(m) + 0.5) * n / m).astype(np.int64), n - 1)
        out = np.take(out, idx, axis=lead + ax)
    return np.ascontiguousarray(out)


def resample_image(image: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``(C, *spatial)`` float32 onto ``shape``: area averaging when no axis grows, else (bi/tri)linear."""
    shape = tuple(int(s) for s in shape)
    if tuple(image.shape[1:]) == shape:
        return image
    shrink = all(m <= n for m, n in zip(shape, image.shape[1:]))
    mode = "area" if shrink else ("bilinear" if len(shape) == 2 else "trilinear")
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(t, size=shape, mode=mode, **kwargs)[0].numpy()


def resample_case(case: Case, target: Resample) -> Case:
    """The case on the target grid: image interpolated, every rater's labels and the mask (when the case has one)
    by nearest neighbour; spacing and origin updated (see the module docstring).

    Raises:
        ConfigError: the target's axis count differs from the case's.
    """
    shape, spacing = target.grid(case.spatial_shape, case.spacing)
    origin = tuple(o + (t - s) / 2.0 for o, s, t in zip(case.origin, case.spacing, spacing))
    image = resample_image(case.image, shape)
    if image is not case.image and bool(np.all(case.image == np.round(case.image))):
        image = np.rint(image)
    changes: dict = {
        "image": image,
        "labels": nearest(case.labels, shape),
        "spacing": spacing,
        "origin": origin,
    }
    if case.mask is not None:
        changes["mask"] = nearest(np.asarray(case.mask), shape)
    return replace(case, **changes)
