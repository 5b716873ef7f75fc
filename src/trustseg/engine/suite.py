"""The full evaluation suite: every metric of ``docs/metrics_*.md`` over a set of predicted cases.

:class:`EvaluationSuite` takes one case at a time (probabilities, optional samples, uncertainty maps, rater
labels, spacing) and keeps only

* fixed-size, sum-mergeable state for voxel-level quantities: calibration histograms (against the majority
  vote, the soft label and each rater) and streaming sums for pooled Pearson correlations;
* a handful of scalars per case (Dice, HD95, per-case scores) for the image-level analyses.

So a suite streams over any number of large volumes. :meth:`EvaluationSuite.result` returns one JSON-able
dict, and :meth:`EvaluationSuite.rows` the per-case table.

Conventions (all parameters of :class:`SuiteConfig`):

* segmentation metrics are per foreground class, against each rater, the majority vote (ties to the lower
  class) and the CURVAS consensus regions; a class empty in both maps is skipped (NaN, left out of means);
  surface distances use the surface convention with the case spacing, and are skipped when either mask is
  empty;
* calibration: top-label and class-wise ECE/MCE (15 equal-width bins), ACE (approximate, streaming), NLL and
  Brier (sum over classes) against the majority vote, the soft label and each rater;
* uncertainty maps are oriented "higher = more uncertain" (``confidence`` enters as 1 − confidence) and
  compared with the rater disagreement Σ_k ȳ_k(1 − ȳ_k); error = prediction ≠ majority vote;
* image-level scores are the map's mean and its mean over the predicted foreground dilated by 2 pixels;
  quality control ranks cases by them against the case's mean foreground Dice vs the majority (classes empty
  in both count as 1 here, so every case has a Dice).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

CERTAINTY = {"confidence"}


@dataclass(frozen=True)
class SuiteConfig:
    """Evaluation settings.

    Attributes:
        bins: Calibration bins.
        nsd_tolerance: NSD tolerance in spacing units (mm when spacing is in mm).
        curvas_modes: CURVAS modes to report (``volumetric``, ``challenge``).
        per_rater_calibration: Also accumulate calibration against each rater.
        qc_aggregators: Image-level aggregations used for image-level correlation and quality control.
    """

    bins: int = 15
    nsd_tolerance: float = 2.0
    curvas_modes: tuple[str, ...] = ("volumetric", "challenge")
    per_rater_calibration: bool = True
    qc_aggregators: tuple[str, ...] = ("mean", "fg_mean")


class _PooledPearson:
    """Streaming Pearson correlation over all pixels of all cases (sums of x, y, x², y², xy and n)."""

    def __init__(self) -> None:
        self.s = torch.zeros(6, dtype=torch.float64)

    def update(self, x: Tensor, y: Tensor) -> None:
        x, y = x.double().flatten(), y.double().flatten()
        self.s += torch.stack([x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum(), torch.tensor(x.numel())])

    def value(self) -> float:
        sx, sy, sxx, syy, sxy, n = self.s.tolist()
        if n < 2:
            return math.nan
        cov = sxy / n - sx * sy / n**2
        vx, vy = sxx / n - (sx / n) ** 2, syy / n - (sy / n) ** 2
        return cov / math.sqrt(vx * vy) if vx > 1e-20 and vy > 1e-20 else math.nan


def _f(x: Any) -> float:
    x = float(x)
    return x if math.isfinite(x) else math.nan


def _columns(rows: list[dict[str, Any]], *keys: str) -> tuple[Tensor, ...]:
    """The float64 columns ``keys`` over the rows that have all of them (aligned case by case)."""
    kept = [r for r in rows if all(k in r for k in keys)]
    return tuple(torch.tensor([r[k] for r in kept], dtype=torch.float64) for k in keys)


def _nanmean(xs) -> float:
    a = np.asarray([x for x in xs], dtype=float)
    return float(np.nanmean(a)) if a.size and np.isfinite(a).any() else math.nan


class EvaluationSuite:
    """Accumulates every metric over cases.

    Args:
        classes: Class names, background first (K = len(classes)).
        num_raters: R.
        cfg: Settings.
    """

    def __init__(self, classes: list[str], num_raters: int, cfg: SuiteConfig | None = None):
        from trustseg.metrics.calibration import empty_state

        self.classes = list(classes)
        self.K = len(classes)
        self.R = num_raters
        self.cfg = cfg or SuiteConfig()
        targets = ["majority", "soft"] + (
            [f"rater_{r}" for r in range(num_raters)] if self.cfg.per_rater_calibration else []
        )
        self.cal = {t: empty_state(self.K, self.cfg.bins) for t in targets}
        self.pooled: dict[str, _PooledPearson] = {}
        self._rows: list[dict[str, Any]] = []

    # -- per case ---------------------------------------------------------------------------------------------
    def add_case(
        self,
        case_id: str,
        probs: Tensor,
        labels: Tensor,
        spacing: tuple[float, ...] | None = None,
        maps: dict[str, Tensor] | None = None,
        samples: Tensor | None = None,
    ) -> dict[str, Any]:
        """Score one case and fold it into the running state.

        Args:
            case_id: Case id.
            probs: ``(K, *spatial)`` predictive mean.
            labels: ``(R, *spatial)`` rater class maps.
            spacing: Voxel size per spatial axis.
            maps: Measure name -> ``(*spatial)`` map, as the measure defines it (``confidence`` is a certainty).
            samples: Optional ``(M, K, *spatial)`` sample probabilities (for GED / Hungarian IoU).

        Returns:
            The case's row (flat name -> number).
        """
        from trustseg.measures.aggregate import aggregate
        from trustseg.measures.pixel import rater_disagreement
        from trustseg.metrics.calibration import calibration_state, merge_states, metrics_from_state, soft_label
        from trustseg.metrics.multirater import ged, hungarian_iou, qubiq_soft_dice, variance_ncc
        from trustseg.metrics.overlap import dice, dice_vs_raters, iou, majority_vote
        from trustseg.metrics.surface import surface_metrics
        from trustseg.metrics.uncertainty_quality import (
            pixel_correlation,
            ueo,
            uncertainty_error_auprc,
            uncertainty_error_auroc,
        )

        probs = torch.as_tensor(probs).float()
        labels = torch.as_tensor(labels).long()
        if probs.shape[0] != self.K or labels.shape[1:] != probs.shape[1:]:
            raise ValueError(
                f"{case_id}: probabilities {tuple(probs.shape)} and labels {tuple(labels.shape)} do not match "
                f"(K={self.K}, labels (R, *spatial))"
            )
        K, fg = self.K, self.classes[1:]
        hard = probs.argmax(0)
        maj = majority_vote(labels, K)
        soft = soft_label(labels, K)
        row: dict[str, Any] = {"case": case_id}

        # segmentation
        dv = dice_vs_raters(hard, labels, K, empty="nan")
        for key in ("majority", "consensus", "mean_rater"):
            for c, v in zip(fg, dv[key].tolist()):
                row[f"dice_{key}/{c}"] = _f(v)
            row[f"dice_{key}"] = _nanmean(dv[key].tolist())
        for c, v in zip(fg, iou(hard, maj, K, empty="nan").tolist()):
            row[f"iou_majority/{c}"] = _f(v)
        sm = surface_metrics(
            hard, maj, K, spacing=spacing, tolerance=self.cfg.nsd_tolerance, empty_both="nan", empty_one="nan"
        )
        for key in ("hd95", "assd", "nsd"):
            for c, v in zip(fg, sm[key].tolist()):
                row[f"{key}_majority/{c}"] = _f(v)
            row[f"{key}_majority"] = _nanmean(sm[key].tolist())
        case_dice = dice(hard, maj, K, empty="one")
        row["dice_qc"] = float(case_dice.float().mean())

        # calibration (states merged into the suite; per-case top-label ECE vs majority for the table)
        targets = {"majority": maj, "soft": soft}
        if self.cfg.per_rater_calibration:
            targets.update({f"rater_{r}": labels[r] for r in range(self.R)})
        for name, tgt in targets.items():
            st = calibration_state(probs, tgt, bins=self.cfg.bins)
            self.cal[name] = merge_states(self.cal[name], st)
            if name == "majority":
                m = metrics_from_state(st, self.cfg.bins)
                row["ece_toplabel_majority"] = m["ece_toplabel"]
                row["nll_majority"] = m["nll"]

        # CURVAS (challenge mode reads (D, H, W) volumes as rows, so it is reported for 3D cases only)
        from trustseg.metrics.curvas import curvas_metrics

        sp = tuple(spacing) if spacing is not None else (1.0,) * (labels.dim() - 1)
        for mode in self.cfg.curvas_modes:
            if mode == "challenge" and labels.dim() - 1 != 3:
                continue
            cm = curvas_metrics(probs, labels, spacing=sp, mode=mode)
            row[f"curvas_{mode}/ece_mean"] = _f(cm["ece_mean"])
            for c in range(1, K):
                for k, v in cm.get(str(c), {}).items():
                    row[f"curvas_{mode}/{self.classes[c]}/{k}"] = _f(v)

        # multi-rater agreement
        row["qubiq_soft_dice"] = _nanmean(float(qubiq_soft_dice(probs[k], soft[k])) for k in range(1, K))
        if samples is not None and samples.shape[0] > 1:
            s_hard = torch.as_tensor(samples).argmax(1)
            g = ged(s_hard, labels, num_classes=K)
            row["ged_iou"] = _f(g["ged"])
            row["hungarian_iou"] = _f(hungarian_iou(s_hard > 0, labels > 0))  # foreground union, as GED

        # uncertainty quality
        target = rater_disagreement(labels, K, spatial_dims=labels.dim() - 1).float()
        error = hard != maj
        row["rater_disagreement_sum"] = float(target.sum())
        fg_mask = (hard > 0)[None]
        for name, raw in (maps or {}).items():
            u = torch.as_tensor(raw).float()
            u = 1.0 - u if name in CERTAINTY else u
            if u.shape != target.shape or not torch.isfinite(u).all():
                raise ValueError(f"{case_id}: map {name!r} has shape {tuple(u.shape)} or non-finite values")
            pc = pixel_correlation(u[None], target[None], method="pearson")
            ps = pixel_correlation(u[None], target[None], method="spearman")
            row[f"{name}/pixel_pearson"] = _f(pc["per_image"][0])
            row[f"{name}/pixel_spearman"] = _f(ps["per_image"][0])
            self.pooled.setdefault(name, _PooledPearson()).update(u, target)
            if error.any():
                row[f"{name}/ueo"] = _f(ueo(u, error)[0])
                if (~error).any():
                    row[f"{name}/error_auroc"] = _f(uncertainty_error_auroc(u, error))
                    row[f"{name}/error_auprc"] = _f(uncertainty_error_auprc(u, error))
            if name in ("variance", "predicted_variance"):
                row[f"{name}/variance_ncc"] = _f(variance_ncc(u, target))
            for agg in self.cfg.qc_aggregators:
                mask, kw = (fg_mask, {"dilate": 2}) if agg == "fg_mean" else (None, {})
                row[f"{name}:{agg}"] = float(aggregate(u[None], agg, mask=mask, **kw)[0])
        self._rows.append(row)
        return row

    # -- results ----------------------------------------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        """Per-case rows (flat dicts)."""
        return list(self._rows)

    def result(self) -> dict[str, Any]:
        """Everything, JSON-able: summary, segmentation, calibration, CURVAS, uncertainty, quality control."""
        from trustseg.metrics.calibration import metrics_from_state, reliability_from_state
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

        rows = self._rows
        keys = list(dict.fromkeys(k for r in rows for k in r if k != "case"))
        means = {k: _nanmean(r.get(k, math.nan) for r in rows) for k in keys}
        counts = {k: int(sum(1 for r in rows if np.isfinite(r.get(k, math.nan)))) for k in keys}
        calibration = {}
        for name, st in self.cal.items():
            m = metrics_from_state(st, self.cfg.bins)
            rel = reliability_from_state(st, self.cfg.bins)
            m["reliability"] = {k: [None if not math.isfinite(x) else x for x in v.tolist()] for k, v in rel.items()}
            calibration[name] = m
        uncertainty: dict[str, dict[str, Any]] = {}
        names = sorted({k.split("/")[0] for k in keys if "/pixel_pearson" in k})
        renamed = {"pixel_pearson": "pixel_pearson_mean", "pixel_spearman": "pixel_spearman_mean"}
        for name in names:
            u: dict[str, Any] = {
                renamed.get(metric, metric): means.get(f"{name}/{metric}", math.nan)
                for metric in ("pixel_pearson", "pixel_spearman", "ueo", "error_auroc", "error_auprc", "variance_ncc")
            }
            u["pixel_pearson_pooled"] = self.pooled[name].value() if name in self.pooled else math.nan
            sc, dis = _columns(rows, f"{name}:mean", "rater_disagreement_sum")
            if len(sc) >= 3:
                u["image_pearson"] = _f(image_correlation(sc, dis, method="pearson"))
                u["image_spearman"] = _f(image_correlation(sc, dis, method="spearman"))
            uncertainty[name] = u
        qc = {}
        for score_name in sorted(k for k in keys if ":" in k):
            s, dice_t = _columns(rows, score_name, "dice_qc")  # the cases that have this score
            if len(s) >= 2:
                _, ideal = qc_ideal_curve(dice_t)
                f, curve = qc_curve(s, dice_t)
                qc[score_name] = {
                    "d_auc": _f(d_auc(s, dice_t)),
                    "aurc": _f(aurc(s, dice_t)),
                    "eaurc": _f(eaurc(s, dice_t)),
                    "curve": {"fraction": f.tolist(), "dice": curve.tolist(), "ideal": ideal.tolist()},
                }
                if len(s) >= 4:  # Dice predicted from this score alone, linear, leave-one-out
                    pm = dice_prediction_metrics(loo_linear_dice(s, dice_t), dice_t)
                    qc[score_name]["dice_prediction_loo"] = {k: v if k == "n" else _f(v) for k, v in pm.items()}
        summary = {
            "dice_majority": means.get("dice_majority", math.nan),
            "dice_consensus": means.get("dice_consensus", math.nan),
            "dice_mean_rater": means.get("dice_mean_rater", math.nan),
            "hd95_majority": means.get("hd95_majority", math.nan),
            "assd_majority": means.get("assd_majority", math.nan),
            "nsd_majority": means.get("nsd_majority", math.nan),
            "qubiq_soft_dice": means.get("qubiq_soft_dice", math.nan),
            "ece_toplabel_majority": calibration["majority"]["ece_toplabel"],
            "ece_classwise_majority": calibration["majority"]["ece_classwise"],
            "ece_toplabel_soft": calibration["soft"]["ece_toplabel"],
            "nll_soft": calibration["soft"]["nll"],
            "brier_soft": calibration["soft"]["brier"],
        }
        for c in self.classes[1:]:
            summary[f"dice_majority/{c}"] = means.get(f"dice_majority/{c}", math.nan)
        if "ged_iou" in means:
            summary["ged_iou"] = means["ged_iou"]
        return {
            "classes": self.classes,
            "num_raters": self.R,
            "cases": [r["case"] for r in rows],
            "config": {k: getattr(self.cfg, k) for k in self.cfg.__dataclass_fields__},
            "summary": summary,
            "num_cases": len(rows),
            "mean": means,
            "count": counts,
            "calibration": calibration,
            "uncertainty": uncertainty,
            "quality_control": qc,
        }
