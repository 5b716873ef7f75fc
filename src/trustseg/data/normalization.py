"""Intensity normalisation: statistics fitted once on the training cases, applied to every image a model sees.

Schemes (``NormConfig.scheme``), per channel ``c``:

- ``zscore`` (default): fitted = mean ``m_c`` and std ``s_c`` of all voxels of all training images; applied =
  ``(x − m_c) / s_c``.
- ``ct``: fitted on the foreground voxels of the training images = mean ``m_c``, std ``s_c`` and the percentiles
  ``l_c = P_low``, ``h_c = P_high``; applied = ``(clip(x, l_c, h_c) − m_c) / s_c``.
- ``percentile``: nothing the transform needs (``m_c``, ``s_c`` as for zscore, for ``scale`` only); applied =
  clip each channel to the image's own ``[P_low, P_high]`` percentiles, then z-score it with the clipped
  channel's own mean and std.
- ``none``: ``x`` as float32.

``P_low, P_high = NormConfig.percentiles`` (default 0.5 and 99.5, numpy's linear interpolation). Stds are
population stds (``ddof = 0``); a std of 0 (a constant channel) is replaced by 1, so such a channel becomes
``x − m_c`` instead of a division by zero.

Relation to nnU-Net (``nnunetv2/preprocessing/normalization/default_normalization_schemes.py`` and the dataset
fingerprint extractor):

- ``ct`` follows nnU-Net's ``CTNormalization``: clip to the 0.5/99.5 percentiles of the training foreground,
  then subtract the foreground mean and divide by the foreground std, the mean and std being those of the
  *unclipped* foreground intensities, as nnU-Net's. Differences: nnU-Net estimates all four numbers from a fixed
  number of foreground voxels drawn with replacement per case (10⁸ / cases), so every case weighs the same; here
  every foreground voxel weighs the same, the mean and std are exact (streamed), and the percentiles come from a
  seeded uniform reservoir sample of ``NormConfig.reservoir`` foreground voxels (exact while the training set has
  no more foreground voxels than that; otherwise the percentile estimate has a standard error of about
  ``sqrt(p(1 − p) / n) / f(q)`` for a density ``f`` at the quantile). Foreground = any rater's label > 0.
  nnU-Net divides by ``max(s, 1e-8)``; here a zero std becomes 1.
- ``zscore`` differs from nnU-Net's ``ZScoreNormalization``: nnU-Net z-scores each case with its *own* mean and
  std; here the mean and std are the training set's, one pair per channel, so relative intensities between
  cases survive (and a distortion that changes an image's own statistics is not normalised away). nnU-Net's
  ``use_mask_for_norm`` (z-scoring only the non-zero region) has no counterpart.
- ``percentile`` is the per-image scheme: clipping to the image's own percentiles, then nnU-Net's per-case
  z-score of the clipped image.
- ``none`` is nnU-Net's ``noNorm``.

Memory: :func:`fit_normalization` streams over the cases (one case at a time): the means and stds are merged
exactly case by case (Chan et al.'s pairwise update), the ``ct`` percentiles are read from a reservoir of at
most ``NormConfig.reservoir`` voxels per channel (Algorithm R, ``numpy.random.default_rng(NormConfig.seed)``,
fed in chunks of 2²⁰ voxels), so memory is bounded by the largest case plus the reservoir.

``NormStats.scale`` is the size of one normalised unit in raw units, per channel (``s_c``; 1 for ``none``):
a distortion given ``scale=stats.scale`` (``trustseg.data.distortions``) applied to a raw image means the same
as the same distortion applied, in normalised units, to the normalised image. For ``percentile`` the divisor
differs per image; its ``scale`` is the training set's pooled std, an approximation.

Example:
    >>> import numpy as np
    >>> images = [np.array([[[0.0, 2.0]]]), np.array([[[4.0, 6.0]]])]
    >>> stats = fit_normalization(images, None, NormConfig("zscore"))
    >>> stats.mean, round(stats.std[0], 4)
    ((3.0,), 2.2361)
    >>> stats.apply(np.array([[[3.0, 5.2361]]])).round(3).tolist()
    [[[0.0, 1.0]]]
    >>> NormStats.from_dict(stats.to_dict()) == stats
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np

from trustseg.core.errors import ConfigError, DataError

Scheme = Literal["zscore", "ct", "percentile", "none"]

SCHEMES: tuple[str, ...] = ("zscore", "ct", "percentile", "none")

_CHUNK = 1 << 20


@dataclass(frozen=True)
class NormConfig:
    """How intensities are normalised (see the module docstring for each scheme).

    Attributes:
        scheme: ``zscore`` (training-set z-score per channel), ``ct`` (nnU-Net's CT scheme), ``percentile``
            (per-image clip and z-score) or ``none``.
        percentiles: ``(P_low, P_high)`` in percent, the clipping range of ``ct`` and ``percentile``.
        reservoir: Foreground voxels kept per channel to estimate the ``ct`` percentiles.
        seed: Seed of the reservoir sample.
    """

    scheme: Scheme = "zscore"
    percentiles: tuple[float, float] = (0.5, 99.5)
    reservoir: int = 1_000_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(f"normalization.scheme must be one of {list(SCHEMES)}, got {self.scheme!r}")
        p = tuple(self.percentiles)
        if len(p) != 2 or not all(math.isfinite(float(v)) for v in p) or not 0.0 <= p[0] < p[1] <= 100.0:
            raise ConfigError(f"normalization.percentiles must be [low, high] with 0 <= low < high <= 100, got {p}")
        if self.reservoir < 1:
            raise ConfigError(f"normalization.reservoir must be >= 1, got {self.reservoir}")


@dataclass(frozen=True)
class NormStats:
    """Fitted normalisation statistics of one training set; JSON-able (:meth:`to_dict`, :meth:`from_dict`).

    Attributes:
        scheme: The scheme (``zscore``, ``ct``, ``percentile`` or ``none``).
        mean: Per-channel mean ``m_c`` (``ct``: of the foreground voxels; else of all voxels).
        std: Per-channel population std ``s_c``, same voxels.
        low: ``ct``: per-channel lower clip ``l_c`` (the ``P_low`` percentile of the foreground); else ``None``.
        high: ``ct``: per-channel upper clip ``h_c``; else ``None``.
        percentiles: ``(P_low, P_high)`` of the config.
        count: Voxels per channel the mean and std were computed on.
    """

    scheme: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    percentiles: tuple[float, float] = (0.5, 99.5)
    count: int = 0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise DataError(f"normalisation statistics: unknown scheme {self.scheme!r} (known: {list(SCHEMES)})")
        c = len(self.mean)
        if c < 1 or len(self.std) != c:
            raise DataError(f"normalisation statistics: need one mean and one std per channel, got {self.mean}")
        if self.scheme == "ct" and (self.low is None or self.high is None or len(self.low) != c or len(self.high) != c):
            raise DataError("normalisation statistics: the ct scheme needs one clip range (low, high) per channel")
        values = [*self.mean, *self.std, *(self.low or ()), *(self.high or ())]
        if not all(math.isfinite(v) for v in values) or any(s < 0 for s in self.std):
            raise DataError(f"normalisation statistics: non-finite or negative values in {self.to_dict()}")

    @property
    def channels(self) -> int:
        """C, the number of image channels the statistics were fitted on."""
        return len(self.mean)

    @property
    def scale(self) -> tuple[float, ...]:
        """Raw intensity units per normalised unit, per channel: ``s_c`` (1 where ``s_c = 0``); ones for ``none``."""
        if self.scheme == "none":
            return (1.0,) * self.channels
        return tuple(s if s > 0 else 1.0 for s in self.std)

    @property
    def pointwise(self) -> bool:
        """Whether each voxel is normalised on its own (every scheme but the per-image ``percentile``), so that an
        image may be normalised slab by slab with the same result."""
        return self.scheme != "percentile"

    def apply(self, image: Any, where: str | None = None) -> np.ndarray:
        """Normalise one image.

        Args:
            image: ``(C, *spatial)`` array with ``C == self.channels``, finite values.
            where: The image's file or case id, named in errors.

        Returns:
            ``(C, *spatial)`` float32 normalised image.

        Raises:
            DataError: for a channel mismatch, fewer than 1 spatial axis, or NaN/Inf values.
        """
        x = _check_image(image, where, self.channels).astype(np.float64)
        shape = (-1,) + (1,) * (x.ndim - 1)
        if self.scheme == "none":
            return x.astype(np.float32)
        if self.scheme == "percentile":
            flat = x.reshape(x.shape[0], -1)
            lo, hi = np.percentile(flat, self.percentiles, axis=1)
            x = np.clip(x, lo.reshape(shape), hi.reshape(shape))
            axes = tuple(range(1, x.ndim))
            std = x.std(axis=axes, keepdims=True)
            return ((x - x.mean(axis=axes, keepdims=True)) / np.where(std > 0, std, 1.0)).astype(np.float32)
        if self.scheme == "ct":
            x = np.clip(x, np.asarray(self.low).reshape(shape), np.asarray(self.high).reshape(shape))
        mean = np.asarray(self.mean).reshape(shape)
        return ((x - mean) / np.asarray(self.scale).reshape(shape)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: ``{"scheme", "mean", "std", "low", "high", "percentiles", "count"}``."""
        return {
            "scheme": self.scheme,
            "mean": list(self.mean),
            "std": list(self.std),
            "low": None if self.low is None else list(self.low),
            "high": None if self.high is None else list(self.high),
            "percentiles": list(self.percentiles),
            "count": int(self.count),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str | None = None) -> NormStats:
        """Rebuild statistics written by :meth:`to_dict` (e.g. from a run's ``run.json``).

        Args:
            data: The mapping.
            where: The file it was read from, named in errors.

        Raises:
            DataError: for a missing or unknown key, or values of the wrong kind.
        """
        if not isinstance(data, dict):
            raise DataError(f"normalisation statistics must be a mapping, got {type(data).__name__}", where)
        known = {"scheme", "mean", "std", "low", "high", "percentiles", "count"}
        missing, unknown = {"scheme", "mean", "std"} - set(data), set(data) - known
        if missing or unknown:
            raise DataError(
                f"normalisation statistics: missing keys {sorted(missing)}, unknown keys {sorted(unknown)}", where
            )

        def floats(key: str) -> tuple[float, ...] | None:
            v = data.get(key)
            if v is None:
                return None
            try:
                return tuple(float(x) for x in v)
            except (TypeError, ValueError):
                raise DataError(
                    f"normalisation statistics: {key!r} must be a list of numbers, got {v!r}", where
                ) from None

        try:
            return cls(
                scheme=str(data["scheme"]),
                mean=floats("mean") or (),
                std=floats("std") or (),
                low=floats("low"),
                high=floats("high"),
                # a [low, high] pair, as to_dict writes it from a checked NormConfig
                percentiles=cast(tuple[float, float], floats("percentiles") or (0.5, 99.5)),
                count=int(data.get("count", 0)),
            )
        except DataError as e:
            if where is None:
                raise
            raise DataError(e.problem, where) from None


def _name(where: str | None, index: int | None = None) -> str:
    if where is not None:
        return str(where)
    return "image" if index is None else f"image {index}"


def _check_image(image: Any, where: str | None, channels: int | None, index: int | None = None) -> np.ndarray:
    x = np.asarray(image)
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise DataError(f"{_name(where, index)}: expected a real (C, *spatial) image, got shape {x.shape} {x.dtype}")
    if channels is not None and x.shape[0] != channels:
        raise DataError(
            f"{_name(where, index)}: has {x.shape[0]} channels, the normalisation statistics were fitted on {channels}"
        )
    if not np.isfinite(x).all():
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise DataError(f"{_name(where, index)}: {bad} NaN/Inf intensities; normalisation needs finite values")
    return x


def _foreground(mask: Any, spatial: tuple[int, ...], where: str) -> np.ndarray:
    """A boolean ``(*spatial)`` foreground from a ``(*spatial)`` mask or ``(R, *spatial)`` label maps (any > 0)."""
    m = np.asarray(mask)
    if m.shape == spatial:
        return np.asarray(m > 0)
    if m.ndim == len(spatial) + 1 and m.shape[1:] == spatial:
        return np.asarray((m > 0).any(axis=0))
    raise DataError(f"{where}: foreground mask of shape {m.shape} does not match the image's spatial shape {spatial}")


class _Moments:
    """Per-channel count, mean and sum of squared deviations, merged exactly chunk by chunk (Chan et al.)."""

    def __init__(self, channels: int):
        self.n = 0
        self.mean = np.zeros(channels)
        self.m2 = np.zeros(channels)

    def add(self, values: np.ndarray) -> None:
        """Merge ``values`` ``(C, k)``."""
        k = values.shape[1]
        if k == 0:
            return
        mean_b = values.mean(axis=1)
        m2_b = ((values - mean_b[:, None]) ** 2).sum(axis=1)
        n = self.n + k
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (k / n)
        self.m2 = self.m2 + m2_b + delta**2 * (self.n * k / n)
        self.n = n

    def std(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.m2, 0.0) / max(self.n, 1))


class _Reservoir:
    """A uniform sample of at most ``capacity`` columns of a stream of ``(C, k)`` chunks (Algorithm R)."""

    def __init__(self, channels: int, capacity: int, seed: int):
        self.buf = np.empty((channels, capacity))
        self.capacity = capacity
        self.seen = 0
        self.rng = np.random.default_rng(seed)

    def add(self, values: np.ndarray) -> None:
        for start in range(0, values.shape[1], _CHUNK):
            self._add(values[:, start : start + _CHUNK])

    def _add(self, values: np.ndarray) -> None:
        k = values.shape[1]
        fill = min(k, max(0, self.capacity - self.seen))
        self.buf[:, self.seen : self.seen + fill] = values[:, :fill]
        rest = values[:, fill:]
        if rest.shape[1]:
            # item j (0-based position in the stream) replaces slot r ~ U{0..j} when r < capacity; the draws do not
            # depend on the buffer, so doing them at once and letting the last item per slot win equals the loop.
            j = np.arange(self.seen + fill, self.seen + k)
            r = self.rng.integers(0, j + 1)
            keep = np.flatnonzero(r < self.capacity)
            slots, first_from_end = np.unique(r[keep][::-1], return_index=True)
            self.buf[:, slots] = rest[:, keep[len(keep) - 1 - first_from_end]]
        self.seen += k

    def sample(self) -> np.ndarray:
        return self.buf[:, : min(self.seen, self.capacity)]


class NormFitter:
    """Streaming accumulator behind :func:`fit_normalization`: ``add`` one case at a time, then ``finish``.

    Args:
        cfg: The scheme and its settings.
    """

    def __init__(self, cfg: NormConfig | None = None):
        self.cfg = NormConfig() if cfg is None else cfg
        self.channels: int | None = None
        self.cases = 0
        self._moments: _Moments | None = None
        self._reservoir: _Reservoir | None = None

    def add(self, image: Any, mask: Any = None, where: str | None = None) -> None:
        """Add one ``(C, *spatial)`` image; ``mask`` (``ct`` only) as in :func:`fit_normalization`; ``where`` (the
        file or ``case '<id>'``) is named in errors.

        Raises:
            DataError: NaN/Inf intensities, a channel count other than the first case's, a mask of the wrong shape.
        """
        x = _check_image(image, where, self.channels, index=self.cases)
        if self.channels is None:
            self.channels = x.shape[0]
            self._moments = _Moments(self.channels)
            if self.cfg.scheme == "ct":
                self._reservoir = _Reservoir(self.channels, self.cfg.reservoir, self.cfg.seed)
        assert self._moments is not None  # set with the channel count by the first case
        values = x.reshape(self.channels, -1).astype(np.float64)
        if self.cfg.scheme == "ct" and mask is not None:
            values = values[:, _foreground(mask, x.shape[1:], _name(where, self.cases)).reshape(-1)]
        self._moments.add(values)
        if self._reservoir is not None:
            self._reservoir.add(values)
        self.cases += 1

    def finish(self) -> NormStats:
        """The fitted statistics.

        Raises:
            DataError: no image was added, or (``ct``) no foreground voxel in any of them.
        """
        if self._moments is None:
            raise DataError("fit_normalization: no training images")
        if self.cfg.scheme == "ct" and self._moments.n == 0:
            raise DataError(
                "fit_normalization: the ct scheme found no foreground voxel (label > 0) in the training cases"
            )
        low = high = None
        if self._reservoir is not None:
            lo, hi = np.percentile(self._reservoir.sample(), self.cfg.percentiles, axis=1)
            low, high = tuple(float(v) for v in lo), tuple(float(v) for v in hi)
        return NormStats(
            scheme=self.cfg.scheme,
            mean=tuple(float(v) for v in self._moments.mean),
            std=tuple(float(v) for v in self._moments.std()),
            low=low,
            high=high,
            percentiles=(float(self.cfg.percentiles[0]), float(self.cfg.percentiles[1])),
            count=int(self._moments.n),
        )


def fit_normalization(
    images: Iterable[Any],
    masks: Iterable[Any] | None = None,
    cfg: NormConfig | None = None,
    ids: Sequence[str] | None = None,
) -> NormStats:
    """Fit normalisation statistics on training images, streaming one case at a time.

    Args:
        images: Iterable of ``(C, *spatial)`` arrays (every case the same C; spatial sizes may differ).
        masks: Used by ``ct`` only: an iterable aligned with ``images`` of foreground masks ``(*spatial)`` or rater
            label maps ``(R, *spatial)`` (foreground = any rater's label > 0). ``None``: every voxel counts as
            foreground.
        cfg: The scheme and its settings (default ``NormConfig()``, i.e. ``zscore``).
        ids: Case ids aligned with ``images``, named in errors.

    Returns:
        The fitted :class:`NormStats`.

    Raises:
        DataError: no images, NaN/Inf intensities, a channel-count mismatch between cases, a mask of the wrong
            shape, a different number of masks and images, or (``ct``) no foreground voxel in the training set.
    """
    fitter = NormFitter(cfg)
    mask_iter = iter(masks) if masks is not None and fitter.cfg.scheme == "ct" else None
    for i, image in enumerate(images):
        where = f"case {ids[i]!r}" if ids is not None and i < len(ids) else None
        mask = None
        if mask_iter is not None:
            mask = next(mask_iter, None)
            if mask is None:
                raise DataError(f"{_name(where, i)}: no foreground mask (fewer masks than images)")
        fitter.add(image, mask, where)
    if mask_iter is not None and next(mask_iter, None) is not None:
        raise DataError("fit_normalization: more foreground masks than images")
    return fitter.finish()


def fit_case_normalization(
    get_case: Callable[[str], Any],
    ids: Sequence[str],
    cfg: NormConfig | None = None,
    get_image: Callable[[str], Any] | None = None,
) -> NormStats:
    """:func:`fit_normalization` over cases, each read once: images from ``.image``, ``ct`` masks from ``.labels``.

    Args:
        get_case: ``case_id -> Case`` (a ``Dataset`` works).
        ids: The training case ids.
        cfg: The scheme and its settings.
        get_image: ``case_id -> image`` reading the image alone (``Dataset.image``); used instead of ``get_case``
            by the schemes that need no foreground mask, so that no label is read.
    """
    fitter = NormFitter(cfg)
    for cid in ids:
        where = f"case {cid!r}"
        if get_image is not None and fitter.cfg.scheme != "ct":
            fitter.add(get_image(cid), None, where=where)
        else:
            case = get_case(cid)
            fitter.add(case.image, case.labels, where=where)
    return fitter.finish()
