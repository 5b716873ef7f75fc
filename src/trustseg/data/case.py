"""A case: one image with the label maps of R raters.

Shapes: ``image`` ``(C, *spatial)`` float32; ``labels`` ``(R, *spatial)`` int64 class indices in
``[0, K)``. Spatial is ``(H, W)`` or ``(D, H, W)``. Derived targets (soft label, majority vote, per-pixel rater
variance) follow ``../shared/docs/methods.md`` §1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Case:
    """One image and its rater annotations.

    Attributes:
        case_id: Unique id within a dataset.
        image: ``(C, *spatial)`` float32 intensities.
        labels: ``(R, *spatial)`` int64 class maps, one per rater (R >= 1).
        spacing: Voxel size per spatial axis (mm), same order as the spatial axes.
        origin: World position of the first voxel, per spatial axis.
        group: Grouping key for splits (e.g. the patient id); defaults to ``case_id``.
        meta: Free-form metadata (source file names, affine, ...).
    """

    case_id: str
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, ...] | None = None
    origin: tuple[float, ...] | None = None
    group: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.spacing is None:
            self.spacing = (1.0,) * self.spatial_dims
        if self.origin is None:
            self.origin = (0.0,) * self.spatial_dims
        if self.group is None:
            self.group = self.case_id

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """(H, W) or (D, H, W)."""
        return tuple(self.image.shape[1:])

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return self.image.ndim - 1

    @property
    def num_raters(self) -> int:
        """R."""
        return int(self.labels.shape[0])

    def soft_label(self, num_classes: int) -> np.ndarray:
        """ȳ = mean_r onehot(y^(r)): ``(K, *spatial)`` float32."""
        return soft_label(self.labels, num_classes)

    def majority_vote(self, num_classes: int) -> np.ndarray:
        """Per-pixel most frequent class ``(*spatial)`` (ties go to the lower class index)."""
        return self.soft_label(num_classes).argmax(0)

    def rater_variance(self, num_classes: int) -> np.ndarray:
        """Rater disagreement Σ_k ȳ_k (1 − ȳ_k) per pixel ``(*spatial)``."""
        return rater_variance(self.labels, num_classes)


def soft_label(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Mean one-hot over raters: labels ``(R, *spatial)`` -> ``(K, *spatial)`` float32."""
    out = np.zeros((num_classes, *labels.shape[1:]), dtype=np.float32)
    for k in range(num_classes):
        out[k] = (labels == k).mean(0)
    return out


def rater_variance(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Σ_k ȳ_k (1 − ȳ_k): ``(R, *spatial)`` -> ``(*spatial)`` float32 (0 where all raters agree)."""
    y = soft_label(labels, num_classes)
    return (y * (1.0 - y)).sum(0)
