"""Random training augmentation of an image and its rater labels, seeded, in 2D and 3D, built on MONAI.

One call transforms an image ``(C, *spatial)`` and its rater labels ``(R, *spatial)`` together: every spatial
transform moves both by the same geometry; the image is resampled bilinearly, the labels by nearest neighbour
(so they only ever hold values they held before: class indices are never mixed); intensity transforms touch the
image only. The pipeline, in this order (each step drawn independently with its probability):

1. small-angle rotation in ``plane`` by an angle ~ U(−``rotate_degrees``, +``rotate_degrees``)
   (``monai.transforms.RandRotated``, same size, ``padding_mode`` outside the image; labels padded with 0);
2. elastic deformation (off by default): 2D ``Rand2DElasticd`` (control points every ``elastic_spacing`` voxels,
   offsets ~ U(``elastic_magnitude_2d``)), 3D ``Rand3DElasticd`` (Gaussian-smoothed offsets, sigma ~
   U(``elastic_sigma``), magnitude ~ U(``elastic_magnitude_3d``));
3. a flip of each axis of ``flip_axes`` (all spatial axes by default) with probability ``flip_prob``, independently
   per axis (``RandFlipd``, one per axis);
4. a quarter turn ``k·90°``, k uniform in {1, 2, 3}, in ``plane`` with probability ``rot90_prob``
   (``RandRotate90d``); skipped when the two axes of the plane differ in size, so augmentation never changes the
   shape of an image or patch;
5. intensity scale ``x·(1 + f)``, f ~ U(−``scale_range``, +``scale_range``), probability ``scale_prob``
   (``RandScaleIntensityd``);
6. intensity shift ``x + o``, o ~ U(−``shift_range``, +``shift_range``), probability ``shift_prob``
   (``RandShiftIntensityd``). The offset is in the units of the image it is applied to: normalised units when
   the loader normalises (``trustseg.data.normalization``), which it does before augmenting.

Defaults follow nnU-Net's spirit at a lighter weight (nnU-Net: rotation p = 0.2, mirroring p = 0.5 per axis,
multiplicative brightness 0.75–1.25 with p = 0.15); ``AugmentConfig(enabled=False)`` is the identity.

Determinism: :meth:`Augmenter.__call__` takes an integer seed and reseeds the whole MONAI pipeline with it
(``Compose.set_random_state``), so the same (image, labels, seed) always give the same result, independent of
what was augmented before: a resumed training run stays bit-identical. The loader derives the seed from
``(seed, "augment", epoch, case_id)``.

``plane`` is a pair of spatial axes (0-based, channel axis excluded). The default ``(0, 1)`` is the image plane
in 2D and, in 3D, the first two stored axes: NIfTI's ``(X, Y)`` axial plane (trustseg keeps the file's voxel
order). Set ``plane: [1, 2]`` for volumes stored ``(D, H, W)`` with the slice axis first.

Example:
    >>> import numpy as np
    >>> image = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    >>> labels = (image > 7).astype(np.int64)
    >>> aug = Augmenter(AugmentConfig(flip_prob=1.0, rot90_prob=0.0, rotate_prob=0.0, scale_prob=0.0, shift_prob=0.0))
    >>> img, lab = aug(image, labels, seed=0)
    >>> img[0, 0].tolist(), bool(((img > 7) == lab).all())
    ([15.0, 14.0, 13.0, 12.0], True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from monai import transforms as mt

from trustseg.core.errors import ConfigError, DataError

_IMG, _LAB = "image", "labels"


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation (see the module docstring for the pipeline and the meaning of each option).

    Attributes:
        enabled: ``False`` switches everything off (the identity).
        flip_prob: Probability of flipping each axis of ``flip_axes``, independently.
        flip_axes: Spatial axes that may be flipped; ``None`` = all.
        rot90_prob: Probability of a quarter turn (k = 1, 2 or 3) in ``plane``.
        plane: The two spatial axes of the in-plane rotations (quarter turns and small angles).
        rotate_prob: Probability of a small-angle rotation in ``plane``.
        rotate_degrees: Largest small-angle rotation, in degrees (angle ~ U(−d, d)).
        scale_prob: Probability of the intensity scale ``x·(1 + f)``.
        scale_range: f ~ U(−scale_range, scale_range).
        shift_prob: Probability of the intensity shift ``x + o``.
        shift_range: o ~ U(−shift_range, shift_range), in the units of the (normalised) image.
        elastic_prob: Probability of an elastic deformation (0 = off, the default).
        elastic_spacing: 2D: spacing of the deformation's control points, in voxels.
        elastic_magnitude_2d: 2D: range of the control-point offsets.
        elastic_sigma: 3D: range of the Gaussian smoothing of the offset field, in voxels.
        elastic_magnitude_3d: 3D: range of the offset magnitude.
        padding_mode: How rotations and deformations fill voxels from outside the image (image; the labels get
            the same geometry and ``zeros`` = background where the image gets ``zeros``): ``zeros``, ``border``
            or ``reflection``.
    """

    enabled: bool = True
    flip_prob: float = 0.5
    flip_axes: tuple[int, ...] | None = None
    rot90_prob: float = 0.5
    plane: tuple[int, int] = (0, 1)
    rotate_prob: float = 0.2
    rotate_degrees: float = 15.0
    scale_prob: float = 0.15
    scale_range: float = 0.25
    shift_prob: float = 0.15
    shift_range: float = 0.1
    elastic_prob: float = 0.0
    elastic_spacing: float = 32.0
    elastic_magnitude_2d: tuple[float, float] = (1.0, 2.0)
    elastic_sigma: tuple[float, float] = (5.0, 8.0)
    elastic_magnitude_3d: tuple[float, float] = (100.0, 200.0)
    padding_mode: Literal["zeros", "border", "reflection"] = "zeros"

    def __post_init__(self) -> None:
        for name in ("flip_prob", "rot90_prob", "rotate_prob", "scale_prob", "shift_prob", "elastic_prob"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"train.augment.{name} must be a probability in [0, 1], got {p}")
        for name in ("rotate_degrees", "scale_range", "shift_range"):
            if not math.isfinite(getattr(self, name)) or getattr(self, name) < 0:
                raise ConfigError(f"train.augment.{name} must be finite and >= 0, got {getattr(self, name)}")
        if self.scale_range >= 1:
            raise ConfigError(f"train.augment.scale_range must be < 1 (a factor 1 ± range), got {self.scale_range}")
        if len(self.plane) != 2 or self.plane[0] == self.plane[1] or min(self.plane) < 0:
            raise ConfigError(f"train.augment.plane must be two different spatial axes, got {list(self.plane)}")
        if self.flip_axes is not None and (
            min(self.flip_axes, default=0) < 0 or len(set(self.flip_axes)) != len(self.flip_axes)
        ):
            raise ConfigError(f"train.augment.flip_axes must be distinct spatial axes >= 0, got {list(self.flip_axes)}")
        if self.elastic_spacing <= 0:
            raise ConfigError(f"train.augment.elastic_spacing must be > 0, got {self.elastic_spacing}")
        for name in ("elastic_magnitude_2d", "elastic_sigma", "elastic_magnitude_3d"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ConfigError(f"train.augment.{name} must be [low, high] with 0 <= low <= high, got {[lo, hi]}")


#: MONAI's RandRotate angle argument that rotates in each plane (spatial axes) of a 3D volume.
_ROTATE_3D = {(1, 2): "range_x", (0, 2): "range_y", (0, 1): "range_z"}


class Augmenter:
    """Applies :class:`AugmentConfig` to ``(image, labels)`` pairs; MONAI pipelines are built once per geometry.

    Args:
        cfg: The augmentation settings.
    """

    def __init__(self, cfg: AugmentConfig | None = None):
        self.cfg = AugmentConfig() if cfg is None else cfg
        self._pipelines: dict[tuple[int, bool], mt.Compose] = {}

    def __call__(self, image: Any, labels: Any, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Augment one case.

        Args:
            image: ``(C, *spatial)`` float image, 2 or 3 spatial axes.
            labels: ``(R, *spatial)`` integer label maps on the same grid.
            seed: Seeds every random draw (any integer; reduced modulo 2**32 for MONAI).

        Returns:
            ``(C, *spatial)`` float32 image and ``(R, *spatial)`` int64 labels, the input's shapes.

        Raises:
            DataError: for mismatched spatial shapes, other than 2 or 3 spatial axes, or axes of ``plane`` /
                ``flip_axes`` the image does not have.
        """
        img, lab = np.asarray(image), np.asarray(labels)
        if img.ndim not in (3, 4) or lab.ndim != img.ndim or img.shape[1:] != lab.shape[1:]:
            raise DataError(
                f"augmentation needs an image (C, *spatial) and labels (R, *spatial) on the same 2D/3D grid, "
                f"got {img.shape} and {lab.shape}"
            )
        if not self.cfg.enabled:
            return img.astype(np.float32, copy=False), lab.astype(np.int64, copy=False)
        nd = img.ndim - 1
        axes = tuple(self.cfg.plane) + tuple(self.cfg.flip_axes or ())
        if max(axes) >= nd:
            raise DataError(f"augmentation: plane {list(self.cfg.plane)} / flip_axes need axes the {nd}D image lacks")
        a, b = self.cfg.plane
        square = img.shape[1 + a] == img.shape[1 + b]
        pipe = self._pipelines.get((nd, square))
        if pipe is None:
            pipe = self._pipelines[(nd, square)] = self._build(nd, square)
        pipe.set_random_state(seed=int(seed) % 2**32)
        out = pipe({_IMG: img.astype(np.float32), _LAB: lab.astype(np.float32)})
        return np.asarray(out[_IMG], dtype=np.float32), np.rint(np.asarray(out[_LAB])).astype(np.int64)

    def _build(self, nd: int, square: bool) -> mt.Compose:
        c = self.cfg
        keys = (_IMG, _LAB)
        modes = ("bilinear", "nearest")
        pads = (c.padding_mode, c.padding_mode)
        p0, p1 = sorted(c.plane)
        plane = (p0, p1)
        steps: list[Any] = []
        if c.rotate_prob > 0 and c.rotate_degrees > 0:
            angle = math.radians(c.rotate_degrees)
            arg: dict[str, Any] = {"range_x" if nd == 2 else _ROTATE_3D[plane]: angle}
            steps.append(mt.RandRotated(keys, **arg, prob=c.rotate_prob, keep_size=True, mode=modes, padding_mode=pads))
        if c.elastic_prob > 0:
            if nd == 2:
                steps.append(
                    mt.Rand2DElasticd(
                        keys,
                        spacing=c.elastic_spacing,
                        magnitude_range=c.elastic_magnitude_2d,
                        prob=c.elastic_prob,
                        mode=modes,
                        padding_mode=pads,
                    )
                )
            else:
                steps.append(
                    mt.Rand3DElasticd(
                        keys,
                        sigma_range=c.elastic_sigma,
                        magnitude_range=c.elastic_magnitude_3d,
                        prob=c.elastic_prob,
                        mode=modes,
                        padding_mode=pads,
                    )
                )
        if c.flip_prob > 0:
            for axis in c.flip_axes if c.flip_axes is not None else range(nd):
                steps.append(mt.RandFlipd(keys, prob=c.flip_prob, spatial_axis=axis))
        if c.rot90_prob > 0 and square:
            steps.append(mt.RandRotate90d(keys, prob=c.rot90_prob, max_k=3, spatial_axes=plane))
        if c.scale_prob > 0 and c.scale_range > 0:
            steps.append(mt.RandScaleIntensityd(_IMG, factors=c.scale_range, prob=c.scale_prob))
        if c.shift_prob > 0 and c.shift_range > 0:
            steps.append(mt.RandShiftIntensityd(_IMG, offsets=c.shift_range, prob=c.shift_prob))
        return mt.Compose(steps)


def augment(image: Any, labels: Any, cfg: AugmentConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One-off :class:`Augmenter` call (build an :class:`Augmenter` once to augment many cases)."""
    return Augmenter(cfg)(image, labels, seed)
