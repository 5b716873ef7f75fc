"""Figures for reports: reliability diagrams and quality-control curves (matplotlib, written atomically)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from trustseg.core.figures import pyplot, save_figure


def reliability_plot(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path, title: str = "") -> Path:
    """Reliability diagram of several methods.

    Args:
        curves: method -> ``{"confidence": per-bin mean confidence, "accuracy": per-bin accuracy,
            "count": per-bin count}`` (bins with count 0 are skipped).
        path: Output PNG.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.2, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    for name, c in curves.items():
        conf = np.asarray(c["confidence"], float)
        acc = np.asarray(c["accuracy"], float)
        keep = np.asarray(c["count"], float) > 0
        ax.plot(conf[keep], acc[keep], marker="o", ms=3, lw=1.2, label=name)
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title or "reliability")
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def qc_plot(curves: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path, title: str = "") -> Path:
    """Quality-control curves: mean Dice after referring the most uncertain fraction, per method.

    Args:
        curves: method -> ``{"fraction": f, "dice": method curve, "ideal": ideal curve}``; the random curve is
            drawn from the first method's endpoints.
        path: Output PNG.
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4))
    for i, (name, c) in enumerate(curves.items()):
        f = np.asarray(c["fraction"], float)
        (line,) = ax.plot(f, c["dice"], lw=1.4, label=name)
        ax.plot(f, c["ideal"], ls="--", lw=0.8, color=line.get_color())
        if i == 0:
            d = np.asarray(c["dice"], float)
            ax.plot([0, 1], [d[0], 1.0], ls=":", color="grey", lw=0.8, label="random referral")
    ax.set(xlabel="fraction referred to an expert", ylabel="mean Dice", xlim=(0, 1), title=title or "quality control")
    ax.legend(fontsize=7)
    return save_figure(fig, path)
