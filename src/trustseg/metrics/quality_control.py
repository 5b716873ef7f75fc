"""Quality control (referral) curves, d-AUC, and risk–coverage AURC / E-AURC from image-level scores.

Inputs are one value per image: ``uncertainty`` (N,) (higher = less trustworthy) and ``dice`` (N,) in [0, 1].

* **QC curve**: rank the images by uncertainty, refer the n most uncertain to an expert (counted as corrected,
  Dice → 1), and report the mean Dice of the whole set, for f = n/N = 0, 1/N, ..., 1. Between these points the
  curve is linear (referring a fraction of an image), so any ``fractions`` are answered by interpolation.
  Ties in uncertainty are scored by their expectation over random orderings (each tied image counts with the
  group's mean Dice), so the result never depends on the input order.
* **Ideal curve**: refer in order of true Dice, worst first. **Random curve**: expected curve under random
  referral, mean Dice + f (1 − mean Dice).
* **d-AUC**: ∫_0^1 (ideal(f) − method(f)) df, exact trapezoid on the N + 1 points (≥ 0; 0 for a perfect
  ranking; lower is better).
* **AURC** (Geifman et al. 2019, risk r_i = 1 − Dice_i instead of a 0/1 loss): keep the most certain images
  first; selective risk at coverage k/N = mean risk of the k most certain; AURC = (1/N) Σ_{k=1}^N risk(k/N).
  **E-AURC** = AURC − AURC of the optimal ranking (images sorted by true risk) ≥ 0. Ties as above.
* **Dice prediction** (segmentation quality prediction, scored as in the quality-prediction study): R² and
  Pearson r between predicted and true Dice (:func:`dice_prediction_metrics`), plus Spearman and the mean
  absolute error. :func:`loo_linear_dice` is the simplest predictor: Dice linear in one image-level score,
  fitted leave-one-out, so no image's prediction has seen its own ground truth.
* **Predicted quality** (a quality-control model's per-image output, scored against the true Dice):
  :func:`failure_auroc` (AUROC of −predicted Dice separating the failures, true Dice < threshold, from the rest),
  :func:`interval_coverage` of predicted intervals [lo, hi], :func:`review_rates` of a review flag (catch rate =
  flagged failures / failures, review rate = flagged / N, precision = flagged failures / flagged), and
  :func:`quality_prediction_report`, every number at once (what ``trustseg evaluate`` reports as
  ``quality_prediction``, and what the quality layer and the benchmark call with arrays).
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np
import torch
from torch import Tensor

from trustseg.core.errors import ConfigError, DataError
from trustseg.metrics.registry import METRICS
from trustseg.metrics.uncertainty_quality import binary_auroc, pearson, spearman

#: Per-case values as a tensor or an array.
ArrayLike = Tensor | np.ndarray


@overload
def _check(uncertainty: Tensor, dice: Tensor, what: str = "uncertainty") -> tuple[Tensor, Tensor]: ...
@overload
def _check(uncertainty: None, dice: Tensor, what: str = "uncertainty") -> tuple[None, Tensor]: ...
def _check(uncertainty: Tensor | None, dice: Tensor, what: str = "uncertainty") -> tuple[Tensor | None, Tensor]:
    dice = torch.as_tensor(dice, dtype=torch.float64).reshape(-1)
    if dice.numel() == 0:
        raise DataError("quality control needs at least one image")
    if not bool(torch.isfinite(dice).all()):
        raise DataError("Dice values contain NaN or inf (decide an empty-mask policy before ranking)")
    if uncertainty is None:
        return None, dice
    u = torch.as_tensor(uncertainty, dtype=torch.float64).reshape(-1)
    if u.shape != dice.shape:
        raise DataError(f"{what} has {u.numel()} values but Dice has {dice.numel()}")
    if not bool(torch.isfinite(u).all()):
        raise DataError(f"{what} values contain NaN or inf")
    return u, dice


def _ordered(key: Tensor, values: Tensor, descending: bool) -> Tensor:
    """``values`` sorted by ``key``, each tie group of ``key`` replaced by its mean (expectation over orders)."""
    order = torch.sort(key, descending=descending, stable=True).indices
    k, v = key[order], values[order]
    _, inverse, counts = torch.unique_consecutive(k, return_inverse=True, return_counts=True)
    group_sum = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, inverse, v)
    return (group_sum / counts)[inverse]


def _curve(gains_order: Tensor, dice: Tensor, fractions: Tensor | None) -> tuple[Tensor, Tensor]:
    n = dice.numel()
    gain = torch.cat([torch.zeros(1, dtype=torch.float64), (1 - gains_order).cumsum(0)])
    f = torch.arange(n + 1, dtype=torch.float64) / n
    curve = (dice.sum() + gain) / n
    if fractions is None:
        return f, curve
    fr = torch.as_tensor(fractions, dtype=torch.float64).reshape(-1)
    if bool(((fr < 0) | (fr > 1)).any()):
        raise DataError("fractions must lie in [0, 1]")
    x = fr * n
    i = x.floor().long().clamp(max=n - 1)
    return fr, curve[i] + (x - i) * (curve[i + 1] - curve[i])


def qc_curve(uncertainty: Tensor, dice: Tensor, fractions: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Mean Dice of the set after referring the most uncertain fraction f (referred images count as Dice 1).

    Args:
        uncertainty: ``(N,)`` image-level uncertainty (higher = referred first).
        dice: ``(N,)`` Dice of each image.
        fractions: Fractions to report; default 0, 1/N, ..., 1.

    Returns:
        ``(f, mean_dice)`` float64 tensors.
    """
    u, d = _check(uncertainty, dice)
    return _curve(_ordered(u, d, descending=True), d, fractions)


def qc_ideal_curve(dice: Tensor, fractions: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The QC curve of the oracle that refers images in order of true Dice, worst first."""
    _, d = _check(None, dice)
    return _curve(torch.sort(d).values, d, fractions)


def qc_random_curve(dice: Tensor, fractions: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Expected QC curve under random referral: mean Dice + f (1 − mean Dice)."""
    _, d = _check(None, dice)
    n = d.numel()
    f = torch.arange(n + 1, dtype=torch.float64) / n if fractions is None else torch.as_tensor(fractions).double()
    m = d.mean()
    return f, m + f * (1 - m)


def d_auc(uncertainty: Tensor, dice: Tensor) -> float:
    """Area between the ideal and the method's QC curves, ∫_0^1 (ideal − method) df (trapezoid; lower is better)."""
    f, method = qc_curve(uncertainty, dice)
    _, ideal = qc_ideal_curve(dice)
    return float(torch.trapezoid(ideal - method, f))


def _aurc_sorted(risks: Tensor) -> Tensor:
    k = torch.arange(1, risks.numel() + 1, dtype=torch.float64)
    return (risks.cumsum(0) / k).mean()


def aurc(uncertainty: Tensor, dice: Tensor) -> float:
    """Area under the risk–coverage curve, risk = 1 − Dice, most certain images kept first (lower is better)."""
    u, d = _check(uncertainty, dice)
    return float(_aurc_sorted(_ordered(u, 1 - d, descending=False)))


def eaurc(uncertainty: Tensor, dice: Tensor) -> float:
    """Excess AURC: AURC − AURC of the optimal ranking (by true risk); 0 for a perfect ranking."""
    u, d = _check(uncertainty, dice)
    optimal = _aurc_sorted(torch.sort(1 - d).values)
    return float(_aurc_sorted(_ordered(u, 1 - d, descending=False)) - optimal)


def r2_score(predicted: Tensor, true: Tensor) -> float:
    """Coefficient of determination R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)² of predictions ŷ (N,) of y (N,).

    scikit-learn's convention (``r2_score``): can be negative (worse than predicting the mean); when y is
    constant, 1.0 for an exact prediction and 0.0 otherwise.
    """
    p, y = _check(predicted, true, "predicted Dice")
    ss_res = float(((y - p) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else 0.0
    return 1.0 - ss_res / ss_tot


def dice_prediction_metrics(predicted: Tensor, true: Tensor, threshold: float | None = None) -> dict[str, float]:
    """How well predicted per-image Dice (N,) matches the true Dice (N,): ``r2``, ``pearson``, ``spearman``, ``mae``,
    ``n`` and, with a ``threshold``, ``failure_auroc`` (:func:`failure_auroc`).

    Correlations are NaN when either input is constant.
    """
    p, y = _check(predicted, true, "predicted Dice")
    out: dict[str, float] = {
        "r2": r2_score(p, y),
        "pearson": float(pearson(p, y)),
        "spearman": float(spearman(p, y)),
        "mae": float((p - y).abs().mean()),
        "n": int(y.numel()),
    }
    if threshold is not None:
        out["failure_auroc"] = failure_auroc(p, y, threshold)
    return out


def _threshold(threshold: float) -> float:
    t = float(threshold)
    if not math.isfinite(t):
        raise ConfigError(f"the failure threshold must be a finite number, got {threshold!r}")
    return t


def failure_auroc(predicted_quality: Tensor, true_dice: Tensor, threshold: float = 0.7) -> float:
    """AUROC of the predicted quality (N,) at detecting the failures, images with true Dice < ``threshold``.

    The score is −predicted (a low predicted Dice flags a failure); ties count one half (Mann-Whitney, equal to
    ``sklearn.metrics.roc_auc_score(true < threshold, -predicted)``). 1 = every failure is predicted lower than
    every success, 0.5 = chance. NaN when all images fail or none does.

    Example:
        >>> failure_auroc(torch.tensor([0.9, 0.4, 0.8, 0.6]), torch.tensor([0.95, 0.5, 0.6, 0.8]))
        0.75
    """
    p, y = _check(predicted_quality, true_dice, "predicted quality")
    return float(binary_auroc(-p, y < _threshold(threshold)))


def interval_coverage(lo: Tensor, hi: Tensor, true: Tensor) -> float:
    """Fraction of images whose true value lies in its predicted interval, lo_i ≤ true_i ≤ hi_i (all ``(N,)``).

    Example:
        >>> interval_coverage(torch.tensor([0.5, 0.6]), torch.tensor([0.9, 0.7]), torch.tensor([0.9, 0.8]))
        0.5

    Raises:
        DataError: sizes that differ, NaN or infinite values, or an interval with lo > hi.
    """
    low, y = _check(lo, true, "interval low end")
    high, _ = _check(hi, y, "interval high end")
    if bool((low > high).any()):
        raise DataError(f"{int((low > high).sum())} predicted interval(s) have lo > hi")
    return float(((low <= y) & (y <= high)).double().mean())


def review_rates(review: Tensor, true_dice: Tensor, threshold: float = 0.7) -> dict[str, float]:
    """How a review flag (N,) (true / 1 = sent to an expert) meets the failures, true Dice < ``threshold``.

    Returns:
        ``catch_rate`` = flagged failures / failures (NaN without failures), ``review_rate`` = flagged / N,
        ``precision`` = flagged failures / flagged (NaN when nothing is flagged).

    Example:
        >>> review_rates(torch.tensor([True, False, True, True]), torch.tensor([0.5, 0.6, 0.9, 0.95]))
        {'catch_rate': 0.5, 'review_rate': 0.75, 'precision': 0.3333333333333333}

    Raises:
        DataError: sizes that differ, or a flag that is not 0/1.
    """
    flag, y = _check(torch.as_tensor(review).double(), true_dice, "review flag")
    if not bool(((flag == 0) | (flag == 1)).all()):
        raise DataError("review flags must be true/false (or 0/1)")
    flagged, failed = flag == 1, y < _threshold(threshold)
    caught, n_flag, n_fail = int((flagged & failed).sum()), int(flagged.sum()), int(failed.sum())
    return {
        "catch_rate": caught / n_fail if n_fail else math.nan,
        "review_rate": n_flag / y.numel(),
        "precision": caught / n_flag if n_flag else math.nan,
    }


def _optional(values: ArrayLike | None, n: int, what: str) -> Tensor | None:
    if values is None:
        return None
    v = torch.as_tensor(values).double().reshape(-1)
    if v.numel() != n:
        raise DataError(f"{what} has {v.numel()} values but Dice has {n}")
    return v


def quality_prediction_report(
    predicted: ArrayLike,
    true: ArrayLike,
    lo: ArrayLike | None = None,
    hi: ArrayLike | None = None,
    review: ArrayLike | None = None,
    threshold: float = 0.7,
) -> dict[str, object]:
    """Every score of a per-image quality prediction against the true Dice, in one dict (the results schema).

    Args:
        predicted: ``(N,)`` predicted Dice.
        true: ``(N,)`` true Dice (``qc_dice``).
        lo, hi: ``(N,)`` predicted interval ends (NaN where an image has none); both or neither.
        review: ``(N,)`` review flags (bool, or 0/1 with NaN where an image has none).
        threshold: A failure is an image with true Dice < ``threshold``.

    Returns:
        ``n``, ``threshold``, ``failures`` (their number), the :func:`dice_prediction_metrics` ``r2``, ``pearson``,
        ``spearman``, ``mae``, ``failure_auroc``; ``d_auc``, ``aurc``, ``eaurc`` and the ``curve`` (``fraction``,
        ``dice``, ``ideal``) of referring images lowest predicted Dice first (uncertainty = 1 − predicted); with
        ``lo``/``hi``: ``coverage`` (:func:`interval_coverage`), ``interval_width`` (mean hi − lo) and
        ``n_interval`` over the images that have both ends; with ``review``: ``catch_rate``, ``review_rate``,
        ``review_precision`` (:func:`review_rates`) and ``n_review`` over the flagged-or-not images. Undefined
        values are NaN.

    Raises:
        DataError: sizes that differ, NaN in ``predicted`` or ``true``, no image, an interval with lo > hi.
        ConfigError: a threshold that is not a finite number.
    """
    p, y = _check(torch.as_tensor(predicted), torch.as_tensor(true), "predicted Dice")
    t = _threshold(threshold)
    out: dict[str, object] = {"n": int(y.numel()), "threshold": t, "failures": int((y < t).sum())}
    out.update({k: v for k, v in dice_prediction_metrics(p, y, t).items() if k != "n"})
    f, curve = qc_curve(1 - p, y)
    _, ideal = qc_ideal_curve(y)
    out.update({"d_auc": d_auc(1 - p, y), "aurc": aurc(1 - p, y), "eaurc": eaurc(1 - p, y)})
    out["curve"] = {"fraction": f.tolist(), "dice": curve.tolist(), "ideal": ideal.tolist()}
    if (lo is None) != (hi is None):
        raise DataError("an interval needs both ends (lo and hi)")
    low, high = _optional(lo, y.numel(), "interval low end"), _optional(hi, y.numel(), "interval high end")
    if low is not None and high is not None:
        has = torch.isfinite(low) & torch.isfinite(high)
        n_int = int(has.sum())
        out["coverage"] = interval_coverage(low[has], high[has], y[has]) if n_int else math.nan
        out["interval_width"] = float((high[has] - low[has]).mean()) if n_int else math.nan
        out["n_interval"] = n_int
    flags = _optional(review, y.numel(), "review flag")
    if flags is not None:
        has = ~torch.isnan(flags)
        n_rev = int(has.sum())
        rates = (
            review_rates(flags[has], y[has], t)
            if n_rev
            else dict.fromkeys(("catch_rate", "review_rate", "precision"), math.nan)
        )
        out.update({"catch_rate": rates["catch_rate"], "review_rate": rates["review_rate"]})
        out.update({"review_precision": rates["precision"], "n_review": n_rev})
    return out


def loo_linear_dice(score: Tensor, dice: Tensor, clip: bool = True) -> Tensor:
    """Leave-one-out linear prediction of each image's Dice from an image-level score ``(N,)`` -> ``(N,)``.

    For image i, ordinary least squares Dice ≈ a + b·score is fitted on the other N − 1 images and evaluated
    at score_i (closed form, O(N)); where the other scores are all equal the fit is their mean Dice. With
    ``clip`` the prediction is clipped to [0, 1], the range of Dice. Needs N ≥ 3.
    """
    x, y = _check(score, dice, "score")
    n = x.numel()
    if n < 3:
        raise DataError(f"leave-one-out Dice prediction needs at least 3 images, got {n}")
    y_mean = y.mean()
    x, y = x - x.mean(), y - y_mean  # centred (the fit is invariant; sums lose less precision)
    m = n - 1
    sx, sy = x.sum() - x, y.sum() - y
    sxx, sxy = (x * x).sum() - x * x, (x * y).sum() - x * y
    den = m * sxx - sx * sx
    tiny = 1e-12 * (m * sxx).abs().clamp_min(1e-300)
    slope = torch.where(den > tiny, (m * sxy - sx * sy) / torch.where(den > tiny, den, torch.ones_like(den)), 0 * den)
    pred = (sy - slope * sx) / m + slope * x + y_mean
    return pred.clamp(0, 1) if clip else pred


METRICS.add("qc_curve", qc_curve)
METRICS.add("qc_ideal_curve", qc_ideal_curve)
METRICS.add("qc_random_curve", qc_random_curve)
METRICS.add("d_auc", d_auc)
METRICS.add("aurc", aurc)
METRICS.add("eaurc", eaurc)
METRICS.add("r2_score", r2_score)
METRICS.add("dice_prediction", dice_prediction_metrics)
METRICS.add("failure_auroc", failure_auroc)
METRICS.add("interval_coverage", interval_coverage)
METRICS.add("review_rates", review_rates)
METRICS.add("quality_prediction_report", quality_prediction_report)
METRICS.add("loo_linear_dice", loo_linear_dice)
