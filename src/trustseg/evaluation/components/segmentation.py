"""Segmentation components: overlap (Dice, IoU, the quality-control Dice) and surface distances.

One empty policy for every overlap entry, :attr:`SuiteConfig.empty <trustseg.evaluation.context.SuiteConfig>`
(default ``nan``: a class absent from both maps is NaN and left out of every mean). The quality-control Dice
``qc_dice`` is named apart: it counts such a class as 1, so that every case has one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch

from trustseg.evaluation.component import SuiteComponent, register
from trustseg.evaluation.context import CaseContext
from trustseg.evaluation.results import finite, nanmean
from trustseg.metrics.overlap import (
    EmptyPolicy,
    dice,
    dice_from_counts,
    dice_vs_raters,
    dice_vs_raters_from_joint,
    iou,
    joint_counts,
)
from trustseg.metrics.surface import surface_metrics


def per_class(names: Sequence[str], values: torch.Tensor | Sequence[float]) -> dict[str, float]:
    """``{class: value, ..., "mean": NaN-skipping mean}`` of one value per foreground class."""
    vals = [finite(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]
    return {**dict(zip(names, vals)), "mean": nanmean(vals)}


@register
class Overlap(SuiteComponent):
    """Dice against the majority vote, the CURVAS consensus regions and each rater; IoU against the majority.

    Values (``item`` = foreground class or ``mean``):

    * ``dice/majority``, ``dice/consensus``, ``dice/<rater>``: ``2TP / (2TP + FP + FN)``; consensus = the
      classes' CURVAS regions (all raters / no rater; dissensus ignored);
    * ``dice/mean_rater``: per class the mean over raters, then ``mean`` over classes;
    * ``iou/majority``: ``TP / (TP + FP + FN)``;
    * ``qc_dice/majority/mean``: mean over foreground classes of the Dice vs majority with empty-vs-empty = 1.
    """

    name = "overlap"
    order = 0
    requires = frozenset({"hard", "labels"})
    higher_is_better = {"dice": True, "iou": True, "qc_dice": True}

    def per_case(self, ctx: CaseContext) -> dict[str, Any]:
        k, fg, empty = ctx.num_classes, ctx.foreground, self.cfg.empty
        tables = ctx.code_tables
        if tables is not None and ctx.codes is not None:
            # one bincount of (hard, rater code) per chunk gives every count below (exact, the same values)
            joint = joint_counts(ctx.hard, ctx.codes, k, ctx.num_codes)
            dv = dice_vs_raters_from_joint(joint, tables, empty=cast(EmptyPolicy, empty))
            iou_maj, qc = dv["iou_majority"], dice_from_counts(dv["counts_majority"], empty="one")
        else:
            dv = dice_vs_raters(ctx.hard, ctx.labels, k, empty=empty, majority=ctx.majority)
            iou_maj, qc = iou(ctx.hard, ctx.majority, k, empty=empty), dice(ctx.hard, ctx.majority, k, empty="one")
        out: dict[str, Any] = {"dice": {t: per_class(fg, dv[t]) for t in ("majority", "consensus", "mean_rater")}}
        for r, rater in enumerate(ctx.raters):
            out["dice"][rater] = per_class(fg, dv[f"rater_{r}"])
        out["iou"] = {"majority": per_class(fg, iou_maj)}
        out["qc_dice"] = {"majority": {"mean": float(qc.float().mean())}}
        return out


@register
class Surface(SuiteComponent):
    """HD95, ASSD and NSD against the majority vote, in the units of the case spacing.

    Surface convention, HD95 = 95th percentile of the pooled directed distances, NSD tolerance
    :attr:`SuiteConfig.nsd_tolerance`; a class empty in either mask is NaN (left out of the ``mean``). Distances
    from the boundary band (``backend="band"``) or, with :attr:`SuiteConfig.exact`, the reference KD-tree: the
    same values up to float round-off.
    """

    name = "surface"
    order = 1
    requires = frozenset({"hard", "labels", "spacing"})
    higher_is_better = {"hd95": False, "assd": False, "nsd": True}

    def per_case(self, ctx: CaseContext) -> dict[str, Any]:
        sm = surface_metrics(
            ctx.hard,
            ctx.majority,
            ctx.num_classes,
            spacing=ctx.spacing,
            tolerance=self.cfg.nsd_tolerance,
            empty_both="nan",
            empty_one="nan",
            backend="kdtree" if self.cfg.exact else "band",
        )
        return {key: {"majority": per_class(ctx.foreground, sm[key])} for key in ("hd95", "assd", "nsd")}
