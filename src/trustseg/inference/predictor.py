"""The ``Predictor`` protocol: anything that turns an image into a :class:`~trustseg.core.predictive.Predictive`.

A predictor owns its preprocessing (intensity normalisation, padding, sliding window) and its device; callers
hand it raw images as they are stored. A trained trustseg run is the first implementation
(:class:`~trustseg.inference.run_predictor.RunPredictor`); adapters for models trained elsewhere register under
their own scheme. ``trustseg predict``, the OOD and noise protocols and the quality layer all take any predictor.

Predictors are registered in :data:`PREDICTORS` by scheme, and a model is named ``SCHEME:LOCATION``
(``run:runs/softmax``); a bare path is a trustseg run folder. Each registered factory declares its metadata:
``doc`` and ``capabilities`` (what its predictions can carry: ``samples`` (M > 1), ``alpha``, ``extras``,
``temperature``) and, optionally, ``options``: the keyword options it accepts beyond ``device``
(``trustseg predict`` refuses its ``--tta``/``--mc-dropout``/``--patch-size`` for schemes that do not list them).
Two capabilities are contracts on the predictor object (:class:`LogitPredictor`): ``logits`` (it offers
``predict_logits``: ``trustseg calibrate --model`` fits a temperature from them) and ``temperature`` (a settable
float attribute ``temperature`` T dividing its logits: ``trustseg predict --temperature`` sets it).
A third, ``members`` (:class:`MemberPredictor`), says it holds several independent member networks and predicts
them one at a time (``trustseg predict --shard members`` spreads them over ``torchrun`` ranks).
A predictor may also offer ``predict_consuming(image, spacing)``: the same prediction, allowed to normalise the
caller's array in place (``trustseg predict`` uses it when it does not need the raw image).

Example:
    >>> sorted(PREDICTORS.names())
    ['bundle', 'nnunet', 'run', 'state_dict', 'torchscript']
    >>> split_spec("run:runs/softmax")
    ('run', 'runs/softmax')
    >>> split_spec("runs/softmax")
    ('run', 'runs/softmax')
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from trustseg.core.errors import DataError
from trustseg.core.predictive import Predictive
from trustseg.core.registry import Registry


@dataclass(frozen=True)
class PredictorInfo:
    """What a predictor needs and offers.

    Attributes:
        classes: Class names, background first (``K = len(classes)``).
        in_channels: Image channels ``C`` it expects.
        spatial_dims: 2 or 3.
        method: Name of the uncertainty method behind it (for reports).
        num_samples: ``M`` of its predictions, when fixed and known (``None`` otherwise).
        primary_measure: The measure that is the method's own uncertainty map (e.g. ``entropy``, ``vacuity``).
        samples_are_heads: Its samples are decoder heads, coarse to fine (layer ensembles: AULA applies).
        capabilities: Optional features of its predictions (``samples``, ``alpha``, ``extras``, ``temperature``).
        intensity_scale: Per-channel intensity scale of its normalisation in raw units (the training std for
            z-score), so that protocols can state distortion severities in normalised units; ``None`` = 1.
        source: Where it was loaded from.
    """

    classes: tuple[str, ...]
    in_channels: int
    spatial_dims: int
    method: str = ""
    num_samples: int | None = None
    primary_measure: str = "entropy"
    samples_are_heads: bool = False
    capabilities: frozenset[str] = field(default_factory=frozenset)
    intensity_scale: tuple[float, ...] | None = None
    source: str = ""

    @property
    def num_classes(self) -> int:
        """K (background included)."""
        return len(self.classes)


@runtime_checkable
class Predictor(Protocol):
    """Images in, :class:`Predictive` out.

    ``predict`` takes one raw image ``(C, *spatial)`` (numpy or torch, as stored: the predictor normalises it) and
    its voxel spacing, and returns a Predictive with ``B = 1`` on the CPU in float32.
    """

    @property
    def info(self) -> PredictorInfo:
        """What the predictor needs and offers."""
        ...

    def predict(self, image: np.ndarray | Tensor, spacing: Sequence[float] | None = None) -> Predictive:
        """Predict one image ``(C, *spatial)``; returns ``B = 1``, CPU, float32."""
        ...


@runtime_checkable
class LogitPredictor(Predictor, Protocol):
    """A predictor with the capabilities ``logits`` and ``temperature`` (what a new adapter, e.g. nnU-Net's,
    implements to be calibrated by ``trustseg calibrate --model`` and tempered by ``trustseg predict
    --temperature``).

    Attributes:
        temperature: T > 0; ``predict`` returns ``softmax(z / T)`` over the classes for each sample's logits z.
    """

    temperature: float

    def predict_logits(self, image: np.ndarray | Tensor, spacing: Sequence[float] | None = None) -> Tensor:
        """Untempered sample logits ``(M, 1, K, *spatial)`` of one raw image, float32 on the CPU: the z of the
        same samples ``predict`` returns (``predict(image).probs ≈ softmax(z / temperature, dim=2)``)."""
        ...


@runtime_checkable
class MemberPredictor(Predictor, Protocol):
    """A predictor with the capability ``members``: several independent member networks (an ensemble) whose
    predictions together are ``predict``'s (``trustseg predict --shard members``).

    Attributes:
        member_count: The number of members.
    """

    member_count: int

    def predict_members(
        self, image: np.ndarray | Tensor, spacing: Sequence[float] | None = None, members: Sequence[int] | None = None
    ) -> Iterator[Predictive]:
        """The prediction of each member in ``members`` (default all), one at a time, each ``(S, 1, K, *spatial)``
        float32 on the CPU; together (all members) the samples ``predict`` returns."""
        ...


#: scheme -> factory(location: str, device: str | torch.device, **options) -> Predictor
PREDICTORS: Registry[Callable[..., Predictor]] = Registry("predictor")


def split_spec(spec: str | Path) -> tuple[str, str]:
    """``"scheme:location"`` -> ``(scheme, location)``; a bare path (or an unknown prefix) is a ``run`` folder."""
    text = str(spec)
    scheme, sep, rest = text.partition(":")
    if sep and scheme in PREDICTORS:
        return scheme, rest
    return "run", text


def load_predictor(spec: str | Path, device: str | torch.device = "auto", **options: Any) -> Predictor:
    """The predictor named by ``spec`` (``SCHEME:LOCATION``, or a run folder), on ``device``.

    Raises:
        UnknownNameError: an unknown scheme ("did you mean").
        DataError: the location is not a model of that kind.
    """
    scheme, location = split_spec(spec)
    return PREDICTORS.get(scheme)(location, device, **options)


def check_image(info: PredictorInfo, image: np.ndarray | Tensor, source: str | Path | None = None) -> None:
    """Raise a clear :class:`~trustseg.core.errors.DataError` when ``image`` does not fit the predictor.

    Checks the number of spatial axes, that none is empty, the channels and that every value is finite.
    """
    from_path = Path(source) if source is not None else None
    shape = tuple(image.shape)
    if len(shape) - 1 != info.spatial_dims:
        raise DataError(f"image is {len(shape) - 1}D, the model was trained on {info.spatial_dims}D images", from_path)
    if 0 in shape[1:]:
        raise DataError(f"image of spatial shape {shape[1:]} has no voxels: nothing to predict", from_path)
    if shape[0] != info.in_channels:
        raise DataError(f"image has {shape[0]} channels, the model was trained on {info.in_channels}", from_path)
    if not _all_finite(image):
        raise DataError("image contains NaN or infinite values", from_path)


def _all_finite(image: np.ndarray | Tensor, slab_voxels: int = 1 << 20) -> bool:
    """Whether every value of ``image`` ``(C, *spatial)`` is finite, checked slab by slab along the first spatial
    axis (the boolean temporary stays slab-sized)."""
    if image.ndim < 2:
        return bool(torch.isfinite(image).all() if isinstance(image, Tensor) else np.isfinite(image).all())
    per_row = max(1, int(np.prod(image.shape[2:])) * int(image.shape[0]))
    step = max(1, slab_voxels // per_row)
    for i in range(0, int(image.shape[1]), step):
        part = image[:, i : i + step]
        if not bool(torch.isfinite(part).all() if isinstance(part, Tensor) else np.isfinite(part).all()):
            return False
    return True
