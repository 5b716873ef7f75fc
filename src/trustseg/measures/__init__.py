"""Uncertainty measures: pure functions of a :class:`~trustseg.core.predictive.Predictive`, registered in
:data:`MEASURES` with their metadata (orientation, requirements); aggregations to one score per image in
:data:`AGGREGATORS`; image-level scores in :mod:`trustseg.measures.image`.

Every module of the package is imported here, explicitly, so that importing ``trustseg.measures`` registers
every measure and aggregator.
"""

from trustseg.measures import aggregate, image, pixel, streaming
from trustseg.measures.image import image_score, image_scores, layer_agreement, sample_agreement
from trustseg.measures.registry import (
    AGGREGATORS,
    MEASURES,
    as_uncertainty,
    available_measures,
    is_certainty,
    register_aggregator,
    register_measure,
    supports,
)

__all__ = [
    "AGGREGATORS",
    "MEASURES",
    "aggregate",
    "as_uncertainty",
    "available_measures",
    "image",
    "image_score",
    "image_scores",
    "is_certainty",
    "layer_agreement",
    "pixel",
    "register_aggregator",
    "register_measure",
    "sample_agreement",
    "streaming",
    "supports",
]
