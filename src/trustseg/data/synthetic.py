"""Synthetic multi-rater segmentation data whose rater disagreement is a learnable signal.

Every case is drawn from its own random stream, seeded by ``(cfg.seed, index)``, so a case does not depend on
any other case and the cases can be generated in any order or in parallel.

Generation of one case (``docs/synthetic.md`` has the full description and every knob):

1. **Shapes.** Class 1 ("organ") is a deformed ellipse/ellipsoid: with ``u = Rᵀ(x − c)`` (random rotation ``R``,
   centre ``c``, semi-axes ``a``), ``r(x) = sqrt(Σ_i (u_i / a_i)²)`` and a smooth random field ``z`` (unit std),
   the organ is ``{1 − r(x) + irregularity · z(x) > 0}``, reduced to its largest component with holes filled.
   Even classes k ≥ 2 ("lesions") are smaller blobs placed inside the organ; odd classes k ≥ 3 are blobs placed
   beside it in the background. Higher classes are painted over lower ones.
2. **Faintness.** A smooth field ``f(x) ∈ [0, 1]``: ``f = σ((z_f − Φ⁻¹(1 − faint_fraction)) / 0.25)``, so about
   ``faint_fraction`` of the image is faint (f > 0.5).
3. **Image.** Piecewise-constant class intensities ``μ_k`` plus a smooth texture; where the image is faint it is
   blended with a blurred, contrast-reduced copy: ``I = (1 − f)·I₀ + f·(m + (1 − contrast_drop)(G_b * I₀ − m))``
   with ``G_b`` a Gaussian of std ``faint_blur`` and ``m`` a wide local mean; then Gaussian noise of std ``noise``
   is added and the image is z-scored.
4. **Raters.** With ``d_k`` the signed distance (voxels, > 0 inside) to the true boundary of structure k, rater
   r marks structure k where ``d_k(x) + f(x)·(b_r + rater_noise · z_r(x)) > 0`` (``z_r`` a smooth rater-specific
   field). Rater 0 over-segments (``b_0 = +rater_bias``), rater 1 under-segments (``b_1 = −rater_bias``), the
   others are unbiased (with R = 1 the single rater is unbiased). Where the edge is sharp (f ≈ 0) the raters
   agree exactly; where it is faint they disagree by a few voxels.
5. **Per-case disagreement level** (``disagreement_spread`` s > 0; off by default). Each case draws a level
   ``ℓ ~ U(1 − s, 1 + s)`` from its own stream ``SeedSequence([seed, index, 1])`` (so the shapes, faintness field
   and noise are those of the case without it) and scales what makes the edge hard to place: the blur
   (``faint_blur·ℓ``), the contrast drop (``min(1, contrast_drop·ℓ)``) and the rater shifts
   (``ℓ·(b_r + rater_noise·z_r)``). A case with a high level has blurrier, fainter edges *and* raters who
   disagree more; at ℓ = 0 the image is sharp everywhere and the raters agree. The level is stored in
   ``case.meta["disagreement_level"]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, overload

import numpy as np
from scipy import ndimage, special

from trustseg.core.errors import ConfigError
from trustseg.data.case import Case
from trustseg.data.dataset import write_dataset

_RANGES: dict[str, tuple[float, float]] = {
    "cases": (1, 10**7),
    "raters": (1, 64),
    "size": (16, 512),
    "num_classes": (2, 8),
    "seed": (0, 2**63 - 1),
    "noise": (0.0, 5.0),
    "texture": (0.0, 2.0),
    "faint_fraction": (0.0, 1.0),
    "contrast_drop": (0.0, 1.0),
    "faint_blur": (0.0, 16.0),
    "rater_bias": (0.0, 16.0),
    "rater_noise": (0.0, 16.0),
    "irregularity": (0.0, 1.0),
    "organ_radius": (0.1, 0.45),
    "lesion_radius": (0.03, 0.3),
    "contrast_jitter": (0.0, 0.5),
    "disagreement_spread": (0.0, 1.0),
    "val_fraction": (0.0, 0.9),
    "test_fraction": (0.0, 0.9),
}


@dataclass(frozen=True)
class SynthConfig:
    """Settings of the synthetic multi-rater generator (lengths in voxels unless said otherwise).

    Attributes:
        cases: Number of cases ``generate_cases`` yields.
        raters: R, annotations per case (1–64).
        dims: Spatial dimensions, 2 (H, W) or 3 (D, H, W).
        size: Side length of the square/cubic image (16–512).
        num_classes: K, background included (2–8); K = 3 gives background, organ, lesion.
        seed: Base seed; case ``i`` uses the stream ``SeedSequence([seed, i])``.
        noise: Std of the additive Gaussian noise, relative to the organ/background contrast of 1.
        texture: Amplitude of the smooth intensity texture (same unit as ``noise``).
        faint_fraction: Fraction of the image where boundaries are faint (f > 0.5), in [0, 1].
        contrast_drop: Fraction of the local contrast removed where fully faint (f = 1), in [0, 1].
        faint_blur: Std (voxels) of the Gaussian blur applied where faint.
        rater_bias: Boundary shift (voxels, at f = 1) of rater 0 (outwards) and rater 1 (inwards).
        rater_noise: Std (voxels, at f = 1) of each rater's smooth random boundary shift.
        irregularity: Amplitude of the shape deformation (0 = exact ellipses).
        organ_radius: Mean semi-axis of the organ, as a fraction of ``size``.
        lesion_radius: Mean semi-axis of the other structures, as a fraction of ``size``.
        contrast_jitter: Relative per-case jitter of the class intensities.
        disagreement_spread: s in [0, 1]: each case draws a disagreement level ℓ ~ U(1 − s, 1 + s) that scales
            its blur, contrast drop and rater shifts (module docstring, step 5); 0 (default) = off, every case
            at level 1, bit-identical to the generator without this option.
        val_fraction: Share of the cases in the validation part of the dataset's fixed split (default 0.15).
        test_fraction: Share in its test part (default 0.15); the rest trains. A larger held-out share gives
            image-level statistics (correlations over test images, a QC model fitted on validation images)
            more images without training on more.
    """

    cases: int = 40
    raters: int = 4
    dims: int = 2
    size: int = 64
    num_classes: int = 3
    seed: int = 0
    noise: float = 0.2
    texture: float = 0.15
    faint_fraction: float = 0.4
    contrast_drop: float = 0.6
    faint_blur: float = 2.0
    rater_bias: float = 1.5
    rater_noise: float = 1.0
    irregularity: float = 0.25
    organ_radius: float = 0.3
    lesion_radius: float = 0.12
    contrast_jitter: float = 0.15
    disagreement_spread: float = 0.0
    val_fraction: float = 0.15
    test_fraction: float = 0.15

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> SynthConfig:
        """Check every field's type and range.

        Returns:
            ``self``, so ``cfg.validate()`` can be chained.

        Raises:
            ConfigError: naming the first offending field, its value and the allowed range.
        """
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"SynthConfig.{f.name} must be a number, got {value!r}")
            if f.type in ("int", int):
                if not float(value).is_integer():
                    raise ConfigError(f"SynthConfig.{f.name} must be an integer, got {value!r}")
                object.__setattr__(self, f.name, int(value))
            if not np.isfinite(value):
                raise ConfigError(f"SynthConfig.{f.name} must be finite, got {value!r}")
            if f.name in _RANGES:
                lo, hi = _RANGES[f.name]
                if not lo <= value <= hi:
                    raise ConfigError(f"SynthConfig.{f.name} must be in [{lo}, {hi}], got {value!r}")
        if self.dims not in (2, 3):
            raise ConfigError(f"SynthConfig.dims must be 2 or 3, got {self.dims!r}")
        if self.lesion_radius > self.organ_radius:
            raise ConfigError(
                f"SynthConfig.lesion_radius ({self.lesion_radius}) must not exceed organ_radius ({self.organ_radius})"
            )
        if self.val_fraction + self.test_fraction >= 0.95:
            raise ConfigError(
                f"SynthConfig.val_fraction + test_fraction must be below 0.95 (some cases must train), got "
                f"{self.val_fraction} + {self.test_fraction}"
            )
        return self

    @property
    def split_fractions(self) -> tuple[float, float, float]:
        """``(train, val, test)`` fractions of the fixed split."""
        return (1.0 - self.val_fraction - self.test_fraction, self.val_fraction, self.test_fraction)


@dataclass(frozen=True)
class SynthTruth:
    """The hidden ground truth behind one synthetic case (for tests and analysis).

    Attributes:
        labels: ``(*spatial)`` int64 true class map.
        faintness: ``(*spatial)`` float32 f in [0, 1] (1 = faint boundary: blurred and low contrast).
        distance: ``(K − 1, *spatial)`` float32 signed distance d_k (voxels, > 0 inside) to the boundary of
            structure k = 1..K−1; the boundary lies at 0, the first voxel on each side at ±0.5.
        rater_offsets: ``(R, *spatial)`` float32 boundary shift ℓ·f·(b_r + rater_noise·z_r) of each rater.
        level: The case's disagreement level ℓ (1 unless ``disagreement_spread`` > 0).
    """

    labels: np.ndarray
    faintness: np.ndarray
    distance: np.ndarray
    rater_offsets: np.ndarray
    level: float = 1.0

    @property
    def boundary_distance(self) -> np.ndarray:
        """Unsigned distance to the nearest true boundary of any structure: ``min_k |d_k|`` ``(*spatial)``."""
        return np.abs(self.distance).min(0)


def class_names(num_classes: int) -> list[str]:
    """Class names of the synthetic data: background, organ, lesion, then ``structure3``, ``structure4``, ...."""
    base = ["background", "organ", "lesion"]
    return (base + [f"structure{k}" for k in range(3, num_classes)])[:num_classes]


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field with correlation length ~``sigma`` voxels, ``shape`` float32.

    For large ``sigma`` the white noise is drawn on a coarser grid (factor ``sigma // 3``), filtered there and
    linearly upsampled, which keeps the cost low for 3D volumes.
    """
    factor = max(1, int(sigma // 3))
    coarse = tuple(-(-s // factor) for s in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse), sigma / factor, mode="wrap")
    if factor > 1:
        field = ndimage.zoom(field, [s / c for s, c in zip(shape, coarse)], order=1)
    field = field - field.mean()
    std = field.std()
    return (field / std if std > 0 else field).astype(np.float32)


def _rotation(rng: np.random.Generator, dims: int) -> np.ndarray:
    """Uniformly random rotation matrix ``(dims, dims)``."""
    q, r = np.linalg.qr(rng.standard_normal((dims, dims)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n > 1:
        counts = np.bincount(lab.ravel())
        counts[0] = 0
        mask = lab == counts.argmax()
    return ndimage.binary_fill_holes(mask)


def _blob(
    rng: np.random.Generator, grid: np.ndarray, center: np.ndarray, radii: np.ndarray, irregularity: float
) -> np.ndarray:
    """A deformed ellipse/ellipsoid ``{1 − r(x) + irregularity·z(x) > 0}`` as a boolean ``(*spatial)`` mask."""
    dims = grid.shape[0]
    rot = _rotation(rng, dims)
    rel = grid - center.reshape((dims,) + (1,) * dims)
    u = np.tensordot(rot.T, rel, axes=1)
    r = np.sqrt(sum((u[i] / radii[i]) ** 2 for i in range(dims)))
    z = _smooth_field(rng, grid.shape[1:], max(1.5, 0.35 * float(radii.mean())))
    mask = _largest_component((1.0 - r + irregularity * z) > 0)
    if not mask.any():
        mask = r < 1.0
    if not mask.any():
        mask = np.zeros(grid.shape[1:], dtype=bool)
        mask[tuple(np.clip(np.round(center).astype(int), 0, grid.shape[1] - 1))] = True
    return mask


def _signed_distance(mask: np.ndarray) -> np.ndarray:
    """Signed distance to the mask boundary (> 0 inside): ±(EDT − 0.5), float32."""
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    return np.where(mask, inside - 0.5, -(outside - 0.5)).astype(np.float32)


def _place(
    rng: np.random.Generator, grid: np.ndarray, region: np.ndarray, radius: float, irregularity: float
) -> np.ndarray:
    """A blob of mean semi-axis ~``radius`` at a random point of ``region``, kept >= 2 voxels inside it.

    The centre is drawn among the voxels at distance >= 1.3·radius + 2 from the region's edge; when there is
    none, the deepest voxel is used and the radius shrunk to fit.
    """
    room = ndimage.distance_transform_edt(region)
    candidates = np.argwhere(room >= 1.3 * radius + 2.0)
    if len(candidates) == 0:
        center = np.array(np.unravel_index(room.argmax(), room.shape), dtype=np.float64)
        radius = max(1.5, (float(room.max()) - 2.0) / 1.3)
    else:
        center = candidates[rng.integers(len(candidates))].astype(np.float64)
    radii = radius * rng.uniform(0.85, 1.15, int(grid.shape[0]))  # an int size: an array, not a float
    inner = room >= 2.0
    return _blob(rng, grid, center, radii, irregularity) & (inner if inner.any() else region)


def disagreement_level(index: int, cfg: SynthConfig) -> float:
    """The per-case disagreement level ℓ of case ``index``: 1 when ``cfg.disagreement_spread`` is 0, else
    ``U(1 − s, 1 + s)`` drawn from ``SeedSequence([seed, index, 1])`` (independent of the case's other draws).

    Example:
        >>> disagreement_level(3, SynthConfig())
        1.0
        >>> 0.0 <= disagreement_level(3, SynthConfig(disagreement_spread=1.0)) <= 2.0
        True
    """
    s = float(cfg.disagreement_spread)
    if s == 0:
        return 1.0
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), int(index), 1]))
    return float(rng.uniform(1.0 - s, 1.0 + s))


def _class_means(rng: np.random.Generator, num_classes: int, jitter: float) -> np.ndarray:
    """Mean intensity per class: 0 (background), 1 (organ), 1 + k/2 for inner classes, −(k−1)/2 for outer ones."""
    means = np.zeros(num_classes)
    for k in range(1, num_classes):
        means[k] = 1.0 if k == 1 else (1.0 + k / 2 if k % 2 == 0 else -(k - 1) / 2)
    return means * (1.0 + jitter * rng.uniform(-1.0, 1.0, num_classes))


@overload
def generate_case(index: int, cfg: SynthConfig, return_truth: Literal[False] = False) -> Case: ...
@overload
def generate_case(index: int, cfg: SynthConfig, return_truth: Literal[True]) -> tuple[Case, SynthTruth]: ...
@overload
def generate_case(index: int, cfg: SynthConfig, return_truth: bool) -> Case | tuple[Case, SynthTruth]: ...
def generate_case(index: int, cfg: SynthConfig, return_truth: bool = False) -> Case | tuple[Case, SynthTruth]:
    """Generate synthetic case ``index`` (deterministic in ``(cfg.seed, index)``, independent of other cases).

    Args:
        index: Case number (>= 0); the case id is ``synth_{index:04d}``.
        cfg: Generator settings.
        return_truth: Also return the hidden :class:`SynthTruth` (true labels, faintness, distances, offsets).

    Returns:
        A :class:`Case` with image ``(1, *spatial)`` float32 (zero mean, unit std) and labels ``(R, *spatial)``
        int64 in ``[0, K)``; with ``return_truth`` the pair ``(case, truth)``.
    """
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"index must be a non-negative integer, got {index!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), int(index)]))
    size, dims, K = cfg.size, cfg.dims, cfg.num_classes
    shape = (size,) * dims
    grid = np.indices(shape, dtype=np.float32)
    level = disagreement_level(int(index), cfg)
    blur, drop = cfg.faint_blur, cfg.contrast_drop
    if level != 1.0:
        blur, drop = blur * level, min(1.0, drop * level)

    # 1. shapes
    center = size / 2 - 0.5 + rng.uniform(-0.1, 0.1, dims) * size
    organ = _blob(rng, grid, center, cfg.organ_radius * size * rng.uniform(0.8, 1.2, dims), cfg.irregularity)
    masks = [organ]
    for k in range(2, K):
        taken = np.any(masks[1:], axis=0) if len(masks) > 1 else np.zeros(shape, dtype=bool)
        if k % 2 == 0:  # inside the organ
            region = organ & ~ndimage.binary_dilation(taken)
            radius = cfg.lesion_radius * size * rng.uniform(0.8, 1.2)
        else:  # beside it
            region = ~ndimage.binary_dilation(organ | taken, iterations=2)
            border = np.ones(shape, dtype=bool)
            border[tuple(slice(1, -1) for _ in range(dims))] = False
            region &= ~border
            radius = 1.5 * cfg.lesion_radius * size * rng.uniform(0.8, 1.2)
        if not region.any():
            region = organ.copy()
        masks.append(_place(rng, grid, region, radius, cfg.irregularity))
    truth_labels = np.zeros(shape, dtype=np.int64)
    for k, m in enumerate(masks, start=1):
        truth_labels[m] = k
    distance = np.stack([_signed_distance(m) for m in masks])

    # 2. faintness
    threshold = special.ndtri(1.0 - cfg.faint_fraction) if 0 < cfg.faint_fraction < 1 else None
    zf = _smooth_field(rng, shape, max(2.0, 0.12 * size))
    if threshold is None:
        faint = np.full(shape, float(cfg.faint_fraction >= 1.0), dtype=np.float32)
    else:
        faint = special.expit((zf - threshold) / 0.25).astype(np.float32)

    # 3. image
    means = _class_means(rng, K, cfg.contrast_jitter)
    gain = np.where(np.arange(K) == 0, 0.5, 1.0)
    tex = _smooth_field(rng, shape, max(1.0, size / 48))
    img = means[truth_labels] + cfg.texture * gain[truth_labels] * tex
    if blur > 0 or drop > 0:
        blurred = ndimage.gaussian_filter(img, blur) if blur > 0 else img
        local_mean = ndimage.gaussian_filter(img, 3.0 * blur + 2.0)
        faint_img = local_mean + (1.0 - drop) * (blurred - local_mean)
        img = (1.0 - faint) * img + faint * faint_img
    img = img + cfg.noise * rng.standard_normal(shape)
    std = img.std()
    img = ((img - img.mean()) / (std if std > 0 else 1.0)).astype(np.float32)

    # 4. raters
    R = cfg.raters
    biases = np.zeros(R)
    if R >= 2:
        biases[0], biases[1] = cfg.rater_bias, -cfg.rater_bias
    offsets = np.empty((R, *shape), dtype=np.float32)
    labels = np.zeros((R, *shape), dtype=np.int64)
    for r in range(R):
        zr = _smooth_field(rng, shape, max(1.5, 0.06 * size))
        offsets[r] = faint * (biases[r] + cfg.rater_noise * zr)
        if level != 1.0:
            offsets[r] *= level
        for k in range(1, K):
            labels[r][distance[k - 1] + offsets[r] > 0] = k

    case_id = f"synth_{int(index):04d}"
    meta: dict[str, object] = {"source": "synthetic", "seed": int(cfg.seed), "index": int(index)}
    if cfg.disagreement_spread > 0:
        meta["disagreement_level"] = level
    case = Case(case_id=case_id, image=img[None], labels=labels, group=case_id, meta=meta)
    if return_truth:
        return case, SynthTruth(truth_labels, faint, distance, offsets, level)
    return case


def generate_cases(cfg: SynthConfig) -> Iterator[Case]:
    """Yield cases ``0 .. cfg.cases − 1`` (see :func:`generate_case`)."""
    for i in range(cfg.cases):
        yield generate_case(i, cfg)


def make_synthetic_dataset(
    out: str | Path,
    cfg: SynthConfig | None = None,
    ext: str = ".nii.gz",
    progress: bool = False,
    overwrite: bool = False,
) -> Path:
    """Generate ``cfg.cases`` cases and write them as a trustseg dataset, split by ``cfg.split_fractions``.

    Args:
        out: Dataset folder to create.
        cfg: Generator settings (defaults: :class:`SynthConfig`).
        ext: File format of images and labels (".nii.gz", ".png", ".npy", ...).
        progress: Show a progress bar.
        overwrite: Replace an earlier trustseg dataset at ``out``; any other non-empty ``out`` is refused
            (:func:`trustseg.data.dataset.check_dataset_out`).

    Returns:
        The dataset folder.
    """
    cfg = SynthConfig() if cfg is None else cfg
    return write_dataset(
        generate_cases(cfg),
        out,
        class_names(cfg.num_classes),
        name="synthetic",
        ext=ext,
        seed=cfg.seed,
        fractions=cfg.split_fractions,
        progress=progress,
        overwrite=overwrite,
    )
