"""What the quality layer reads about one case: the prediction (mean probabilities, segmentation, uncertainty
maps, optionally the samples) and, for the image-based predictor, the image.

:class:`CaseInput` is the one exchange type between the prediction folder (:func:`case_input` turns
:func:`trustseg.data.predictions.load_prediction`'s arrays into it), the feature extractor
(:mod:`trustseg.quality.features`) and the CNN predictor (:mod:`trustseg.quality.cnn`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from trustseg.core.errors import DataError


@dataclass
class CaseInput:
    """One predicted case, unbatched.

    Attributes:
        case_id: The case's id.
        probs: ``(K, *spatial)`` float32, the predictive mean p̄.
        seg: ``(*spatial)`` int64, the predicted classes (argmax of p̄ unless the writer says otherwise).
        maps: measure name -> ``(*spatial)`` float32, as the prediction folder stores it (raw values; a
            certainty such as ``confidence`` is *not* flipped: orient with
            :func:`trustseg.measures.registry.as_uncertainty`).
        samples: ``(M, K, *spatial)`` float32 sample probabilities, or None (folder written without
            ``--samples``).
        layer_heads: The samples are layer-ensemble heads in coarse-to-fine order (AULA applies).
        spacing: Voxel spacing per spatial axis (None: 1 per axis).
        image: ``(C, *spatial)`` float32 intensities, or None (only the image-based predictor needs it).
    """

    case_id: str
    probs: Tensor
    seg: Tensor
    maps: dict[str, Tensor] = field(default_factory=dict)
    samples: Tensor | None = None
    layer_heads: bool = False
    spacing: tuple[float, ...] | None = None
    image: Tensor | None = None

    def __post_init__(self) -> None:
        sp = tuple(self.seg.shape)
        where = f"case {self.case_id!r}"
        if self.probs.dim() != len(sp) + 1 or tuple(self.probs.shape[1:]) != sp:
            raise DataError(f"{where}: probabilities {tuple(self.probs.shape)} do not match the segmentation {sp}")
        for name, m in self.maps.items():
            if tuple(m.shape) != sp:
                raise DataError(f"{where}: map {name!r} has shape {tuple(m.shape)}, the segmentation {sp}")
        if self.samples is not None and tuple(self.samples.shape[1:]) != tuple(self.probs.shape):
            raise DataError(f"{where}: samples {tuple(self.samples.shape)} do not match probabilities")
        if self.image is not None and tuple(self.image.shape[1:]) != sp:
            raise DataError(f"{where}: image {tuple(self.image.shape)} does not match the segmentation {sp}")
        if self.spacing is not None and len(self.spacing) != len(sp):
            raise DataError(f"{where}: spacing {self.spacing} has {len(self.spacing)} axes, the image {len(sp)}")

    @property
    def num_classes(self) -> int:
        """K, background included."""
        return int(self.probs.shape[0])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """The spatial sizes."""
        return tuple(self.seg.shape)

    @property
    def voxel_volume(self) -> float:
        """Product of the spacing (1.0 without spacing)."""
        return float(np.prod(self.spacing)) if self.spacing is not None else 1.0


def case_input(
    case_id: str,
    loaded: Mapping[str, Any],
    *,
    layer_heads: bool = False,
    spacing: Sequence[float] | None = None,
    image: np.ndarray | Tensor | None = None,
) -> CaseInput:
    """A :class:`CaseInput` from the arrays of :func:`trustseg.data.predictions.load_prediction`.

    Args:
        case_id: The case's id.
        loaded: ``{"probs", "seg", "maps", "samples"}`` as ``load_prediction`` returns them.
        layer_heads: The method's samples are layer-ensemble heads.
        spacing: Voxel spacing.
        image: ``(C, *spatial)`` intensities (optional).

    Raises:
        DataError: a folder without probabilities (segmentation only: the quality features need p̄), or shapes
            that do not agree.
    """
    if loaded.get("probs") is None:
        raise DataError(f"case {case_id!r} has no probabilities in the prediction folder (segmentation only)")
    samples = loaded.get("samples")
    return CaseInput(
        case_id=case_id,
        probs=torch.as_tensor(np.asarray(loaded["probs"], dtype=np.float32)),
        seg=torch.as_tensor(np.asarray(loaded["seg"], dtype=np.int64)),
        maps={k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in loaded.get("maps", {}).items()},
        samples=None if samples is None else torch.as_tensor(np.asarray(samples, dtype=np.float32)),
        layer_heads=layer_heads,
        spacing=None if spacing is None else tuple(float(s) for s in spacing),
        image=None if image is None else torch.as_tensor(np.asarray(image, dtype=np.float32)),
    )
