"""Image-level scores for OOD detection: moved to :mod:`trustseg.measures.image`, re-exported here.

Every score is oriented so that higher = more suspicious (``<measure>:<aggregator>``, ``sample_disagreement``,
``layer_disagreement``); see :func:`trustseg.measures.image.image_scores`.
"""

from trustseg.measures.image import DEFAULT_AGGREGATORS, image_score, image_scores, sample_agreement

__all__ = ["DEFAULT_AGGREGATORS", "image_score", "image_scores", "sample_agreement"]
