"""A case: one image with the label maps of R raters.

Shapes: ``image`` ``(C, *spatial)`` float32; ``labels`` ``(R, *spatial)`` int64 class indices in
``[0, K)``; optional ``mask`` ``(*spatial)`` bool, the field of view (True = scored; voxels outside it are
left out of training losses and of every metric). Spatial is ``(H, W)`` or ``(D, H, W)``. Derived targets
(soft label, majority vote, per-pixel rater variance) are computed by :mod:`trustseg.data.targets` (methods.md §1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trustseg.data import targets


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
        mask: ``(*spatial)`` bool field-of-view / ignore mask, True inside (the voxels that count), or ``None``
            (every voxel counts). Outside the mask nothing is trained or scored.
    """

    case_id: str
    image: np.ndarray
    labels: np.ndarray
    # None only at construction (= unit spacing, zero origin); __post_init__ always fills them in.
    spacing: tuple[float, ...] = None  # type: ignore[assignment]  # None is the "unit spacing" default
    origin: tuple[float, ...] = None  # type: ignore[assignment]  # None is the "zero origin" default
    group: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    mask: np.ndarray | None = None

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
        """ȳ = mean_r onehot(y^(r)): ``(K, *spatial)`` float32 (:func:`trustseg.data.targets.soft_label`)."""
        return targets.soft_label(self.labels, num_classes).numpy()

    def majority_vote(self, num_classes: int) -> np.ndarray:
        """Per-pixel most frequent class ``(*spatial)`` int64, ties to the lower class index
        (:func:`trustseg.data.targets.majority_vote`)."""
        return targets.majority_vote(self.labels, num_classes).numpy()

    def rater_variance(self, num_classes: int) -> np.ndarray:
        """Rater disagreement Σ_k ȳ_k (1 − ȳ_k) per pixel ``(*spatial)`` float32
        (:func:`trustseg.data.targets.rater_disagreement`)."""
        return targets.rater_disagreement(self.labels, num_classes).numpy()
