"""Metrics: pure tensor functions (and fixed-size, sum-mergeable accumulators wrapping them), registered in
:data:`METRICS`.

Every module of the package is imported here, explicitly, so that importing ``trustseg.metrics`` registers
every metric. Averages of metric values skip NaN with :func:`trustseg.metrics.reduction.nanmean`.
"""

from trustseg.metrics import (
    calibration,
    calibration_codes,
    calibration_kernel,
    calibration_state,
    calibration_torch,
    curvas,
    geometry,
    multirater,
    multirater_counts,
    ood_detection,
    overlap,
    quality_control,
    rank_histogram,
    reduction,
    surface,
    surface_distance,
    uncertainty_quality,
)
from trustseg.metrics.reduction import nanmean
from trustseg.metrics.registry import METRICS

__all__ = [
    "METRICS",
    "calibration",
    "calibration_codes",
    "calibration_kernel",
    "calibration_state",
    "calibration_torch",
    "curvas",
    "geometry",
    "multirater",
    "multirater_counts",
    "nanmean",
    "ood_detection",
    "overlap",
    "quality_control",
    "rank_histogram",
    "reduction",
    "surface",
    "surface_distance",
    "uncertainty_quality",
]
