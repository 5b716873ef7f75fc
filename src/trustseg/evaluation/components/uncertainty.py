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
from trustseg.metrics.rank_histogram import DisagreementCodes, RankHistogram
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

#: Voxels per chunk of the streaming pass (int64 temporaries of 8 MB).
STREAM_CHUNK = 1 << 20

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
        return self._exact(ctx) if self.cfg.exact else self._streaming(ctx)

    def _exact(self, ctx: CaseContext) -> dict[str, Any]:
        """The sort-based values (:mod:`~trustseg.metrics.voxel_stats`)."""
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

    def _streaming(self, ctx: CaseContext) -> dict[str, Any]:
        """The same values from one :class:`~trustseg.metrics.rank_histogram.RankHistogram` per map (two chunked
        passes: the range, then the histograms), within the bounds of ``docs/evaluation.md``."""
        hists = self.histograms(ctx)
        out: dict[str, Any] = {}
        for name, h in hists.items():
            n_err, n_ok = (int(c) for c in h.counts.view(h.nbins, h.levels, 2).sum((0, 1)).flip(0))
            out.setdefault("pixel_pearson", {})[name] = {"disagreement": finite(h.pearson())}
            out.setdefault("pixel_spearman", {})[name] = {"disagreement": finite(h.spearman()[0])}
            if n_err:
                out.setdefault("ueo", {})[name] = {"error": finite(h.ueo()[0])}
                if n_ok:
                    out.setdefault("error_auroc", {})[name] = {"error": finite(h.auroc()[0])}
                    out.setdefault("error_auprc", {})[name] = {"error": finite(h.average_precision()[0])}
            if ctx.measure_of[name] in VARIANCE_MEASURES:
                out.setdefault("variance_ncc", {})[name] = {"disagreement": finite(h.pearson())}
        return out

    def histograms(self, ctx: CaseContext) -> dict[str, RankHistogram]:
        """Each map's :class:`~trustseg.metrics.rank_histogram.RankHistogram` against the rater disagreement
        (levels) and the error mask, over the field of view, chunk by chunk (kept in ``ctx.cache``)."""
        key = ("map_quality", "histograms")
        if key not in ctx.cache:
            ctx.cache[key] = _histograms(ctx)
        return cast(dict[str, RankHistogram], ctx.cache[key])

    def init_state(self) -> dict[str, Tensor]:
        return {}

    def update(self, state: dict[str, Tensor], ctx: CaseContext) -> dict[str, Tensor]:
        if not self.cfg.exact:  # the streaming pass has the sums
            return self.merge(state, {name: h.raw_sums() for name, h in self.histograms(ctx).items()})
        d = ctx.voxels(ctx.disagreement)
        return self.merge(state, {name: pooled_sums(ctx.voxels(u), d) for name, u in ctx.maps.items()})

    def merge(self, a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
        # every name is in a or b, so each sum has a Tensor term
        return {name: cast(Tensor, a.get(name, 0) + b.get(name, 0)) for name in dict.fromkeys([*a, *b])}

    def finalize(self, state: dict[str, Tensor]) -> dict[str, Any]:
        return {"uncertainty": {name: {"pixel_pearson_pooled": pooled_pearson(s)} for name, s in state.items()}}


def _chunks(ctx: CaseContext, full: Tensor) -> Any:
    """The field-of-view voxels of a ``(*spatial)`` tensor, flat, one chunk at a time (views without a mask)."""
    flat = full.reshape(-1)
    valid = None if ctx.valid is None else ctx.valid.reshape(-1)
    for a, b in spans(flat.numel(), STREAM_CHUNK):
        yield flat[a:b] if valid is None else flat[a:b][valid[a:b]]


def _histograms(ctx: CaseContext) -> dict[str, RankHistogram]:
    """Pass 1: each map's range, smallest positive value and mean, and the disagreement's mean; pass 2: the
    histograms and sums of every map, the target codes of a chunk computed once for all maps."""
    codes = DisagreementCodes(len(ctx.raters), ctx.num_classes)
    d_sum, n = 0.0, 0
    for d in _chunks(ctx, ctx.disagreement):
        d_sum, n = d_sum + float(d.sum(dtype=torch.float64)), n + d.numel()
    hists: dict[str, RankHistogram] = {}
    for name, full in ctx.maps.items():
        lo, hi, lo_pos, total = math.inf, -math.inf, math.inf, 0.0
        for u in _chunks(ctx, full):
            a, b = torch.aminmax(u)
            lo, hi, total = min(lo, float(a)), max(hi, float(b)), total + float(u.sum(dtype=torch.float64))
            if float(a) <= 0 < float(b):
                lo_pos = min(lo_pos, float(u.masked_fill(u <= 0, math.inf).min()))
        hists[name] = RankHistogram.for_map(
            levels=codes.levels,
            umin=lo,
            umax=hi,
            umin_positive=None if math.isinf(lo_pos) else lo_pos,
            centre=(total / n, d_sum / n),
        )
    chunks = {name: _chunks(ctx, full) for name, full in ctx.maps.items()}
    for d, e in zip(_chunks(ctx, ctx.disagreement), _chunks(ctx, ctx.error_mask), strict=True):
        c = codes(d, e)
        for name, h in hists.items():
            h.update(next(chunks[name]), c, d)
    return hists


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
