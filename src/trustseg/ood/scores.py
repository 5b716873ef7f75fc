"""Image-level scores computed from one prediction, for OOD detection and quality control.

Every score is oriented so that **higher = more suspicious** (more uncertain, less agreement):

* ``<measure>:<aggregator>``: a per-pixel uncertainty measure (see :mod:`trustseg.measures`) aggregated to one
  number per image (``mean`` over the image, ``fg_mean`` over the predicted foreground dilated by 2 pixels);
* ``sample_disagreement``: 1 − mean Dice between the hard masks of all pairs of samples (MC passes, ensemble
  members, TTA views), foreground classes pooled, a voxel agreeing only with the same class (as the heads of
  AULA); only when M > 1. Its complement is the "model agreement" of the EDUE paper;
* ``layer_disagreement``: 1 − AULA (area under the layer agreement curve) for layer ensembles, whose samples
  are the decoder heads in coarse-to-fine order.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trustseg.core.predictive import Predictive
from trustseg.metrics.overlap import pooled_foreground_dice

DEFAULT_AGGREGATORS = ("mean", "fg_mean")


def sample_agreement(pred: Predictive) -> Tensor:
    """Mean pairwise agreement of the samples' hard maps ``(B,)`` (:func:`pooled_foreground_dice`; 1 when M = 1)."""
    hard = pred.probs.argmax(2)  # (M, B, *sp)
    m = hard.shape[0]
    if m < 2:
        return torch.ones(pred.batch_size)
    vals = [pooled_foreground_dice(hard[i], hard[j]) for i in range(m) for j in range(i + 1, m)]
    return torch.stack(vals).mean(0).float()


def image_scores(
    pred: Predictive,
    measures: list[str] | None = None,
    aggregators: tuple[str, ...] = DEFAULT_AGGREGATORS,
    layer_heads: bool = False,
) -> dict[str, Tensor]:
    """All image-level scores of a prediction, each ``(B,)``, higher = more suspicious.

    Args:
        pred: The prediction.
        measures: Measure names (default: every measure the prediction supports).
        aggregators: Aggregations of each map (names in ``AGGREGATORS``).
        layer_heads: The samples are layer-ensemble heads: add ``layer_disagreement`` (1 − AULA).
    """
    from trustseg.measures.aggregate import aggregate
    from trustseg.measures.pixel import available_measures, uncertainty_map

    names = measures if measures is not None else available_measures(pred)
    fg = pred.hard() > 0
    out: dict[str, Tensor] = {}
    for name in names:
        umap = uncertainty_map(pred, name).float()
        for agg in aggregators:
            kw = {"dilate": 2} if agg == "fg_mean" else {}
            out[f"{name}:{agg}"] = aggregate(umap, agg, mask=fg if agg == "fg_mean" else None, **kw)
    if pred.num_samples > 1:
        out["sample_disagreement"] = 1.0 - sample_agreement(pred)
    if layer_heads and pred.num_samples > 1:
        from trustseg.methods.layer_ensemble import layer_agreement

        out["layer_disagreement"] = 1.0 - layer_agreement(pred.probs)
    return out
