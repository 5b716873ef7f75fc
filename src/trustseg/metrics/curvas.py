"""CURVAS (MICCAI 2024, 3 raters, multi-organ CT) metrics, in two modes.

* ``mode="volumetric"`` (the intended definitions): Dice over the whole volume restricted to the consensus
  regions (:func:`trustseg.metrics.overlap.consensus_dice`, the one implementation); the exact CRPS of the
  rater-volume Gaussian against the predicted volume; σ = 0 and absent labels handled.
* ``mode="challenge"`` (the official evaluation script's semantics, reproduced from its reading): its Dice
  receives ``(D, H, W)`` arrays without batch/channel axes, so the Dice routine (MONAI ``DiceMetric(
  include_background=False, reduction="mean", ignore_empty=True)``) reads D as the batch, H as the channel and W
  as the only spatial axis: one Dice per 1D row (d, h), the rows h = 0 dropped as "background", rows with an
  empty consensus foreground ignored (NaN), the rest averaged per slice and the slice means averaged; an organ
  with no such row scores 0 (MONAI's "mean" reduction returns 0 when no value is left). Its CRPS integrates
  (F̃(v) − 1[v ≥ V̂])² only over [μ − 3σ, μ + 3σ], where F̃ is the normal CDF linearly interpolated on 100
  equally spaced points between the 1 % and 99 % quantiles, 0 below and 1 above them (``interp1d`` with
  ``fill_value=(0, 1)``). Its ECE is torchmetrics' ``MulticlassCalibrationError`` (top-label, 50 bins, [lo, hi)
  plus a bin for confidence exactly 1).

Where challenge mode and the script differ (``docs/metrics_calibration.md``, "challenge mode vs the official
script"): we integrate the CRPS exactly where the script's ``quad`` is off by 2e-6 to 2e-5 relative (CT-sized
volumes; up to ~1e-3 on small ones); with σ = 0 we return 0, the script 0 (scipy ≥ 1.17) or NaN (older scipy);
we clip float32 background probabilities 1 − Σ organs that round below 0, where torchmetrics then softmaxes the
whole volume; we sum the ECE bins and the predicted volume in float64 (the script: float32, up to ~1e-4 in the
ECE on quantised maps); float32 confidences equal to torchmetrics' float32 bin edge just below b/50 fall one bin
lower here; the script's crop to the CT foreground box is not reproduced.

Regions for organ c with rater maps y^(r): consensus foreground = ∧_r [y^(r) = c], consensus background =
∧_r [y^(r) ≠ c], dissensus = the rest (ignored: the prediction is masked out there).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from trustseg.core.errors import ConfigError, DataError
from trustseg.metrics import overlap
from trustseg.metrics.calibration import calibration_metrics
from trustseg.metrics.multirater_counts import CaseCounts
from trustseg.metrics.registry import METRICS
from trustseg.metrics.voxel_stats import chunked_argmax, chunked_sum, masked_mean

Mode = Literal["volumetric", "challenge"]
_MODES = ("volumetric", "challenge")


def _mode(mode: str) -> str:
    if mode not in _MODES:
        raise ConfigError(f"mode must be one of {_MODES}, got {mode!r}")
    return mode


def consensus_regions(labels: Tensor, cls: int) -> tuple[Tensor, Tensor, Tensor]:
    """Consensus foreground, consensus background and dissensus masks of class ``cls``.

    Args:
        labels: ``(R, *sp)`` integer rater maps.
        cls: The organ's label value.

    Returns:
        Three ``(*sp)`` bool masks: all raters mark ``cls``; none does; the rest. They partition the volume.
    """
    labels = torch.as_tensor(labels)
    if labels.ndim < 2:
        raise DataError(f"labels must be (R, *spatial), got shape {tuple(labels.shape)}")
    hit = labels == cls
    fg, bg = hit.all(0), (~hit).all(0)
    return fg, bg, ~(fg | bg)


def consensus_dice(
    pred: Tensor, labels: Tensor, cls: int, *, mode: Mode = "volumetric", empty: float = math.nan
) -> float:
    """Dice of the predicted organ mask against the consensus foreground, outside the dissensus region.

    Args:
        pred: ``(*sp)`` bool mask of the predicted organ (e.g. ``argmax(probs) == cls``).
        labels: ``(R, *sp)`` rater maps.
        cls: Organ label.
        mode: "volumetric": 2|P∩G| / (|P| + |G|) over the volume, P = pred ∧ ¬dissensus, G = consensus fg
            (:func:`trustseg.metrics.overlap.consensus_dice` of the binary problem "organ ``cls`` or not");
            ``empty`` when P and G are both empty. "challenge": (D, H, W) only; row Dice
            2|P_dh∩G_dh| / (|P_dh| + |G_dh|) for the rows h ≥ 1 with |G_dh| > 0, averaged over the rows of each
            slice d, then over the slices that have such a row (MONAI's "mean" reduction: channels first, then
            batch); 0 when no row has a consensus foreground, as MONAI's reduction and so the script.
        empty: Value when P and G are both empty (volumetric mode only).

    Example:
        >>> labels = torch.tensor([[[1, 1, 0]], [[1, 0, 0]]])  # two raters, one row: G = {0}, dissensus {1}
        >>> consensus_dice(torch.tensor([[True, True, True]]), labels, 1)  # P = {0, 2}: 2·1 / (2 + 1)
        0.6666666666666666
    """
    p = torch.as_tensor(pred).bool()
    if _mode(mode) == "volumetric":
        hit = torch.as_tensor(labels) == cls  # bool maps: the binary problem "organ or not", no int64 copies
        value = float(overlap.consensus_dice(p, hit, 2, empty="nan")[0])
        return float(empty) if math.isnan(value) else value
    fg, _, dis = consensus_regions(labels, cls)
    p = p & ~dis
    if p.shape != fg.shape:
        raise DataError(f"prediction {tuple(p.shape)} and labels {tuple(fg.shape)} differ in shape")
    if p.ndim != 3:
        raise DataError(f"challenge-mode Dice reads (D, H, W) volumes as rows; got {p.ndim} dimensions")
    # rows h = 0 are the dropped "background channel"; row counts slice by slice (no float64 copies)
    inter, size_g, size_p = (
        torch.stack([m[d, 1:].sum(-1) for d in range(p.shape[0])]).double() for m in (p & fg, fg, p)
    )
    rows = size_g > 0  # (D, H−1) rows with a non-empty consensus foreground
    dice = torch.where(rows, 2 * inter / (size_g + size_p).clamp_min(1), torch.zeros_like(inter))
    n_rows = rows.sum(-1)
    slices = n_rows > 0
    if not bool(slices.any()):
        return 0.0  # MONAI's "mean" reduction of all-NaN (ignored) rows gives its t_zero
    return float((dice.sum(-1)[slices] / n_rows[slices]).mean())


def consensus_confidence(prob: Tensor, labels: Tensor, cls: int) -> float:
    """½[(1 − mean P over the consensus background) + mean P over the consensus foreground].

    Args:
        prob: ``(*sp)`` probability of organ ``cls``.
        labels: ``(R, *sp)`` rater maps.
        cls: Organ label.

    Returns:
        The confidence in [0, 1]; NaN when the consensus foreground or background is empty (as the script's
        ``nanmean`` of an empty selection).
    """
    fg, bg, _ = consensus_regions(labels, cls)
    prob = torch.as_tensor(prob)
    if not (bool(fg.any()) and bool(bg.any())):
        return math.nan
    return 0.5 * ((1 - masked_mean(prob, bg)) + masked_mean(prob, fg))  # float64 means, chunk by chunk


def crps_gaussian(x: float, mu: float, sigma: float) -> float:
    """Exact CRPS of N(μ, σ²) against the point x: σ[z(2Φ(z) − 1) + 2φ(z) − 1/√π], z = (x − μ)/σ; σ = 0: |x − μ|."""
    if sigma < 0:
        raise ConfigError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return abs(x - mu)
    z = (x - mu) / sigma
    cdf = 0.5 * math.erfc(-z / math.sqrt(2))
    pdf = math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return sigma * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi))


def _norm_ppf(q: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(q))


def crps_challenge(x: float, mu: float, sigma: float) -> float:
    """The official script's CRPS: ∫_{μ−3σ}^{μ+3σ} (F̃(v) − H(v − x))² dv, integrated exactly.

    F̃ = normal CDF linearly interpolated on 100 equally spaced points v_0..v_99 from the 1 % to the 99 %
    quantile, 0 below v_0 and 1 above v_99 (so it jumps by 0.01 at both ends); H = 1 for v > x, 0 below.
    On each piece F̃ − H is linear, g(v) = g_a + (g_b − g_a)(v − a)/(b − a), and ∫_a^b g² = (b − a)(g_a² + g_a g_b
    + g_b²)/3. The script integrates the same integrand with scipy's ``quad``, which misses this exact value by
    2e-6 to 2e-5 relative on CT-sized volumes and up to ~1e-3 relative on small ones. σ = 0 gives 0 (empty
    interval): the script also gives 0 with scipy ≥ 1.17, but NaN with older scipy (its CDF grid is NaN).
    """
    if sigma < 0:
        raise ConfigError(f"sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return 0.0
    lo_q, hi_q = _norm_ppf(0.01), _norm_ppf(0.99)
    grid = torch.linspace(mu + lo_q * sigma, mu + hi_q * sigma, 100, dtype=torch.float64)
    z = (grid - mu) / sigma
    cdf = 0.5 * torch.erfc(-z / math.sqrt(2))
    lower, upper = mu - 3 * sigma, mu + 3 * sigma
    pts = torch.cat([grid, torch.tensor([lower, upper, min(max(x, lower), upper)], dtype=torch.float64)])
    pts = torch.unique(pts)  # sorted
    a, b = pts[:-1], pts[1:]
    mid = 0.5 * (a + b)

    def ftilde(v: Tensor, inside: Tensor) -> Tensor:
        # inside: the piece lies within [v_0, v_99] (use the interpolant), else 0 below / 1 above
        interp = _interp(v, grid, cdf)
        return torch.where(inside, interp, (mid > grid[-1]).double())

    inside = (mid >= grid[0]) & (mid <= grid[-1])
    h = (mid > x).double()
    ga, gb = ftilde(a, inside) - h, ftilde(b, inside) - h
    return float(((b - a) * (ga * ga + ga * gb + gb * gb) / 3).sum())


def _interp(v: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Linear interpolation of (xp, fp) at v (clamped to the ends), like numpy.interp."""
    v = v.clamp(xp[0], xp[-1])
    i = torch.searchsorted(xp, v, right=True).clamp(1, len(xp) - 1)
    x0, x1, f0, f1 = xp[i - 1], xp[i], fp[i - 1], fp[i]
    return f0 + (f1 - f0) * (v - x0) / (x1 - x0)


def rater_volumes(labels: Tensor, cls: int, voxel_volume: float = 1.0) -> Tensor:
    """``(R,)`` float64 volume of organ ``cls`` per rater: voxel count × voxel volume."""
    labels = torch.as_tensor(labels)
    counts = [int(torch.count_nonzero(labels[r] == cls)) for r in range(labels.shape[0])]  # one rater at a time
    return torch.tensor(counts, dtype=torch.float64) * voxel_volume


def volume_crps(
    prob: Tensor, labels: Tensor, cls: int, *, spacing: Sequence[float] = (1.0,), mode: Mode = "volumetric"
) -> dict[str, float]:
    """Volume CRPS of organ ``cls``: V̂ = Σ p × voxel volume against N(μ, σ) of the rater volumes (population σ).

    V̂ is summed in float64 (the script sums float32 input in float32: V̂ up to ~1e-7 relative apart).

    Returns:
        dict ``crps``, ``predicted_volume``, ``mu``, ``sigma`` (same unit as ∏ spacing). Absent organ (all
        raters empty): μ = σ = 0, so the volumetric CRPS is V̂ and the challenge CRPS 0.
    """
    voxel_volume = float(math.prod(spacing))
    vols = rater_volumes(labels, cls, voxel_volume)
    return _volume_terms(vols, chunked_sum(torch.as_tensor(prob)) * voxel_volume, mode)


def _volume_terms(vols: Tensor, v_hat: float, mode: str) -> dict[str, float]:
    """:func:`volume_crps` from the ``(R,)`` float64 rater volumes and the predicted volume V̂."""
    mu, sigma = float(vols.mean()), float(vols.std(unbiased=False)) if len(vols) > 1 else 0.0
    fn = crps_gaussian if _mode(mode) == "volumetric" else crps_challenge
    return {"crps": fn(v_hat, mu, sigma), "predicted_volume": v_hat, "mu": mu, "sigma": sigma}


def with_background(organ_probs: Tensor, tol: float = 1e-4) -> Tensor:
    """Prepend the background probability 1 − Σ organ probabilities: ``(O, *sp)`` -> ``(O + 1, *sp)``.

    Tiny negative backgrounds (Σ up to 1 + ``tol``) are clipped to 0; a larger excess raises :class:`DataError`.
    The script keeps them: one float32 voxel with 1 − Σ < 0 makes torchmetrics read its whole input as logits and
    softmax every voxel, so its ECE is then not the ECE of the probabilities (which is what we compute).
    """
    organ_probs = torch.as_tensor(organ_probs)
    bg = 1 - organ_probs.sum(0, keepdim=True)
    if bool((bg < -tol).any()) or not bool(torch.isfinite(bg).all()):
        raise DataError("organ probabilities are NaN or sum to more than 1 at some voxel")
    return torch.cat([bg.clamp_min(0), organ_probs])


def curvas_metrics(
    probs: Tensor,
    labels: Tensor,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    mode: Mode = "volumetric",
    organs: Sequence[int] | None = None,
    includes_background: bool = True,
    bins: int = 50,
    valid: Tensor | None = None,
) -> dict[str, Any]:
    """All CURVAS metrics of one case.

    Args:
        probs: ``(K, *sp)`` probabilities with background at index 0, or ``(O, *sp)`` organ probabilities with
            ``includes_background=False`` (background = 1 − Σ organs, as the challenge).
        labels: ``(R, *sp)`` rater maps (0 = background, organ c = label c).
        spacing: Voxel size; volumes are in its unit cubed.
        mode: "volumetric" or "challenge" (module docstring).
        organs: Organ labels to score (default 1..K−1).
        includes_background: See ``probs``.
        bins: ECE bins (the challenge uses 50).
        valid: ``(*sp)`` bool field of view, or ``None``: the consensus confidence and the ECE read only the
            voxels inside (Dice and volumes count voxels, so the caller sets the outside to background instead).

    Returns:
        ``{organ: {"dice", "confidence", "crps", "predicted_volume", "mu", "sigma"}, "ece": [per rater],
        "ece_mean": float}``; the predicted mask is ``argmax_k probs == organ``.
    """
    _mode(mode)
    probs = torch.as_tensor(probs)
    labels = torch.as_tensor(labels)
    if not includes_background:
        probs = with_background(probs)
    if probs.shape[1:] != labels.shape[1:]:
        raise DataError(f"probs {tuple(probs.shape)} and labels {tuple(labels.shape)} differ in spatial shape")
    pred = chunked_argmax(probs)
    out: dict[str, Any] = {}
    for c in organs if organs is not None else range(1, probs.shape[0]):
        out[str(c)] = {
            "dice": consensus_dice(pred == c, labels, c, mode=mode),
            "confidence": consensus_confidence(_inside(probs[c], valid), _inside(labels, valid), c),
            **volume_crps(probs[c], labels, c, spacing=spacing, mode=mode),
        }
    closed = "torchmetrics" if mode == "challenge" else "left"
    kw = {"bins": bins, "closed": closed, "classes": False}
    p_in, y_in = _inside(probs, valid), _inside(labels, valid)
    out["ece"] = [calibration_metrics(p_in, y_in[r], **kw)["ece_toplabel"] for r in range(labels.shape[0])]
    out["ece_mean"] = sum(out["ece"]) / len(out["ece"])
    return out


def curvas_from_counts(
    counts: CaseCounts, *, spacing: Sequence[float] = (1.0, 1.0, 1.0), mode: Mode = "volumetric"
) -> dict[str, Any]:
    """:func:`curvas_metrics` (``bins=50``, every organ) from the one-pass histograms of
    :func:`trustseg.metrics.multirater_counts.case_counts` (with ``rows=True`` for the challenge mode): the same
    numbers up to the float64 summation order of Σ p and Σ confidence.

    With R raters, per organ c and vote count v_c: consensus foreground ⟺ v_c = R, background ⟺ v_c = 0. Dice
    (volumetric) ``2|π ∧ fg| / (|π ∧ fg| + |π ∧ bg| + |fg|)``, NaN when 0 / 0; challenge: the same per row of the
    counts by row, as :func:`consensus_dice`. Confidence from Σ p_c and the voxel counts of fg / bg inside the
    field of view; volumes from the rater voxel counts and Σ p_c; ECE per rater from the confidence slots (slot
    50, c = 1, joins bin 49 in volumetric mode, is torchmetrics' extra bin in challenge mode).

    Example:
        >>> from trustseg.metrics.multirater_counts import case_counts
        >>> probs = torch.tensor([[0.9, 0.2, 0.4, 0.1], [0.1, 0.8, 0.6, 0.9]]).view(2, 1, 1, 4)
        >>> labels = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 1]]).view(2, 1, 1, 4)
        >>> out = curvas_from_counts(case_counts(probs, labels))  # fg {1, 3}, bg {0}, dissensus {2}
        >>> round(out["1"]["dice"], 6), round(out["1"]["confidence"], 6)  # 2·2 / (2 + 2); ½(0.9 + 0.85)
        (1.0, 0.875)
    """
    _mode(mode)
    r = counts.num_raters
    voxel_volume = float(math.prod(spacing))
    out: dict[str, Any] = {}
    for o in range(counts.organ.shape[0]):
        h = counts.organ[o]  # (2, R + 1, 2): outside, v_c, π_c
        both = h.sum(0)
        inter, pred_bg, fg = int(both[r, 1]), int(both[0, 1]), int(both[r].sum())
        if mode == "volumetric":
            den = inter + pred_bg + fg
            dice = 2 * inter / den if den else math.nan
        else:
            dice = _row_dice(counts, o)
        n_fg, n_bg = int(h[0, r].sum()), int(h[0, 0].sum())
        s_fg, s_bg = float(counts.prob_sum[o, 0, r]), float(counts.prob_sum[o, 0, 0])
        conf = 0.5 * ((1 - s_bg / n_bg) + s_fg / n_fg) if n_fg and n_bg else math.nan
        vols = counts.rater_volume[o].double() * voxel_volume
        v_hat = float(counts.prob_sum[o].sum()) * voxel_volume
        out[str(o + 1)] = {"dice": dice, "confidence": conf, **_volume_terms(vols, v_hat, mode)}
    count, sconf, sacc = counts.slot_count.double(), counts.slot_conf, counts.agree.double()
    if mode == "volumetric":  # c = 1 closes the last bin
        count, sconf = _merge_last(count), _merge_last(sconf)
        sacc = torch.stack([_merge_last(a) for a in sacc])
    n = float(count.sum())
    out["ece"] = [float((a - sconf).abs().sum()) / n for a in sacc]
    out["ece_mean"] = sum(out["ece"]) / len(out["ece"])
    return out


def _merge_last(x: Tensor) -> Tensor:
    return torch.cat([x[:-2], x[-2:].sum(0, keepdim=True)])


def _row_dice(counts: CaseCounts, o: int) -> float:
    """The challenge-mode Dice of organ ``o + 1`` from the counts by row (as :func:`consensus_dice`)."""
    if counts.rows is None:
        raise DataError("the challenge-mode Dice needs the counts by row (case_counts(..., rows=True))")
    r = counts.num_raters
    rows = counts.rows[o, :, 1:].double()  # (D, H − 1, R + 1, 2); rows h = 0 are the dropped "background"
    inter, size_g = rows[..., r, 1], rows[..., r, :].sum(-1)
    size_p = inter + rows[..., 0, 1]
    has = size_g > 0
    dice = torch.where(has, 2 * inter / (size_g + size_p).clamp_min(1), torch.zeros_like(inter))
    n_rows = has.sum(-1)
    slices = n_rows > 0
    if not bool(slices.any()):
        return 0.0
    return float((dice.sum(-1)[slices] / n_rows[slices]).mean())


def _inside(t: Tensor, valid: Tensor | None) -> Tensor:
    """``t`` ``(..., *sp)`` restricted to the voxels of ``valid`` ``(*sp)``, as ``(..., N)``; ``t`` without one."""
    return t if valid is None else t[..., valid]


METRICS.add("curvas", curvas_metrics, "CURVAS consensus Dice/confidence, per-rater ECE, volume CRPS (two modes)")
METRICS.add("curvas_consensus_dice", consensus_dice)
METRICS.add("curvas_consensus_confidence", consensus_confidence)
METRICS.add("curvas_volume_crps", volume_crps)
