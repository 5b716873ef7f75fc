"""OOD / distortion detection from image-level scores: AUROC, FPR at 95 % TPR, AUPR.

Positives are the OOD (distorted) images; a higher score means "more OOD". Ties follow scikit-learn:

* AUROC = P(s_ood > s_clean) + ½ P(s_ood = s_clean) (Mann–Whitney U / (N·M) with mid-ranks), which equals
  ``roc_auc_score`` (trapezoid over the ROC points of the distinct thresholds).
* FPR@TPR: thresholds t run over the distinct scores, an image is flagged when s ≥ t (``roc_curve``); the value
  is the smallest FPR among thresholds whose TPR ≥ the level (0.95).
* AUPR (OOD positive) = Σ_t (R_t − R_{t−1}) P_t, scikit-learn's ``average_precision_score``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from trustseg.core.errors import DataError
from trustseg.metrics.registry import METRICS


def _scores(clean: Tensor, ood: Tensor) -> tuple[Tensor, Tensor]:
    c = torch.as_tensor(clean, dtype=torch.float64).reshape(-1)
    o = torch.as_tensor(ood, dtype=torch.float64).reshape(-1)
    if c.numel() == 0 or o.numel() == 0:
        raise DataError(f"need clean and OOD scores; got {c.numel()} clean and {o.numel()} OOD")
    if not (bool(torch.isfinite(c).all()) and bool(torch.isfinite(o).all())):
        raise DataError("detection scores contain NaN or inf")
    return c, o


def _roc_counts(c: Tensor, o: Tensor) -> tuple[Tensor, Tensor]:
    """(TP, FP) counts at every distinct threshold, thresholds decreasing (flag s ≥ t)."""
    thresholds = torch.unique(torch.cat([c, o]), sorted=True).flip(0)
    c_sorted, o_sorted = torch.sort(c).values, torch.sort(o).values
    tp = o.numel() - torch.searchsorted(o_sorted, thresholds, right=False)
    fp = c.numel() - torch.searchsorted(c_sorted, thresholds, right=False)
    return tp.double(), fp.double()


def ood_auroc(scores_clean: Tensor, scores_ood: Tensor) -> float:
    """AUROC of separating OOD (positive) from clean images by score; ties count ½ (as scikit-learn)."""
    c, o = _scores(scores_clean, scores_ood)
    allv = torch.cat([c, o])
    order = torch.sort(allv, stable=True).indices
    v = allv[order]
    _, inverse, counts = torch.unique_consecutive(v, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mid = (ends - (counts.double() - 1) / 2)[inverse]  # average 1-based rank of each tie group
    ranks = torch.empty_like(mid).scatter_(0, order, mid)
    n, m = o.numel(), c.numel()
    u = ranks[m:].sum() - n * (n + 1) / 2
    return float(u / (n * m))


def fpr_at_tpr(scores_clean: Tensor, scores_ood: Tensor, tpr: float = 0.95) -> float:
    """Smallest false-positive rate (clean images flagged) at which at least ``tpr`` of OOD images are flagged."""
    c, o = _scores(scores_clean, scores_ood)
    tp, fp = _roc_counts(c, o)
    ok = tp / o.numel() >= tpr
    return float((fp[ok] / c.numel()).min())


def fpr_at_95_tpr(scores_clean: Tensor, scores_ood: Tensor) -> float:
    """FPR at 95 % TPR (OOD positive, higher score = more OOD); lower is better."""
    return fpr_at_tpr(scores_clean, scores_ood, 0.95)


def ood_aupr(scores_clean: Tensor, scores_ood: Tensor) -> float:
    """Average precision with OOD as the positive class (scikit-learn's ``average_precision_score``)."""
    c, o = _scores(scores_clean, scores_ood)
    tp, fp = _roc_counts(c, o)
    recall = tp / o.numel()
    precision = tp / (tp + fp)
    d_recall = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
    return float((d_recall * precision).sum())


def detection_report(scores_clean: Tensor, scores_ood: Tensor) -> dict[str, float]:
    """``auroc``, ``fpr_at_95_tpr``, ``aupr_ood``, ``n_clean``, ``n_ood`` of one score on one clean/OOD split."""
    c, o = _scores(scores_clean, scores_ood)
    return {
        "auroc": ood_auroc(c, o),
        "fpr_at_95_tpr": fpr_at_95_tpr(c, o),
        "aupr_ood": ood_aupr(c, o),
        "n_clean": c.numel(),
        "n_ood": o.numel(),
    }


METRICS.add("ood_auroc", ood_auroc)
METRICS.add("fpr_at_95_tpr", fpr_at_95_tpr)
METRICS.add("ood_aupr", ood_aupr)
METRICS.add("ood_detection_report", detection_report)
