"""Graded image distortions for out-of-distribution tests, and the noise of SURE's robustness protocol.

Every distortion is registered in :data:`DISTORTIONS` as ``fn(image, severity, rng) -> image`` with ``image``
``(C, *spatial)`` (numpy), ``severity`` in 1..5 and ``rng`` a ``numpy.random.Generator``; one whose registry
metadata has ``uses_scale=True`` also takes ``scale=`` (below). Intensity changes are relative to each channel's
own mean ``m_c`` and std ``s_c`` (computed over the spatial axes), so they mean the same on z-scored, CT or MR
intensities. For a fixed ``rng`` seed the random parts (noise realisation, bias field,
ghost axis and shift) are the same at every severity and only the strength grows, so the change
``mean |x' − x|`` increases with the severity.

| name | effect, per severity 1..5 |
|------|---------------------------|
| noise | ``x + s_c·σ·ε``, ε ~ N(0, 1), σ = 0.1, 0.2, 0.4, 0.7, 1.0 (``s_c = scale_c`` when a scale is given) |
| blur | Gaussian blur over the spatial axes, std 0.5, 1.0, 1.5, 2.0, 3.0 voxels |
| contrast | ``m_c + c·(x − m_c)``, c = 0.8, 0.6, 0.45, 0.3, 0.15 |
| bias | ``l_c + (x − l_c)·exp(a·z)``, l_c = channel min, z smooth unit-std field, a = 0.05, 0.1, 0.2, 0.3, 0.45 |
| ghosting | ``x + (g/2)·[T₊(x − m_c) + T₋(x − m_c)]``, T± = shifts by ±t on one axis, g = 0.1, 0.2, 0.3, 0.45, 0.6 |

Ghosting is the image-space form of multiplying k-space along the chosen axis by ``1 + g·cos(2π k t / N)``
(periodic motion during the acquisition): two attenuated copies of the image displaced by ±t (t drawn in
[N/5, 2N/5]).

**Severities in normalised units** (``scale``). The image's own std ``s_c`` depends on its content (a CT slice
with much air has a large one). ``distort(..., scale=stats.scale)`` with ``stats`` a fitted
``trustseg.data.normalization.NormStats`` (raw units per normalised unit, per channel) makes the noise std
``σ·scale_c``: σ is then in normalised units whatever the raw intensity range, and distorting a raw image with
``scale=stats.scale`` then normalising equals normalising then distorting with ``scale=1`` (exactly, up to
float rounding, for the z-score scheme, an affine map; the ``ct`` clip breaks it for clipped voxels). Contrast,
bias, ghosting and blur are scale-free by construction (a factor around the channel mean or minimum, two scaled
copies, a linear filter): they commute with any affine normalisation ``(x − m_c) / s_c`` as they are, so they take
no scale. :func:`add_gaussian_noise` (SURE's ``x + N(μ, σ²)``, defined in normalised units) takes the same
``scale``: pass ``stats.scale`` when adding the noise to raw images. ``scale=None`` (the default) keeps every
number as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch
from scipy import ndimage

from trustseg.core.registry import Registry
from trustseg.data.case import Case

Distortion = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]

DISTORTIONS: Registry[Distortion] = Registry("distortion")

SEVERITIES = (1, 2, 3, 4, 5)

#: Strength of each distortion at severities 1..5 (see the module docstring for their meaning).
LEVELS: dict[str, tuple[float, ...]] = {
    "noise": (0.1, 0.2, 0.4, 0.7, 1.0),
    "blur": (0.5, 1.0, 1.5, 2.0, 3.0),
    "contrast": (0.8, 0.6, 0.45, 0.3, 0.15),
    "bias": (0.05, 0.1, 0.2, 0.3, 0.45),
    "ghosting": (0.1, 0.2, 0.3, 0.45, 0.6),
}


def _spatial_axes(image: np.ndarray) -> tuple[int, ...]:
    return tuple(range(1, image.ndim))


def _channel_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std ``(C, 1, ..., 1)``; a constant channel gets std 1."""
    axes = _spatial_axes(image)
    mean = image.mean(axis=axes, keepdims=True)
    std = image.std(axis=axes, keepdims=True)
    return mean, np.where(std > 0, std, 1.0)


@DISTORTIONS.register("noise", doc="additive Gaussian noise, std 0.1–1.0 × the channel std", uses_scale=True)
def gaussian_noise(
    image: np.ndarray, severity: int, rng: np.random.Generator, scale: np.ndarray | None = None
) -> np.ndarray:
    """``x + s_c·σ·ε`` with ε ~ N(0, 1) per voxel and σ = ``LEVELS['noise'][severity − 1]``.

    ``s_c`` is the channel's own std, or ``scale`` (``(C, 1, ..., 1)``, raw units per normalised unit) when given.
    """
    std = _channel_stats(image)[1] if scale is None else scale
    return image + std * LEVELS["noise"][severity - 1] * rng.standard_normal(image.shape)


@DISTORTIONS.register("blur", doc="Gaussian blur, std 0.5–3 voxels", uses_scale=False)
def gaussian_blur(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian filter of std ``LEVELS['blur'][severity − 1]`` voxels along every spatial axis (not channels)."""
    sigma = LEVELS["blur"][severity - 1]
    return ndimage.gaussian_filter(image, sigma=(0.0,) + (sigma,) * (image.ndim - 1), mode="nearest")


@DISTORTIONS.register("contrast", doc="contrast reduction around the channel mean, factor 0.8–0.15", uses_scale=False)
def contrast_change(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``m_c + c·(x − m_c)`` with c = ``LEVELS['contrast'][severity − 1]`` (deterministic; ``rng`` unused)."""
    mean, _ = _channel_stats(image)
    return mean + LEVELS["contrast"][severity - 1] * (image - mean)


def _bias_field(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Smooth unit-std field: a random linear ramp plus low-frequency Gaussian-filtered noise, ``shape``."""
    grid = [(g / max(n - 1, 1)) * 2.0 - 1.0 for g, n in zip(np.indices(shape, dtype=np.float64), shape)]
    ramp = sum(w * g for w, g in zip(rng.normal(size=len(shape)), grid))
    coarse = ndimage.gaussian_filter(rng.standard_normal(tuple(max(2, n // 8) for n in shape)), 1.0, mode="wrap")
    smooth = ndimage.zoom(coarse, [n / c for n, c in zip(shape, coarse.shape)], order=1)
    field = ramp / (np.std(ramp) + 1e-12) + smooth / (np.std(smooth) + 1e-12)
    field = field - field.mean()
    return field / (field.std() + 1e-12)


@DISTORTIONS.register("bias", doc="smooth multiplicative bias field, log-amplitude 0.05–0.45", uses_scale=False)
def bias_field(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``l_c + (x − l_c)·exp(a·z)``: l_c the channel minimum, z a smooth unit-std field, a from ``LEVELS``.

    The field multiplies the intensities measured from the channel minimum (MR bias acts on non-negative raw
    intensities; the minimum stands in for zero on normalised images).
    """
    z = _bias_field(image.shape[1:], rng)[None]
    low = image.min(axis=_spatial_axes(image), keepdims=True)
    return low + (image - low) * np.exp(LEVELS["bias"][severity - 1] * z)


@DISTORTIONS.register("ghosting", doc="motion-like ghosts: two shifted copies, strength 0.1–0.6", uses_scale=False)
def ghosting(image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
    """``x + (g/2)·[T₊(x − m_c) + T₋(x − m_c)]``: ghosts shifted by ±t along a random spatial axis."""
    axis = int(rng.integers(1, image.ndim))
    n = image.shape[axis]
    shift = int(round(rng.uniform(0.2, 0.4) * n))
    mean, _ = _channel_stats(image)
    centred = image - mean
    ghosts = np.roll(centred, shift, axis=axis) + np.roll(centred, -shift, axis=axis)
    return image + 0.5 * LEVELS["ghosting"][severity - 1] * ghosts


def _check_severity(severity: Any) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ValueError(f"severity must be an integer in 1–5 (1 = mildest), got {severity!r}")
    return int(severity)


def _to_numpy(image: Any) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """Numpy view of ``image`` and a function converting a result back to the input's type, dtype and device."""
    if isinstance(image, torch.Tensor):
        dtype, device = image.dtype, image.device
        arr = image.detach().cpu().numpy()
        return arr, lambda out: torch.from_numpy(np.ascontiguousarray(out)).to(device=device, dtype=dtype)
    arr = np.asarray(image)
    np_dtype = arr.dtype

    def back(out: np.ndarray) -> np.ndarray:
        if np.issubdtype(np_dtype, np.integer):
            info = np.iinfo(np_dtype)
            out = np.clip(np.rint(out), info.min, info.max)
        return out.astype(np_dtype, copy=False)

    return arr, back


def _check_scale(scale: Any, channels: int, ndim: int) -> np.ndarray | None:
    """``scale`` (a number, or one positive number per channel) as ``(C, 1, ..., 1)`` float64, or ``None``."""
    if scale is None:
        return None
    s = np.asarray(scale, dtype=np.float64).reshape(-1)
    if s.size == 1:
        s = np.repeat(s, channels)
    if s.size != channels or not np.isfinite(s).all() or (s <= 0).any():
        raise ValueError(f"scale must be a positive number or one per channel ({channels}), got {scale!r}")
    return s.reshape((channels,) + (1,) * (ndim - 1))


def distort(image: Any, name: str, severity: int, seed: int | np.random.Generator = 0, scale: Any = None) -> Any:
    """Apply the registered distortion ``name`` at ``severity`` to one image.

    Args:
        image: ``(C, *spatial)`` numpy array or torch tensor.
        name: A name in :data:`DISTORTIONS` ("noise", "blur", "contrast", "bias", "ghosting").
        severity: 1 (mildest) .. 5 (strongest).
        seed: Seed (or generator) of the random parts; the same seed gives the same noise/field/ghost geometry
            at every severity.
        scale: ``None`` (severities relative to the image's own statistics), or raw intensity units per
            normalised unit: one positive number per channel (``NormStats.scale``) or one for all. Used by the
            distortions registered with ``uses_scale=True`` (noise); the others are scale-free.

    Returns:
        The distorted image, same type, shape and dtype (and device for tensors) as ``image``.

    Raises:
        UnknownNameError: for an unknown ``name`` (with a "did you mean").
        ValueError: for a severity outside 1–5, an image with fewer than 2 spatial axes, or a bad ``scale``.
    """
    fn = DISTORTIONS.get(name)
    severity = _check_severity(severity)
    arr, back = _to_numpy(image)
    if arr.ndim < 3:
        raise ValueError(f"image must be (C, *spatial) with 2 or 3 spatial axes, got shape {tuple(arr.shape)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    s = _check_scale(scale, arr.shape[0], arr.ndim)
    if s is not None and DISTORTIONS.meta(name).get("uses_scale", False):
        scaled = cast(Callable[..., np.ndarray], fn)  # registered with uses_scale=True: it takes scale=
        return back(scaled(arr.astype(np.float64), severity, rng, scale=s))
    return back(fn(arr.astype(np.float64), severity, rng))


def distort_case(case: Case, name: str, severity: int, seed: int = 0, scale: Any = None) -> Case:
    """A new :class:`Case` with the distorted image, the same labels, and id ``<case_id>_<name><severity>``.

    The group is kept (a distorted copy belongs with its source in splits); ``meta`` gains ``distortion`` and
    ``severity``. ``scale`` as in :func:`distort`.
    """
    image = distort(case.image, name, severity, seed, scale=scale)
    return dataclasses.replace(
        case,
        case_id=f"{case.case_id}_{name}{int(severity)}",
        image=image,
        labels=case.labels.copy(),
        meta={**case.meta, "distortion": name, "severity": int(severity)},
    )


def add_gaussian_noise(
    image: Any,
    mu: float,
    sigma: float = 0.3,
    seed: int | np.random.Generator = 0,
    scale: Any = None,
    channel_axis: int = 0,
) -> Any:
    """SURE's noise-robustness perturbation ``x + scale_c·n``, n ~ N(mu, sigma²) per voxel.

    mu and sigma are in the normalised (z-scored) intensity units the model sees, not relative to the image std:
    the protocol uses mu in {0.1, 0.3, 0.5, 0.7, 0.9} and sigma = 0.3. On an image the model sees as it is (already
    normalised) leave ``scale=None`` (``scale_c = 1``); on a raw image that the model's normalisation will map
    with ``(x − m_c) / s_c``, pass ``scale = NormStats.scale`` (the ``s_c``) so that the normalised result is
    exactly ``normalise(x) + n``. The noise is drawn with numpy from ``seed`` (the same draws whatever the scale),
    so numpy and torch inputs get identical values.

    Args:
        image: Array or tensor of any shape (``(C, *spatial)`` or batched ``(B, C, *spatial)``).
        mu: Mean of the noise.
        sigma: Std of the noise (>= 0).
        seed: Seed or generator.
        scale: ``None``, one positive number, or one per channel (raw units per normalised unit).
        channel_axis: The channel axis of ``image`` that ``scale`` runs along (1 for a batch).

    Returns:
        ``image + scale_c·n``, same type, shape and dtype (and device) as ``image``.
    """
    if not np.isfinite(mu) or not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"need a finite mu and a finite sigma >= 0, got mu={mu!r}, sigma={sigma!r}")
    arr, back = _to_numpy(image)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    noise = rng.normal(mu, sigma, size=arr.shape)
    if scale is not None:
        moved = np.moveaxis(noise, channel_axis, 0)
        s = _check_scale(scale, moved.shape[0], moved.ndim)
        assert s is not None  # scale is not None
        noise = np.moveaxis(moved * s, 0, channel_axis)
    return back(arr.astype(np.float64) + noise)
