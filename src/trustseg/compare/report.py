"""``trustseg report DIR --out report.html``: the page a team reads after ``trustseg compare``.

One self-contained HTML file (every figure a base64 ``data:`` PNG, the style sheet and a small script inline; no
external reference, so it opens offline) and, beside it, ``<stem>_figures/`` with each main figure as PNG and PDF
(for papers). Sections per dataset: the summary table (sortable, best per column marked, mean ± sd over seeds,
CI vs the baseline), reliability diagrams per method, uncertainty vs rater disagreement (r, ρ), quality-control
curves (ideal and random references), OOD score distributions per distortion and severity (AUROC), SURE's noise
robustness curves, predicted vs true Dice with the review threshold, and the case gallery; then the run card.
What each section shows and how to read it: ``docs/report.md``.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import yaml

from trustseg.compare.gallery import gallery_html
from trustseg.compare.report_data import (
    CompareRun,
    Job,
    mean_noise_levels,
    measure_of,
    ood_entries,
    per_case,
    pooled_reliability,
    read_compare,
)
from trustseg.compare.report_page import CSS, JS
from trustseg.compare.report_table import summary_table
from trustseg.core.atomic import atomic_write_text
from trustseg.core.errors import ConfigError
from trustseg.data.dataset import load_dataset
from trustseg.evaluation.results import get
from trustseg.reports import compare_plots as cp
from trustseg.reports.html import data_uri, fmt
from trustseg.reports.style import save_png_pdf

#: Section id -> title, in page order (each dataset has every section that has data).
SECTIONS = {
    "summary": "Summary table",
    "reliability": "Reliability diagrams",
    "uncertainty": "Uncertainty vs rater disagreement",
    "qc": "Quality-control curves",
    "ood": "OOD score distributions",
    "noise": "Noise robustness (SURE's protocol)",
    "quality": "Predicted vs true Dice",
    "gallery": "Case gallery",
}

_TEXT = {
    "reliability": "Accuracy per confidence bin against the majority vote, pooled over seeds; bars on the dashed "
    "diagonal are calibrated, bars below it over-confident. Grey: share of voxels per bin.",
    "uncertainty": "Per test case (first seed): the mean of the method's uncertainty map against the summed rater "
    "disagreement Σ_k ȳ_k(1−ȳ_k). r: Pearson, ρ: Spearman (legend).",
    "qc": "Mean Dice after referring the most uncertain fraction of cases to an expert (referred = Dice 1). "
    "Dashed: the ideal order (worst Dice first); grey dotted: random referral. Closer to ideal is better.",
    "ood": "The best image-level OOD score per distortion on clean and distorted copies of the test cases, by "
    "severity, with the AUROC of distorted vs clean (0.5 = chance, 1 = perfect).",
    "noise": "x + N(μ, 0.3²) in normalised units; a robust method keeps Dice and UEO and does not lose calibration "
    "as μ grows (mean over seeds, bars: sd).",
    "quality": "The QC model's predicted Dice against the true Dice per case; dotted lines: the review threshold "
    "(cases whose true Dice is below it fail). Filled markers: flagged for review.",
}


def _fig(figdir: Path, name: str, fig: Any) -> str:
    png, _pdf = save_png_pdf(fig, figdir / name)
    return (
        f'<figure><img src="{data_uri(png)}" alt="{html.escape(name)}"><figcaption class="note">{html.escape(name)}'
        f" (PNG + PDF in {html.escape(figdir.name)}/)</figcaption></figure>"
    )


def _dataset_figures(runs: dict[str, list[Job]], figdir: Path, ds: str) -> dict[str, str]:
    """section id -> HTML of that section's figure for one dataset (sections without data are left out)."""
    out: dict[str, str] = {}
    rel = {m: r for m, jobs in runs.items() if (r := pooled_reliability(jobs))}
    if rel:
        out["reliability"] = _fig(figdir, f"{ds}_reliability", cp.reliability_grid(rel))
    scatter: dict[str, tuple[list[float], list[float]]] = {}
    qc: dict[str, Any] = {}
    ood: dict[str, Any] = {}
    noise: dict[str, Any] = {}
    quality: dict[str, dict[str, list[Any]]] = {}
    threshold = 0.7
    for m, jobs in runs.items():
        res = jobs[0].results
        meas = measure_of(m, res)
        if meas is not None:
            x = per_case(res, ("rater_disagreement_sum", "raters", "all"))
            y = per_case(res, ("image_score", meas, "mean"))
            ids = [c for c in x if c in y]
            scatter[f"{m} ({meas})"] = ([x[c] for c in ids], [y[c] for c in ids])
            curve = get(res, ("quality_control", meas, "mean", "curve"), None)
            if curve:
                qc[f"{m} ({meas})"] = curve
        if entries := ood_entries(res):
            ood[m] = entries
        if levels := mean_noise_levels(jobs):
            noise[m] = levels
        pred = per_case(res, ("predicted_quality", "dice", "predicted"))
        if any(math.isfinite(v) for v in pred.values()):
            true = per_case(res, ("qc_dice", "majority", "mean"))
            flag = per_case(res, ("predicted_quality", "review", "flag"))
            ids = [c for c, v in pred.items() if math.isfinite(v)]
            quality[m] = {
                "predicted": [pred[c] for c in ids],
                "true": [true.get(c, math.nan) for c in ids],
                "review": [flag.get(c, 0.0) == 1.0 for c in ids],
            }
            threshold = float(get(res, ("quality_prediction", "dice", "threshold"), threshold))
    if scatter:
        out["uncertainty"] = _fig(
            figdir,
            f"{ds}_uncertainty_vs_disagreement",
            cp.uncertainty_scatter(scatter, "summed rater disagreement Σ_k ȳ_k(1−ȳ_k)", "mean uncertainty (image)"),
        )
    if qc:
        out["qc"] = _fig(figdir, f"{ds}_quality_control", cp.qc_curves(qc))
    if ood:
        out["ood"] = _fig(figdir, f"{ds}_ood_distributions", cp.ood_distributions(ood))
    if noise:
        out["noise"] = _fig(figdir, f"{ds}_noise_robustness", cp.noise_curves(noise))
    if quality:
        out["quality"] = _fig(figdir, f"{ds}_predicted_vs_true_dice", cp.predicted_vs_true(quality, threshold))
    return out


def _run_card(run: CompareRun) -> str:
    card = run.card
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v) if isinstance(v, (dict, list)) else fmt(v))}"
        "</td></tr>"
        for k, v in card.items()
    )
    jobs = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(fmt(v))}</td>"
            for v in (
                j.meta.get("dataset"),
                j.meta.get("method"),
                j.meta.get("seed"),
                j.meta.get("fold"),
                (j.meta.get("timings") or {}).get("train_s"),
                (j.meta.get("cost") or {}).get("inference_s_per_case"),
                (j.meta.get("cost") or {}).get("peak_rss_mb"),
            )
        )
        + "</tr>"
        for j in run.jobs
    )
    return (
        f'<table class="runcard">{rows}</table><h3>Jobs</h3><table><thead><tr><th>dataset</th><th>method</th>'
        "<th>seed</th><th>fold</th><th>train s</th><th>inference s/case</th><th>peak RSS MB</th></tr></thead>"
        f"<tbody>{jobs}</tbody></table><h3>compare.yaml</h3>"
        f"<pre>{html.escape(yaml.safe_dump(run.config, sort_keys=False))}</pre>"
    )


def _dataset_root(runs: dict[str, list[Job]]) -> Path:
    data = next(iter(runs.values()))[0].meta.get("data")
    if not data:
        raise ConfigError(f"{next(iter(runs.values()))[0].folder / 'job.json'} has no 'data' (the dataset root)")
    return Path(data)


#: The marker of a page this module wrote (an existing page without it is not replaced without ``overwrite``).
GENERATOR = '<meta name="generator" content="trustseg report">'


def check_report_out(out_html: Path, overwrite: bool) -> None:
    """Refuse to replace a folder, or a file trustseg did not write (unless ``overwrite``)."""
    if out_html.is_dir():
        raise ConfigError(f"--out {out_html} is a folder: give the HTML file to write, e.g. {out_html / 'report.html'}")
    if out_html.exists() and not overwrite:
        head = out_html.read_bytes()[:4096].decode("utf-8", "replace")
        if GENERATOR not in head:
            raise ConfigError(
                f"--out {out_html} exists and is not a trustseg report: choose another path or pass --overwrite"
            )


def build_compare_report(compare_dir: str | Path, out_html: str | Path, overwrite: bool = False) -> Path:
    """Write the comparison report of a ``trustseg compare`` output folder.

    Args:
        compare_dir: The ``--out`` folder of ``trustseg compare`` (layout: ``docs/report.md``).
        out_html: The page; its main figures go to ``<out_html.parent>/<stem>_figures/`` as PNG and PDF.
        overwrite: Replace an existing ``out_html`` that is not a trustseg report (one is always replaced).

    Returns:
        ``out_html``, written atomically.

    Raises:
        ConfigError: ``compare_dir`` is not a compare output (naming what is missing), or ``out_html`` is a folder
            or a file that is not a trustseg report (without ``overwrite``).
        DataError: a job or results file that cannot be read.
    """
    compare_dir, out_html = Path(compare_dir), Path(out_html)
    check_report_out(out_html, overwrite)
    run = read_compare(compare_dir)
    figdir = out_html.parent / f"{out_html.stem}_figures"
    figdir.mkdir(parents=True, exist_ok=True)
    body = []
    nav = []
    for ds in run.datasets:
        runs = run.runs(ds)
        figs = _dataset_figures(runs, figdir, ds) if runs else {}
        body.append(f'<section class="dataset" id="ds-{html.escape(ds)}"><h2>{html.escape(ds)}</h2>')
        nav.append(f'<a href="#ds-{html.escape(ds)}">{html.escape(ds)}</a>')
        for key, title in SECTIONS.items():
            if key == "summary":
                content = summary_table(run.table, ds) + (
                    '<p class="note">mean ± sd over seeds; Δ [low, high]: paired bootstrap CI of (method − '
                    f"{html.escape(str(run.table.get('baseline')))}) over test cases; ★: best in the column "
                    "(↑ higher / ↓ lower is better). Click a header to sort.</p>"
                )
            elif key == "gallery":
                content = gallery_html(load_dataset(_dataset_root(runs)), runs) if runs else ""
            else:
                content = figs.get(key, "")
                if content:
                    content = f'<p class="note">{html.escape(_TEXT[key])}</p>{content}'
            if not content:
                content = '<p class="note">No data for this section in the compare output.</p>'
            body.append(f'<div class="section" data-section="{key}"><h3>{html.escape(title)}</h3>{content}</div>')
        body.append("</section>")
    body.append(f'<section id="run-card" data-section="run-card"><h2>Run card</h2>{_run_card(run)}</section>')
    seeds = sorted({int(j.meta.get("seed", 0)) for j in run.jobs})
    head = {
        "datasets": len(run.datasets),
        "methods": len({j.meta.get("method") for j in run.jobs}),
        "seed" if len(seeds) == 1 else "seeds": ", ".join(map(str, seeds)),
        "jobs": len(run.jobs),
        "baseline": run.table.get("baseline"),
    }
    cards = "".join(
        f'<div class="card"><div class="v">{html.escape(fmt(v))}</div><div class="k">{html.escape(k)}</div></div>'
        for k, v in head.items()
    )
    title = f"trustseg comparison: {', '.join(run.datasets)}"
    page = (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>{GENERATOR}"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><div class='cards'>{cards}</div>"
        f"<nav class='note'>{' · '.join(nav)} · <a href='#run-card'>run card</a></nav>"
        f"{''.join(body)}<script>{JS}</script></body></html>\n"
    )
    return atomic_write_text(out_html, page)
