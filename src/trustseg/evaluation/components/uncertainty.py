"""Uncertainty-map components: each map (oriented higher = more uncertain, named by
:func:`~trustseg.evaluation.context.oriented_name`) against the rater disagreement and the error mask, its
image-level scores, and the rater disagreement of the case.

Paths are ``metric -> map -> reference``: ``pixel_pearson/<map>/disagreement``, ``ueo/<map>/error``,
``image_score/<map>/<aggregator>``.
"""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import Tensor

from trustseg.evaluation.component import SuiteComponent, register
from trustseg.evaluation.context import CaseContext
from trustseg.evaluation.results import finite
from trustseg.measures.image import image_score
from trustseg.measures.registry import AGGREGATORS
from trustseg.metrics.multirater import variance_ncc
from trustseg.metrics.voxel_stats import (
    CHUNK,
    chunked_pearson,
    error_split,
    lowmem_spearman,
    spans,
    split_auroc,
    split_average_precision,
    split_ueo,
)

#: Measures whose map is a variance, compared with the rater disagreement by normalised cross-correlation.
VARIANCE_MEASURES = frozenset({"variance", "predicted_variance"})


def pooled_sums(x: Tensor, y: Tensor) -> Tensor:
    """The float64 sums ``(Σx, Σy, Σx², Σy², Σxy, n)`` of a pooled Pearson correlation (sum-mergeable)."""
    x, y = x.flatten(), y.flatten()
    sums = torch.zeros(6, dtype=torch.float64)
    for a, b in spans(x.numel(), CHUNK):  # float64 copies of one chunk at a time
        xc, yc = x[a:b].double(), y[a:b].double()
        sums[:5] += torch.stack([xc.sum(), yc.sum(), (xc * xc).sum(), (yc * yc).sum(), (xc * yc).sum()])
    sums[5] = float(x.numel())
    return sums


def pooled_pearson(sums: Tensor) -> float:
    """Pearson correlation from :func:`pooled_sums` (NaN for ``n < 2`` or a constant input)."""
    sx, sy, sxx, syy, sxy, n = sums.tolist()
    if n < 2:
        return math.nan
    cov = sxy / n - sx * sy / n**2
    vx, vy = sxx / n - (sx / n) ** 2, syy / n - (sy / n) ** 2
    return cov / math.sqrt(vx * vy) if vx > 1e-20 and vy > 1e-20 else math.nan


@register
class MapQuality(SuiteComponent):
    """Each map against the rater disagreement ``Σ_k ȳ_k(1 − ȳ_k)`` and the error mask ``hard ≠ majority``.

    Per case: ``pixel_pearson`` / ``pixel_spearman`` (``/<map>/disagreement``); ``ueo`` (``max_t Dice(error,
    u > t)``, 100 thresholds over ``[min u, max u]``; cases with an error), ``error_auroc``, ``error_auprc``
    (``/<map>/error``; cases with both error and correct voxels); ``variance_ncc`` for variance maps. State: the
    pooled Pearson sums over all voxels of all cases, giving ``uncertainty/<map>/pixel_pearson_pooled``.
    """

    name = "map_quality"
    order = 6
    requires = frozenset({"hard", "labels", "maps"})
    higher_is_better = {
        "pixel_pearson": True,
        "pixel_spearman": True,
        "ueo": True,
        "error_auroc": True,
        "error_auprc": True,
        "variance_ncc": True,
    }

    def per_case(self, ctx: CaseContext) -> dict[str, Any]:
        target, error = ctx.voxels(ctx.disagreement), ctx.voxels(ctx.error_mask)  # the field of view only
        out: dict[str, Any] = {}
        for name, full in ctx.maps.items():
            u = ctx.voxels(full)
            # the per-image values of pixel_correlation, without its float64 copies and rank arrays
            out.setdefault("pixel_pearson", {})[name] = {"disagreement": finite(chunked_pearson(u, target))}
            out.setdefault("pixel_spearman", {})[name] = {"disagreement": finite(lowmem_spearman(u, target))}
            if error.any():
                pos, neg = error_split(u, error)  # one sorted copy of the map serves UEO, AUROC and AUPRC
                out.setdefault("ueo", {})[name] = {"error": finite(split_ueo(pos, neg)[0])}
                if (~error).any():
                    out.setdefault("error_auroc", {})[name] = {"error": finite(split_auroc(pos, neg))}
                    out.setdefault("error_auprc", {})[name] = {"error": finite(split_average_precision(pos, neg))}
                del pos, neg
            if ctx.measure_of[name] in VARIANCE_MEASURES:
                out.setdefault("variance_ncc", {})[name] = {"disagreement": finite(variance_ncc(u, target))}
        return out

    def init_state(self) -> dict[str, Tensor]:
        return {}

    def update(self, state: dict[str, Tensor], ctx: CaseContext) -> dict[str, Tensor]:
        d = ctx.voxels(ctx.disagreement)
        return self.merge(state, {name: pooled_sums(ctx.voxels(u), d) for name, u in ctx.maps.items()})

    def merge(self, a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
        # every name is in a or b, so each sum has a Tensor term
        return {name: cast(Tensor, a.get(name, 0) + b.get(name, 0)) for name in dict.fromkeys([*a, *b])}

    def finalize(self, state: dict[str, Tensor]) -> dict[str, Any]:
        return {"uncertainty": {name: {"pixel_pearson_pooled": pooled_pearson(s)} for name, s in state.items()}}


@register
class ImageScores(SuiteComponent):
    """Image-level scores of each map, ``image_score/<map>/<aggregator>`` (:attr:`SuiteConfig.qc_aggregators`):
    ``mean`` = the map's mean; ``fg_mean`` = its mean over the predicted foreground dilated by 2 voxels (the whole
    map when the prediction is empty). Higher = more suspicious."""

    name = "image_scores"
    order = 7
    requires = frozenset({"hard", "maps"})
    higher_is_better = {"image_score": None}

    def per_case(self, ctx: CaseContext) -> dict[str, Any]:
        fg = (ctx.hard > 0)[None]
        scores: dict[str, Any] = {}
        for name, u in ctx.maps.items():
            for agg in self.cfg.qc_aggregators:
                # a whole-image aggregator reads the field of view only; a foreground one (its dilated ring may
                # reach outside, where the map is 0) the whole map
                whole = AGGREGATORS.meta(agg).get("mask") != "foreground"
                x = ctx.voxels(u)[None] if whole else u[None]
                scores.setdefault(name, {})[agg] = float(image_score(x, agg, foreground=fg)[0])
        return {"image_score": scores}


@register
class RaterDisagreement(SuiteComponent):
    """The case's rater disagreement summed over voxels, ``rater_disagreement_sum/raters/all`` (the image-level
    target of the uncertainty scores)."""

    name = "rater_disagreement"
    order = 8
    requires = frozenset({"labels"})
    higher_is_better = {"rater_disagreement_sum": None}

    def per_case(self, ctx: CaseContext) -> dict[str, Any]:
        return {"rater_disagreement_sum": {"raters": {"all": float(ctx.disagreement.sum())}}}
