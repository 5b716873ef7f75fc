"""Dataset-level analyses over the per-case rows: the uncertainty summary per map, image-level correlation with
the rater disagreement, quality-control curves and the leave-one-out Dice-from-score baseline.

The quality-control Dice of a case is ``qc_dice/majority/mean`` (classes empty in both maps count 1, so every
case has one); the scores are ``image_score/<map>/<aggregator>`` (higher = refer first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from trustseg.evaluation.component import DatasetAnalysis, register
from trustseg.evaluation.results import column, finite, nanmean
from trustseg.metrics.quality_control import (
    aurc,
    d_auc,
    dice_prediction_metrics,
    eaurc,
    loo_linear_dice,
    qc_curve,
    qc_ideal_curve,
)
from trustseg.metrics.uncertainty_quality import image_correlation

QC_DICE = ("qc_dice", "majority", "mean")
DISAGREEMENT = ("rater_disagreement_sum", "raters", "all")

#: ``uncertainty/<map>/<name>`` <- mean over cases of the per-case path ``(metric, <map>, reference)``.
UNCERTAINTY_MEANS = {
    "pixel_pearson_mean": ("pixel_pearson", "disagreement"),
    "pixel_spearman_mean": ("pixel_spearman", "disagreement"),
    "ueo": ("ueo", "error"),
    "error_auroc": ("error_auroc", "error"),
    "error_auprc": ("error_auprc", "error"),
    "variance_ncc": ("variance_ncc", "disagreement"),
    "ucc_gradient": ("ucc_gradient", "majority"),
    "ur_gradient": ("ur_gradient", "majority"),
}


def map_names(rows: Sequence[Mapping[str, Any]], metric: str) -> list[str]:
    """The maps that have ``metric`` in some row, in first-seen order."""
    return list(dict.fromkeys(name for r in rows for name in r.get(metric, {})))


def paired(rows: Sequence[Mapping[str, Any]], a: Sequence[str], b: Sequence[str]) -> tuple[torch.Tensor, ...]:
    """The float64 columns at paths ``a`` and ``b`` over the rows where both are finite (aligned)."""
    x, y = column(rows, a), column(rows, b)
    ok = np.isfinite(x) & np.isfinite(y)
    return torch.from_numpy(x[ok]), torch.from_numpy(y[ok])


def score_paths(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Every ``(map, aggregator)`` image score in the rows, in first-seen order."""
    return list(dict.fromkeys((m, agg) for r in rows for m, aggs in r.get("image_score", {}).items() for agg in aggs))


@register
class UncertaintySummary(DatasetAnalysis):
    """``uncertainty/<map>/...``: means over cases of the per-case map metrics (:data:`UNCERTAINTY_MEANS`)."""

    name = "uncertainty_summary"
    order = 0
    reads = ("pixel_pearson", "pixel_spearman", "ueo", "error_auroc", "error_auprc", "variance_ncc")

    def analyse(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in map_names(rows, "pixel_pearson"):
            out[name] = {key: nanmean(column(rows, (m, name, ref))) for key, (m, ref) in UNCERTAINTY_MEANS.items()}
        return {"uncertainty": out}


@register
class ImageCorrelation(DatasetAnalysis):
    """``uncertainty/<map>/image_pearson`` and ``image_spearman``: the map's mean against the case's summed rater
    disagreement, across cases (from 3 cases on)."""

    name = "image_correlation"
    order = 1
    reads = ("image_score", "rater_disagreement_sum")
    higher_is_better = {"image_pearson": True, "image_spearman": True}

    def analyse(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in map_names(rows, "image_score"):
            sc, dis = paired(rows, ("image_score", name, "mean"), DISAGREEMENT)
            if len(sc) >= 3:
                out[name] = {
                    "image_pearson": finite(image_correlation(sc, dis, method="pearson")),
                    "image_spearman": finite(image_correlation(sc, dis, method="spearman")),
                }
        return {"uncertainty": out}


@register
class QualityControl(DatasetAnalysis):
    """``quality_control/<map>/<aggregator>``: d-AUC, AURC, E-AURC and the referral ``curve`` (fraction
    referred, mean Dice of the kept cases, ideal) of each image score against the QC Dice (from 2 cases on)."""

    name = "quality_control"
    order = 2
    reads = ("image_score", "qc_dice")
    higher_is_better = {"d_auc": False, "aurc": False, "eaurc": False}

    def analyse(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, agg in score_paths(rows):
            s, dice_t = paired(rows, ("image_score", name, agg), QC_DICE)
            if len(s) >= 2:
                _, ideal = qc_ideal_curve(dice_t)
                f, curve = qc_curve(s, dice_t)
                out.setdefault(name, {})[agg] = {
                    "d_auc": finite(d_auc(s, dice_t)),
                    "aurc": finite(aurc(s, dice_t)),
                    "eaurc": finite(eaurc(s, dice_t)),
                    "curve": {"fraction": f.tolist(), "dice": curve.tolist(), "ideal": ideal.tolist()},
                }
        return {"quality_control": out}


@register
class DicePredictionLOO(DatasetAnalysis):
    """``quality_control/<map>/<aggregator>/dice_prediction_loo``: R², Pearson, Spearman, MAE and ``n`` of the QC
    Dice predicted linearly from that score alone, leave-one-out (from 4 cases on)."""

    name = "dice_prediction_loo"
    order = 3
    reads = ("image_score", "qc_dice")

    def analyse(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, agg in score_paths(rows):
            s, dice_t = paired(rows, ("image_score", name, agg), QC_DICE)
            if len(s) >= 4:
                pm = dice_prediction_metrics(loo_linear_dice(s, dice_t), dice_t)
                loo = {k: v if k == "n" else finite(v) for k, v in pm.items()}
                out.setdefault(name, {})[agg] = {"dice_prediction_loo": loo}
        return {"quality_control": out}
