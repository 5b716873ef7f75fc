"""Per-case features for quality prediction: one dict of named numbers from a case's prediction, computed the
same way at fit and at predict time, deterministic and independent of the order of the samples (AULA aside,
whose heads are ordered by design) and of the other cases.

Feature names (``k`` = foreground class index, ``<map>`` = a measure oriented "higher = more uncertain" and named
as in the evaluation results, e.g. ``entropy``, ``one_minus_confidence``):

====================================  =========================================================================
``<map>:<agg>``                       the map aggregated by every registered way (:data:`FeatureConfig.
                                      aggregators`: ``mean``, ``sum``, ``fg_mean``, ``boundary_mean``,
                                      ``patch_max``) with the image-level conventions of
                                      :func:`trustseg.measures.image.image_score`
``<map>:frac_above_<level>``          fraction of voxels above ``level × max(map)``, the measure's largest
                                      possible value (:func:`map_maximum`: ln K for entropies and MI, 1 − 1/K for
                                      one_minus_confidence, 1 otherwise)
``volume:k``                          predicted voxels of class k × voxel volume
``soft_volume:k``                     Σ p̄_k × voxel volume (what the probabilities expect)
``volume_gap:k``                      |soft − hard volume| / max(hard, soft, one voxel)
``components:k``                      connected components of the class (face connectivity)
``largest_component:k``               share of the class's voxels in its largest component (1 when empty)
``compactness:k``                     isoperimetric quotient, 4πA/P² in 2D, π^(1/3) (6V)^(2/3) / S in 3D, with P,
                                      S the counted voxel faces between the class and the rest (× spacing): π/4
                                      for an axis-aligned square, (π/6)^(1/3) for a cube, lower for ragged
                                      shapes; 0 when empty
``sample_agreement``                  mean pairwise foreground Dice of the samples' hard masks (M > 1 only)
``aula``                              area under the layer agreement (layer-ensemble heads only)
``soft_dice_confidence`` (``:k``)     :mod:`trustseg.quality.soft_dice`, mean over classes (and per class when
                                      K > 2)
====================================  =========================================================================

Maps come from the prediction folder (``CaseInput.maps``); the measures the prediction allows that the folder does
not hold are computed (:func:`trustseg.measures.pixel.uncertainty_map`): from the samples when present, else from
p̄ alone (confidence, entropy), so a folder written with ``--measures entropy`` still has the confidence features.

:class:`AggregateScore` is the documented aggregate uncertainty score of a case (methods.md leaves its formula
to us): the mean, over the uncertainty features, of the case's mid-rank position among the training cases.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from trustseg.core.errors import ConfigError, DataError
from trustseg.core.predictive import Predictive
from trustseg.evaluation.context import oriented_name
from trustseg.measures.image import image_score, layer_agreement, sample_agreement
from trustseg.measures.pixel import uncertainty_map
from trustseg.measures.registry import AGGREGATORS, as_uncertainty, available_measures
from trustseg.quality.inputs import CaseInput
from trustseg.quality.soft_dice import soft_dice_confidence

#: Measures whose largest value is ln K (entropies, mutual information).
LOG_K_MEASURES = ("entropy", "expected_entropy", "mi")


@dataclass(frozen=True)
class FeatureConfig:
    """Which features :func:`case_features` computes.

    Attributes:
        aggregators: Registered aggregators applied to every map (``frac_above`` is driven by ``frac_levels``
            instead and is skipped here).
        frac_levels: ``frac_above`` thresholds as fractions of each map's maximum (:func:`map_maximum`).
        patch: Window side of ``patch_max``.
        band: Half-width of ``boundary_mean``'s band.
    """

    aggregators: tuple[str, ...] = ("mean", "sum", "fg_mean", "boundary_mean", "patch_max")
    frac_levels: tuple[float, ...] = (0.25, 0.5)
    patch: int = 8
    band: int = 2

    def __post_init__(self) -> None:
        for a in self.aggregators:
            AGGREGATORS.entry(a)
        if any(not 0 < v < 1 for v in self.frac_levels):
            raise ConfigError(f"frac_levels must lie in (0, 1), got {self.frac_levels}")


def map_maximum(measure: str, num_classes: int) -> float:
    """The largest value of a measure's map oriented as an uncertainty (see the module docstring)."""
    if measure in LOG_K_MEASURES:
        return math.log(num_classes)
    if measure == "confidence":
        return 1.0 - 1.0 / num_classes
    return 1.0


def case_maps(inp: CaseInput) -> dict[str, torch.Tensor]:
    """Every uncertainty map of the case, oriented (higher = more uncertain) and keyed by measure name: the
    stored maps, plus the measures the samples allow that the folder does not hold."""
    maps = {name: as_uncertainty(name, m.float()) for name, m in sorted(inp.maps.items())}
    with_samples = inp.samples is not None and inp.samples.shape[0] > 1
    # the samples' measures, or those of p̄ alone (confidence, entropy): the same names whatever the folder stored
    pred = Predictive(probs=(inp.samples if with_samples else inp.probs[None])[:, None].float())  # type: ignore[index]
    for name in available_measures(pred):
        if name not in maps:
            maps[name] = uncertainty_map(pred, name)[0].float()
    for name, m in maps.items():
        if not bool(torch.isfinite(m).all()):
            raise DataError(f"case {inp.case_id!r}: map {name!r} contains NaN or infinite values")
    return dict(sorted(maps.items()))


def _shape_features(mask: np.ndarray, spacing: np.ndarray, k: int) -> dict[str, float]:
    labels, n = ndimage.label(mask)
    total = int(mask.sum())
    out = {f"components:{k}": float(n)}
    out[f"largest_component:{k}"] = float(np.bincount(labels.ravel())[1:].max() / total) if n else 1.0
    if total == 0:
        out[f"compactness:{k}"] = 0.0
        return out
    padded = np.pad(mask, 1)
    faces = 0.0
    for ax in range(mask.ndim):
        other = np.prod(np.delete(spacing, ax)) if mask.ndim > 1 else 1.0
        faces += float(np.count_nonzero(np.diff(padded.astype(np.int8), axis=ax))) * other
    size = total * float(np.prod(spacing))
    if mask.ndim == 2:
        out[f"compactness:{k}"] = 4 * math.pi * size / faces**2
    else:
        out[f"compactness:{k}"] = math.pi ** (1 / 3) * (6 * size) ** (2 / 3) / faces
    return out


def case_features(inp: CaseInput, config: FeatureConfig | None = None) -> dict[str, float]:
    """The features of one case (names and definitions in the module docstring), in a fixed order.

    Raises:
        DataError: a map, probability or sample that is not finite.
    """
    cfg = config or FeatureConfig()
    if not bool(torch.isfinite(inp.probs).all()):
        raise DataError(f"case {inp.case_id!r}: probabilities contain NaN or infinite values")
    k_classes = inp.num_classes
    seg = inp.seg.long()
    fg = (seg > 0)[None]
    out: dict[str, float] = {}
    kwargs = {"patch_max": {"patch": cfg.patch}, "boundary_mean": {"width": cfg.band}}
    for name, umap in case_maps(inp).items():
        oname, u = oriented_name(name), umap[None]
        for agg in cfg.aggregators:
            if agg == "frac_above":
                continue
            out[f"{oname}:{agg}"] = float(image_score(u, agg, foreground=fg, **kwargs.get(agg, {}))[0])
        top = map_maximum(name, k_classes)
        for level in cfg.frac_levels:
            out[f"{oname}:frac_above_{level:g}"] = float((u > level * top).double().mean())
    spacing = np.asarray(inp.spacing if inp.spacing is not None else (1.0,) * seg.dim(), dtype=np.float64)
    voxel = inp.voxel_volume
    seg_np = seg.numpy()
    for k in range(1, k_classes):
        hard = float((seg_np == k).sum()) * voxel
        soft = float(inp.probs[k].double().sum()) * voxel
        out[f"volume:{k}"] = hard
        out[f"soft_volume:{k}"] = soft
        out[f"volume_gap:{k}"] = abs(soft - hard) / max(hard, soft, voxel)
        out.update(_shape_features(seg_np == k, spacing, k))
    if inp.samples is not None and inp.samples.shape[0] > 1:
        pred = Predictive(probs=inp.samples[:, None].float())
        out["sample_agreement"] = float(sample_agreement(pred)[0])
        if inp.layer_heads:
            out["aula"] = float(layer_agreement(inp.samples[:, None].float())[0])
    per_class, mean = soft_dice_confidence(inp.probs, seg)
    out["soft_dice_confidence"] = float(mean)
    if k_classes > 2:
        out.update({f"soft_dice_confidence:{k + 1}": float(v) for k, v in enumerate(per_class)})
    return out


def feature_table(
    rows: Sequence[Mapping[str, float]], names: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray]:
    """The ``(N, F)`` float64 matrix of feature rows, columns in a fixed order.

    Args:
        rows: One feature dict per case (:func:`case_features`).
        names: The columns (a fitted model's); default: the first row's names, which every row must then have.

    Raises:
        DataError: a row lacking a column (named, with the row's index), or a value that is not finite.
    """
    if not rows:
        raise DataError("no feature rows")
    cols = list(names) if names is not None else list(rows[0])
    x = np.empty((len(rows), len(cols)), dtype=np.float64)
    for i, row in enumerate(rows):
        missing = [c for c in cols if c not in row]
        if missing:
            raise DataError(
                f"case {i} lacks the features {missing[:5]} (predicted with other measures, samples or classes "
                "than the cases the model was fitted on?)"
            )
        x[i] = [row[c] for c in cols]
    bad = np.argwhere(~np.isfinite(x))
    if len(bad):
        i, j = bad[0]
        raise DataError(f"case {i}: feature {cols[j]!r} is {x[i, j]} (not finite)")
    return cols, x


def default_score_features(names: Sequence[str]) -> list[str]:
    """The features :class:`AggregateScore` combines by default: every map's ``mean`` and ``fg_mean``, the
    sample agreement and the soft Dice confidence (the last two flipped, see :data:`FLIPPED`)."""
    keep = [n for n in names if n.endswith((":mean", ":fg_mean"))]
    return keep + [n for n in FLIPPED if n in names]


#: Features that are certainties: the aggregate score uses ``1 − value``.
FLIPPED = ("sample_agreement", "aula", "soft_dice_confidence")


class AggregateScore:
    """The aggregate uncertainty score of a case, in ``[0, 1]``, higher = more uncertain.

    Fitted on the training cases' feature rows: for every chosen feature ``j`` (default
    :func:`default_score_features`, certainties flipped to ``1 − value``) it keeps the training values ``t_j``; a
    case's score is ``(1/J) Σ_j F_j(v_j)`` with the mid-rank empirical CDF ``F_j(v) = (#{t_j < v} + ½ #{t_j =
    v}) / n``. On the training cases themselves, with average ranks ``r`` (ties averaged),
    ``F_j = (r_j − ½) / n``, so the score is ``((n − 1) · rank_aggregate + ½) / n``
    (:func:`trustseg.measures.aggregate.rank_aggregate`): a monotone rescaling that keeps its order and its
    insensitivity to each measure's scale, and extends to new cases without refitting.
    """

    def __init__(self, features: Sequence[str] | None = None):
        self.features = list(features) if features is not None else None
        self.reference: dict[str, np.ndarray] = {}

    @staticmethod
    def _value(name: str, row: Mapping[str, float]) -> float:
        return 1.0 - row[name] if name in FLIPPED else row[name]

    def fit(self, rows: Sequence[Mapping[str, float]]) -> AggregateScore:
        """Keep the training values of the chosen features (``rows``: the training cases' features)."""
        if not rows:
            raise DataError("the aggregate score needs at least one training case")
        names = self.features if self.features is not None else default_score_features(list(rows[0]))
        if not names:
            raise DataError("no uncertainty feature to aggregate (no maps in the prediction folder?)")
        feature_table(rows, names)  # every row has them, finite
        self.features = list(names)
        self.reference = {n: np.sort([self._value(n, r) for r in rows]) for n in names}
        return self

    def score(self, rows: Sequence[Mapping[str, float]]) -> np.ndarray:
        """The score of each row ``(N,)`` float64."""
        if not self.reference:
            raise ConfigError("AggregateScore is not fitted")
        out = np.zeros(len(rows))
        for name, ref in self.reference.items():
            v = np.asarray([self._value(name, r) for r in rows])
            below = np.searchsorted(ref, v, side="left")
            upto = np.searchsorted(ref, v, side="right")
            out += (below + 0.5 * (upto - below)) / len(ref)
        return out / len(self.reference)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fitted state."""
        return {
            "kind": "trustseg.quality.aggregate_score",
            "reference": {k: v.tolist() for k, v in self.reference.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AggregateScore:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            ConfigError: another kind, or values that are not lists of finite numbers.
        """
        if not isinstance(d, Mapping) or d.get("kind") != "trustseg.quality.aggregate_score":
            raise ConfigError("not an aggregate-score dict (kind trustseg.quality.aggregate_score)")
        ref = d.get("reference")
        if not isinstance(ref, Mapping) or not ref:
            raise ConfigError("aggregate-score dict: 'reference' must be a non-empty mapping")
        obj = cls(list(ref))
        for name, vals in ref.items():
            try:
                arr = np.asarray(vals, dtype=np.float64)
            except (TypeError, ValueError):
                raise ConfigError(f"aggregate-score dict: reference {name!r} is not a list of numbers") from None
            if arr.ndim != 1 or not len(arr) or not np.isfinite(arr).all():
                raise ConfigError(
                    f"aggregate-score dict: reference {name!r} must be a non-empty list of finite numbers"
                )
            obj.reference[name] = np.sort(arr)
        return obj
