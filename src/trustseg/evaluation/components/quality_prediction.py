"""Predicted segmentation quality (a quality-control model's output, no ground truth needed) scored against the
true Dice.

A case of the prediction folder may carry, in its ``predictions.json`` entry, the quality predicted for it
(``trustseg predict --qc`` or ``trustseg qc predict`` write it)::

    "qc": {"predicted_dice": float, "dice_low": float, "dice_high": float, "uncertainty_score": float,
           "ood_p": float, "review": bool, "reason": str, "target": "dice"}

Only ``predicted_<target>`` is required (``target`` ``dice``, the default, or ``hd95``: then the keys are
``predicted_hd95``, ``hd95_low``, ``hd95_high``). :class:`PredictedQuality` copies the numbers into the case's row;
:class:`QualityPrediction` scores the predicted Dice against the true QC Dice ``qc_dice/majority/mean`` with
:func:`~trustseg.metrics.quality_control.quality_prediction_report`. A predicted HD95 is copied, not scored.
Without any ``qc`` entry neither produces anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from trustseg.evaluation.component import DatasetAnalysis, SuiteComponent, register
from trustseg.evaluation.components.analyses import QC_DICE
from trustseg.evaluation.context import CaseContext
from trustseg.evaluation.results import column, finite
from trustseg.metrics.quality_control import quality_prediction_report

#: The per-case metric holding the copied ``qc`` entry.
METRIC = "predicted_quality"
#: What a quality-control model may predict (``qc.target``).
TARGETS = ("dice", "hd95")
#: The results section of :class:`QualityPrediction`.
SECTION = "quality_prediction"


def _number(ctx: CaseContext, qc: Mapping[str, Any], key: str, required: bool = False) -> float | None:
    value = qc.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ctx.error(f"qc.{key} must be a finite number, got {value!r}", "qc")
    return float(value)


def qc_row(ctx: CaseContext) -> dict[str, Any]:
    """The case's ``qc`` entry as row values (nothing when it has none).

    ``predicted_quality/<target>/{predicted,low,high}``, ``predicted_quality/uncertainty/score``,
    ``predicted_quality/ood/p`` and ``predicted_quality/review/flag`` (1.0 = sent to review, 0.0 = not), each
    only when the entry has it. ``reason`` (text) stays in ``predictions.json``.

    Raises:
        CaseInputError: (source ``qc``) an unknown target, a value that is not a finite number, ``low > high``,
            one interval end without the other, ``ood_p`` outside [0, 1], or a ``review`` that is not true/false.
    """
    qc = ctx.qc
    if qc is None:
        return {}
    target = qc.get("target", "dice")
    if target not in TARGETS:
        raise ctx.error(f"qc.target must be one of {list(TARGETS)}, got {target!r}", "qc")
    predicted = {"predicted": _number(ctx, qc, f"predicted_{target}", required=True)}
    low, high = _number(ctx, qc, f"{target}_low"), _number(ctx, qc, f"{target}_high")
    if (low is None) != (high is None):
        raise ctx.error(f"qc has only one end of the interval ({target}_low, {target}_high)", "qc")
    if low is not None and high is not None and low > high:
        raise ctx.error(f"qc interval [{target}_low, {target}_high] = [{low}, {high}] has low > high", "qc")
    predicted.update({k: v for k, v in (("low", low), ("high", high)) if v is not None})
    out: dict[str, Any] = {target: predicted}
    score, ood_p = _number(ctx, qc, "uncertainty_score"), _number(ctx, qc, "ood_p")
    if score is not None:
        out["uncertainty"] = {"score": score}
    if ood_p is not None:
        if not 0 <= ood_p <= 1:
            raise ctx.error(f"qc.ood_p must lie in [0, 1], got {ood_p}", "qc")
        out["ood"] = {"p": ood_p}
    if "review" in qc:
        if not isinstance(qc["review"], bool):
            raise ctx.error(f"qc.review must be true or false, got {qc['review']!r}", "qc")
        out["review"] = {"flag": float(qc["review"])}
    return {METRIC: out}


@register
class PredictedQuality(SuiteComponent):
    """``predicted_quality/...``: the case's predicted quality (its ``qc`` entry), copied (:func:`qc_row`)."""

    name = "predicted_quality"
    order = 10
    requires = frozenset({"qc"})
    higher_is_better = {METRIC: None}

    def per_case(self, ctx: CaseContext) -> dict[str, Any]:
        return qc_row(ctx)


def _optional_column(rows: Sequence[Mapping[str, Any]], path: Sequence[str]) -> np.ndarray | None:
    """The column at ``path`` (NaN where a row lacks it), or ``None`` when no row has it."""
    values = column(rows, path)
    return values if bool(np.isfinite(values).any()) else None


@register
class QualityPrediction(DatasetAnalysis):
    """``quality_prediction/dice/...``: the predicted Dice of the cases with a ``qc`` entry against their QC Dice.

    :func:`~trustseg.metrics.quality_control.quality_prediction_report` with the failure threshold
    :attr:`SuiteConfig.qc_failure_threshold <trustseg.evaluation.context.SuiteConfig>`: ``n``, ``threshold``,
    ``failures``, ``r2``, ``pearson``, ``spearman``, ``mae``, ``failure_auroc``, ``d_auc``, ``aurc``, ``eaurc``,
    ``curve`` (referring lowest predicted Dice first); ``coverage``, ``interval_width``, ``n_interval`` when cases
    have intervals; ``catch_rate``, ``review_rate``, ``review_precision``, ``n_review`` when they have review
    flags. No section when no case has a predicted Dice.
    """

    name = "quality_prediction"
    order = 4
    reads = (METRIC, "qc_dice")
    higher_is_better = {
        "r2": True,
        "pearson": True,
        "spearman": True,
        "mae": False,
        "failure_auroc": True,
        "coverage": None,
        "interval_width": False,
        "catch_rate": True,
        "review_rate": False,
        "review_precision": True,
    }

    def analyse(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        predicted, true = column(rows, (METRIC, "dice", "predicted")), column(rows, QC_DICE)
        keep = np.isfinite(predicted) & np.isfinite(true)
        if not keep.any():
            return {}
        scored = [r for r, k in zip(rows, keep) if k]
        low, high = (_optional_column(scored, (METRIC, "dice", end)) for end in ("low", "high"))
        both = low is not None and high is not None
        report = quality_prediction_report(
            predicted[keep],
            true[keep],
            lo=low if both else None,
            hi=high if both else None,
            review=_optional_column(scored, (METRIC, "review", "flag")),
            threshold=self.cfg.qc_failure_threshold,
        )
        out = {k: finite(v) if isinstance(v, float) else v for k, v in report.items()}
        return {SECTION: {"dice": out}}
