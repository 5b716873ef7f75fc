"""trustseg: trustworthy medical image segmentation.

Every mask comes with an uncertainty map, a calibrated probability and a predicted quality score, and every
claim about those is measured.

Tensor conventions (the whole package follows them):

* images: ``(C, *spatial)`` per case, ``(B, C, *spatial)`` batched;
* rater labels: ``(R, *spatial)`` integer class maps per case, ``(B, R, *spatial)`` batched;
* predictions: a :class:`~trustseg.core.predictive.Predictive` holding class probabilities of ``M`` samples as
  ``(M, B, K, *spatial)`` (MC passes, ensemble members, TTA views, layer heads), or the Dirichlet concentration
  ``alpha`` ``(B, K, *spatial)`` of an evidential model. Samples are never folded into the batch axis.
"""

from trustseg.core.predictive import Predictive

__all__ = ["Predictive", "__version__"]
__version__ = "0.1.0"
