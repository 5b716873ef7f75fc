"""Multi-rater components: CURVAS (consensus Dice, confidence, volume CRPS, ECE per rater), QUBIQ soft Dice and,
with samples, GED² and Hungarian IoU.

Streaming path (``SuiteConfig.exact=False``, the default): CURVAS (both modes) and QUBIQ read one set of
histograms, :func:`~trustseg.metrics.multirater_counts.case_counts`, computed in one pass over the voxels and
shared through ``ctx.cache`` (:func:`shared_counts`); GED² and the Hungarian IoU read the Gram matrix of the
sample and rater foreground masks (:func:`~trustseg.metrics.multirater_counts.sample_gram`). The numbers are
those of the exact path (the per-metric functions) up to float64 summation order.
"""

from __future__ import annotations

from typing import Any, cast

from trustseg.evaluation.component import SuiteComponent, register
from trustseg.evaluation.components.segmentation import per_class
from trustseg.evaluation.context import CaseContext
from trustseg.evaluation.results import finite
from trustseg.metrics.curvas import Mode, curvas_from_counts, curvas_metrics
from trustseg.metrics.multirater import ged, ged_from_gram, hungarian_from_gram, hungarian_iou, qubiq_soft_dice
from trustseg.metrics.multirater_counts import CaseCounts, case_counts, qubiq_from_counts, sample_gram

#: CURVAS per-organ value -> results metric name.
CURVAS_VALUES = {
    "dice": "curvas_dice",
    "confidence": "curvas_confidence",
    "crps": "curvas_crps",
    "predicted_volume": "curvas_predicted_volume",
    "mu": "curvas_rater_volume_mu",
    "sigma": "curvas_rater_volume_sigma",
}

#: ``ctx.cache`` key of the shared one-pass histograms.
COUNTS_KEY = ("multirater", "case_counts")


def shared_counts(ctx: CaseContext, rows: bool) -> CaseCounts:
    """The case's :class:`~trustseg.metrics.multirater_counts.CaseCounts` (50 confidence slots, the QUBIQ
    thresholds), computed once per case and kept in ``ctx.cache`` (with the counts by row when ``rows``: the
    CURVAS component asks for them first when it reports the challenge mode of a 3D case)."""
    cached = ctx.cache.get(COUNTS_KEY)
    if cached is None or (rows and cached.rows is None):
        cached = case_counts(ctx.probs, ctx.labels, valid=ctx.valid, rows=rows)
        ctx.cache[COUNTS_KEY] = cached
    return cached


def _challenge(cfg_modes: tuple[str, ...], ctx: CaseContext) -> bool:
    return "challenge" in cfg_modes and ctx.spatial_dims == 3


@register
class Curvas(SuiteComponent):
    """CURVAS metrics per mode (:attr:`SuiteConfig.curvas_modes`): ``<metric>/<mode>/<class>`` and
    ``curvas_ece/<mode>/all`` (the mean over raters of the top-label ECE, 50 bins).

    ``volumetric`` = the intended definitions (exact Gaussian CRPS); ``challenge`` = the official script's
    semantics, which reads ``(D, H, W)`` volumes row-wise, so it is reported for 3D cases only. Volumes are in the
    spacing's unit cubed.
    """

    name = "curvas"
    order = 3
    requires = frozenset({"probs", "labels", "spacing"})
    higher_is_better = {
        "curvas_dice": True,
        "curvas_confidence": True,
        "curvas_crps": False,
        "curvas_predicted_volume": None,
        "curvas_rater_volume_mu": None,
        "curvas_rater_volume_sigma": None,
        "curvas_ece": False,
    }

    def per_case(self, ctx: CaseContext) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for mode in self.cfg.curvas_modes:
            if mode == "challenge" and ctx.spatial_dims != 3:
                continue
            if self.cfg.exact:
                cm = curvas_metrics(  # it checks the mode
                    ctx.probs, ctx.labels, spacing=ctx.spacing, mode=cast(Mode, mode), valid=ctx.valid
                )
            else:
                counts = shared_counts(ctx, _challenge(self.cfg.curvas_modes, ctx))
                cm = curvas_from_counts(counts, spacing=ctx.spacing, mode=cast(Mode, mode))
            out.setdefault("curvas_ece", {})[mode] = {"all": finite(cm["ece_mean"])}
            for c in range(1, ctx.num_classes):
                for key, value in cm.get(str(c), {}).items():
                    out.setdefault(CURVAS_VALUES[key], {}).setdefault(mode, {})[ctx.classes[c]] = finite(value)
        return out


@register
class QubiqSoftDice(SuiteComponent):
    """QUBIQ soft Dice ``mean_t Dice(p̄_k > t, ȳ_k > t)``, t = 0.1 … 0.9, per foreground class and ``mean``."""

    name = "qubiq"
    order = 4
    requires = frozenset({"probs", "labels"})
    higher_is_better = {"qubiq_soft_dice": True}

    def per_case(self, ctx: CaseContext) -> dict[str, Any]:
        if self.cfg.exact:
            vals = [float(qubiq_soft_dice(ctx.probs[k], ctx.soft_class(k))) for k in range(1, ctx.num_classes)]
        else:  # the counts of the CURVAS component when it runs too (it runs first, by order)
            vals = qubiq_from_counts(shared_counts(ctx, rows=False)).tolist()
        return {"qubiq_soft_dice": {"soft": per_class(ctx.foreground, vals)}}


@register
class SampleAgreement(SuiteComponent):
    """Samples vs raters (needs ``M > 1`` samples): GED² with d = 1 − IoU over the foreground union, d(∅, ∅) = 0
    and i = j pairs included (``ged2_iou``, what PHiSeg and most papers call GED), its square root
    (``sqrt_ged2_iou``) and the Hungarian-matched IoU over the foreground union (``hungarian_iou``, raters tiled)."""

    name = "samples"
    order = 5
    requires = frozenset({"samples", "labels"})
    higher_is_better = {"ged2_iou": False, "sqrt_ged2_iou": False, "hungarian_iou": True}

    def per_case(self, ctx: CaseContext) -> dict[str, Any]:
        assert ctx.samples is not None  # "samples" is in requires
        if self.cfg.exact:
            s_hard = ctx.samples.argmax(1)
            g = ged(s_hard, ctx.labels, num_classes=ctx.num_classes)
            hungarian = hungarian_iou(s_hard > 0, ctx.labels > 0)
        else:
            gram = sample_gram(ctx.samples, ctx.labels)
            m = ctx.samples.shape[0]
            g, hungarian = ged_from_gram(gram, m), hungarian_from_gram(gram, m)
        return {
            "ged2_iou": {"raters": {"all": finite(g["ged2"])}},
            "sqrt_ged2_iou": {"raters": {"all": finite(g["ged"])}},
            "hungarian_iou": {"raters": {"all": finite(hungarian)}},
        }
