"""The comparison report of several evaluated runs (what ``trustseg demo`` ends with).

Input: for each method, its run folder, its prediction folder and its evaluation ``results.json`` (written by
:func:`trustseg.evaluation.evaluate_predictions`; schema in ``docs/evaluation.md``). Output folder:
``index.html``, ``comparison.csv`` and ``comparison.json`` (one row per method), ``overview_<method>.png``
(images, raters, disagreement, prediction, uncertainty), ``reliability.png`` and ``quality_control.png``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trustseg.core.atomic import atomic_write_csv, atomic_write_json, make_dirs
from trustseg.data.dataset import load_dataset
from trustseg.data.predictions import load_prediction, read_index
from trustseg.evaluation.context import oriented_name
from trustseg.evaluation.evaluate import verify_results
from trustseg.evaluation.results import get
from trustseg.methods import METHODS
from trustseg.reports.html import Section, write_html_report
from trustseg.reports.overview import OverviewRow, render_overview
from trustseg.reports.plots import qc_plot, reliability_plot

#: Comparison column -> (its path in the results' ``summary``, what it is).
COLUMNS = {
    "dice_majority": (("dice", "majority", "mean"), "Dice vs majority vote (mean fg class)"),
    "dice_consensus": (("dice", "consensus", "mean"), "Dice on consensus regions"),
    "hd95_majority": (("hd95", "majority", "mean"), "HD95 vs majority (px/mm)"),
    "ece_toplabel_majority": (("ece_toplabel", "majority", "all"), "top-label ECE vs majority"),
    "nll_soft": (("nll", "soft", "all"), "NLL vs soft label"),
    "brier_soft": (("brier", "soft", "all"), "Brier vs soft label"),
}


def primary_measure(method: str, results: dict[str, Any]) -> str | None:
    """The (oriented) map used to summarise a method's uncertainty: the method's declared ``primary_measure`` when
    its results have it, else the predictive entropy (or MI, or the first map)."""
    available = list(results.get("uncertainty", {}))
    first = oriented_name(METHODS.get(method).primary_measure) if method in METHODS else None
    if first in available:
        return first
    for name in ("entropy", "mi"):  # total uncertainty: rater disagreement is aleatoric, MI is epistemic only
        if name in available:
            return name
    return available[0] if available else None


def comparison_row(method: str, results: dict[str, Any]) -> dict[str, Any]:
    """One table row: segmentation, calibration and uncertainty-quality headline numbers."""
    s = results.get("summary", {})
    row: dict[str, Any] = {"method": method}
    for key, (path, _) in COLUMNS.items():
        row[key] = get(s, path, None)
    m = primary_measure(method, results)
    row["uncertainty map"] = m
    if m is not None:
        u = results["uncertainty"][m]
        row["pixel r (vs rater disagreement)"] = u.get("pixel_pearson_mean")
        row["image ρ (vs rater disagreement)"] = u.get("image_spearman")
        row["error AUROC"] = u.get("error_auroc")
        row["UEO"] = u.get("ueo")
        qc = get(results, ("quality_control", m, "mean"), {})
        row["QC d-AUC"] = qc.get("d_auc")
        row["E-AURC"] = qc.get("eaurc")
        row["Dice prediction R² (LOO)"] = qc.get("dice_prediction_loo", {}).get("r2")
    return row


def _overview(out: Path, method: str, pred_dir: Path, dataset, measure: str | None, n: int = 4) -> str | None:
    """The overview figure of a method's first ``n`` predicted cases with its map ``measure`` (oriented name)."""
    ids = [c["id"] for c in read_index(pred_dir)["cases"]][:n]
    rows = []
    for cid in ids:
        case = dataset[cid]
        pred = load_prediction(pred_dir, cid)
        maps = {k: v for k, v in pred["maps"].items() if oriented_name(k) in {measure, "entropy"}}
        rows.append(OverviewRow(cid, case.image, case.labels, pred["seg"], maps))
    if not rows:
        return None
    name = f"overview_{method}.png"
    render_overview(rows, out / name, title=f"{method}: test cases")
    return name


def build_report(
    out: str | Path, entries: Sequence[tuple[str, Path, Path, Path]], data_root: str | Path, title: str
) -> Path:
    """Write the comparison report; returns the path of ``index.html``.

    Args:
        out: Report folder.
        entries: ``(method, run_dir, pred_dir, results_json)`` per method.
        data_root: The dataset the runs were evaluated on.
        title: Page title.
    """
    out = Path(out)
    make_dirs(out)
    dataset = load_dataset(data_root)
    rows, rel, qc, images, per_measure = [], {}, {}, [], []
    for method, _run, pred_dir, res_path in entries:
        res = verify_results(res_path)  # the per-case CSV beside it must be the one written with it
        rows.append(comparison_row(method, res))
        cal = res.get("calibration", {}).get("majority", {}).get("reliability")
        if cal:
            rel[method] = cal
        m = primary_measure(method, res)
        curve = None if m is None else get(res, ("quality_control", m, "mean", "curve"), None)
        if curve:
            qc[f"{method} ({m})"] = curve
        for name, u in res.get("uncertainty", {}).items():
            per_measure.append(
                {
                    "method": method,
                    "measure": name,
                    "pixel r": u.get("pixel_pearson_mean"),
                    "pixel ρ": u.get("pixel_spearman_mean"),
                    "image r": u.get("image_pearson"),
                    "image ρ": u.get("image_spearman"),
                    "error AUROC": u.get("error_auroc"),
                    "error AUPRC": u.get("error_auprc"),
                    "UEO": u.get("ueo"),
                }
            )
        img = _overview(out, method, Path(pred_dir), dataset, m)
        if img:
            images.append(img)
    figs = []
    if rel:
        figs.append(reliability_plot(rel, out / "reliability.png", "reliability vs majority vote").name)
    if qc:
        figs.append(qc_plot(qc, out / "quality_control.png", "referral by image-level uncertainty").name)
    atomic_write_csv(out / "comparison.csv", rows)
    atomic_write_json(out / "comparison.json", rows)
    best = max(rows, key=lambda r: r.get("pixel r (vs rater disagreement)") or -np.inf)
    headline = {
        "methods": len(rows),
        "test cases": len(verify_results(entries[0][3]).get("cases", [])) if entries else 0,
        "best Dice (majority)": max((r.get("dice_majority") or float("nan")) for r in rows),
        f"best pixel r vs raters ({best['method']})": best.get("pixel r (vs rater disagreement)"),
    }
    sections = [
        Section(
            "Methods side by side",
            "Segmentation, calibration and uncertainty quality on the test split. "
            "Uncertainty columns use each method's own map (EDUE: predicted rater variance; evidential: "
            "vacuity; otherwise the predictive entropy).",
            rows,
        ),
        Section(
            "Every uncertainty map against rater disagreement",
            "Pearson r / Spearman ρ per image then "
            "averaged (pixel) and across images (image level, map mean vs Σ rater variance); error "
            "AUROC/AUPRC: the map as a detector of pixels where the prediction differs from the majority "
            "vote; UEO: best Dice between the thresholded map and the error mask.",
            per_measure,
        ),
        Section("Calibration and quality control", images=figs),
        Section(
            "Test cases",
            "Columns: image, each rater, rater disagreement Σ_k ȳ_k(1−ȳ_k), prediction, uncertainty maps.",
            images=images,
        ),
    ]
    return write_html_report(
        out / "index.html",
        title,
        headline,
        sections,
        footer=f"Data: {data_root}. Every number is also in comparison.json and in each "
        "method's evaluation/results.json.",
    )
