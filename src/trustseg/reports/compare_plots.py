"""The figures of the comparison report, one function per figure, each taking plain numbers per method and
returning a matplotlib figure (written by :func:`trustseg.reports.style.save_png_pdf`).

Every method keeps its colour, marker and line style (:func:`~trustseg.reports.style.method_style`) across the
figures; references (perfect calibration, ideal and random referral, the review threshold) are black or grey.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from trustseg.core.figures import pyplot
from trustseg.reports.style import method_style


def correlations(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Pearson r and Spearman ρ of the finite pairs (NaN with fewer than 3 or a constant side).

    >>> r, rho = correlations([1, 2, 3, 4], [1, 3, 2, 4])
    >>> round(r, 3), round(rho, 3)
    (0.8, 0.8)
    """
    a, b = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan, math.nan
    return float(stats.pearsonr(a, b)[0]), float(stats.spearmanr(a, b)[0])


def _grid(n: int, width: float = 3.0, height: float = 2.8, cols: int = 4) -> tuple[Any, list[Any]]:
    plt = pyplot()
    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def reliability_grid(curves: Mapping[str, Mapping[str, Sequence[float]]]) -> Any:
    """One reliability diagram per method: accuracy per confidence bin (bars), the gap to the diagonal, and the
    share of voxels per bin (grey, right scale is the bar height of the share).

    Args:
        curves: method -> ``{"confidence", "accuracy", "count"}`` per bin (bins with count 0 are skipped).
    """
    fig, axes = _grid(len(curves))
    for i, (ax, (name, c)) in enumerate(zip(axes, curves.items(), strict=True)):
        conf, acc = np.asarray(c["confidence"], float), np.asarray(c["accuracy"], float)
        count = np.asarray(c["count"], float)
        keep = count > 0
        st = method_style(i)
        ax.plot([0, 1], [0, 1], color="black", ls="--", lw=0.8, label="perfect calibration")
        ax.bar(conf[keep], acc[keep], width=0.06, color=st["color"], edgecolor="black", lw=0.5, label="accuracy")
        ax.bar(conf[keep], (count[keep] / max(count.sum(), 1)), width=0.03, color="0.6", label="share of voxels")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=name)
        ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()  # titles of a row clear the axis labels of the row above
    return fig


def uncertainty_scatter(points: Mapping[str, tuple[Sequence[float], Sequence[float]]], xlabel: str, ylabel: str) -> Any:
    """Per case: image-level uncertainty (y) against rater disagreement (x), one marker per method; the legend
    gives each method's Pearson r and Spearman ρ (:func:`correlations`).

    Args:
        points: legend label (method and map) -> ``(x, y)`` per case.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    for i, (name, (x, y)) in enumerate(points.items()):
        r, rho = correlations(x, y)
        st = method_style(i)
        ax.scatter(
            x,
            y,
            s=18,
            color=st["color"],
            marker=st["marker"],
            edgecolor="black",
            lw=0.3,
            label=f"{name}: r={r:.2f}, ρ={rho:.2f}",
        )
    ax.set(xlabel=xlabel, ylabel=ylabel, title="uncertainty vs rater disagreement (per case)")
    ax.legend(fontsize=7)
    return fig


def qc_curves(curves: Mapping[str, Mapping[str, Sequence[float]]]) -> Any:
    """Quality-control referral: mean Dice after sending the most uncertain fraction to an expert (referred cases
    count as Dice 1), per method (solid), its ideal ordering (same colour, thin dashed) and random referral
    (grey dotted, the straight line from the method's Dice at 0 to 1)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    for i, (name, c) in enumerate(curves.items()):
        f, d = np.asarray(c["fraction"], float), np.asarray(c["dice"], float)
        st = method_style(i)
        ax.plot(f, d, color=st["color"], ls=st["linestyle"], marker=st["marker"], ms=3, lw=1.5, label=name)
        ax.plot(f, c["ideal"], color=st["color"], ls=(0, (2, 2)), lw=0.8, label=f"{name} ideal")
        ax.plot([0, 1], [d[0], 1.0], color="0.5", ls=":", lw=0.9, label="random referral" if i == 0 else None)
    ax.set(xlabel="fraction referred to an expert", ylabel="mean Dice", xlim=(0, 1), title="quality control")
    ax.legend(fontsize=6)
    return fig


def ood_distributions(data: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Any:
    """Box plots of the best OOD score per distortion: rows = methods, columns = distortions, one box per set
    (clean, then each severity) with the AUROC of that severity vs clean above it.

    Args:
        data: method -> distortion -> ``{"score": name, "values": {"clean": [...], "<severity>": [...]},
            "auroc": {"<severity>": float}}``.
    """
    plt = pyplot()
    methods = list(data)
    dists = list(dict.fromkeys(d for m in methods for d in data[m]))
    fig, axes = plt.subplots(
        len(methods), max(len(dists), 1), figsize=(3.0 * max(len(dists), 1), 2.6 * len(methods)), squeeze=False
    )
    for i, m in enumerate(methods):
        st = method_style(i)
        for j, d in enumerate(dists):
            ax = axes[i][j]
            entry = data[m].get(d)
            if not entry:
                ax.axis("off")
                continue
            labels = list(entry["values"])
            vals = [np.asarray(entry["values"][k], float) for k in labels]
            box = ax.boxplot(vals, patch_artist=True, widths=0.6)
            for k, patch in enumerate(box["boxes"]):
                patch.set(facecolor="white" if k == 0 else st["color"], edgecolor="black", hatch="" if k == 0 else "//")
            ax.set_xticks(range(1, len(labels) + 1), ["clean", *(f"sev {k}" for k in labels[1:])], fontsize=7)
            top = max((float(np.nanmax(v)) for v in vals if v.size), default=1.0)
            for k, lab in enumerate(labels[1:], start=2):
                auc = entry.get("auroc", {}).get(lab)
                if auc is not None:
                    ax.text(k, top, f"AUROC\n{auc:.2f}", ha="center", va="bottom", fontsize=6)
            ax.set_title(f"{m}: {d}\n({entry['score']})", fontsize=8)
            ax.margins(y=0.25)
    fig.tight_layout()
    return fig


NOISE_PANELS = (("dice", "Dice", True), ("hd95", "HD95", False), ("ece", "top-label ECE", False), ("ueo", "UEO", True))


def noise_curves(levels: Mapping[str, Sequence[Mapping[str, float]]]) -> Any:
    """SURE's noise robustness: Dice, HD95, ECE and UEO against the noise mean μ (x + N(μ, σ²)), per method.

    Args:
        levels: method -> rows ``{"mu", "dice", "hd95", "ece", "ueo"}`` (optionally ``"<key>_sd"`` for error bars).
    """
    fig, axes = _grid(len(NOISE_PANELS), width=3.0, height=2.6)
    for ax, (key, label, hib) in zip(axes, NOISE_PANELS, strict=True):
        for i, (name, rows) in enumerate(levels.items()):
            mu = [r["mu"] for r in rows]
            y = [np.nan if r.get(key) is None else r[key] for r in rows]
            sd = [r.get(f"{key}_sd") or 0.0 for r in rows]
            st = method_style(i)
            ax.errorbar(
                mu,
                y,
                yerr=sd,
                color=st["color"],
                ls=st["linestyle"],
                marker=st["marker"],
                ms=4,
                lw=1.3,
                capsize=2,
                label=name,
            )
        ax.set(xlabel="noise mean μ", ylabel=label, title=f"{label} ({'higher' if hib else 'lower'} is better)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def predicted_vs_true(points: Mapping[str, Mapping[str, Sequence[Any]]], threshold: float) -> Any:
    """Predicted against true (QC) Dice per case and method, the identity line, and the review threshold (a case
    below it counts as failed): filled markers are the cases flagged for review, hollow ones the rest.

    Args:
        points: method -> ``{"predicted": [...], "true": [...], "review": [bool or None, ...]}``.
        threshold: The failure / review threshold (Dice).
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    ax.plot([0, 1], [0, 1], color="black", lw=0.8, ls="--", label="predicted = true")
    ax.axvline(threshold, color="0.3", ls=":", lw=1.0, label=f"review threshold {threshold:g}")
    ax.axhline(threshold, color="0.3", ls=":", lw=1.0)
    for i, (name, p) in enumerate(points.items()):
        st = method_style(i)
        pred, true = np.asarray(p["predicted"], float), np.asarray(p["true"], float)
        flag = np.array([bool(v) for v in p["review"]], bool)
        ax.scatter(
            pred[flag],
            true[flag],
            s=24,
            color=st["color"],
            marker=st["marker"],
            edgecolor="black",
            lw=0.4,
            label=f"{name}: flagged",
        )
        ax.scatter(
            pred[~flag],
            true[~flag],
            s=24,
            facecolor="none",
            edgecolor=st["color"],
            marker=st["marker"],
            lw=1.0,
            label=f"{name}: not flagged",
        )
    ax.set(
        xlabel="predicted Dice",
        ylabel="true Dice (QC Dice vs majority)",
        xlim=(-0.02, 1.02),
        ylim=(-0.02, 1.02),
        title="predicted vs true quality",
    )
    ax.legend(fontsize=6)
    return fig
