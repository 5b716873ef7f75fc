"""The page of ``trustseg qc explain``: the cases flagged for review first, with their predicted quality,
interval, reason and Grad-CAM, then the embedding and the feature importances."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trustseg.reports.html import Section, write_html_report

REPORT = "report.html"


def write_qc_report(folder: str | Path, res: dict[str, Any]) -> Path:
    """Write ``report.html`` into the explanation folder from :func:`trustseg.quality.explain_run.explain_qc`'s
    result (its figures are linked by relative path)."""
    folder = Path(folder)
    t = res["target"]
    rows = sorted(res["cases"], key=lambda r: (not r["review"], r[f"predicted_{t}"]))
    table = [
        {
            "case": r["case"],
            f"predicted {t}": r[f"predicted_{t}"],
            "interval": f"[{r[f'{t}_low']:.3f}, {r[f'{t}_high']:.3f}]",
            "uncertainty score": r["uncertainty_score"],
            "OOD p": r["ood_p"],
            "review": "yes" if r["review"] else "no",
            "reason": r["reason"],
        }
        for r in rows
    ]
    figs = res.get("figures", {})
    sections = [Section("Cases (flagged first)", table=table)]
    cams = figs.get("gradcam", {})
    if cams:
        sections.append(
            Section(
                "Grad-CAM of the CNN quality predictor",
                text="Where the CNN looked to predict the quality of the cases with the lowest predicted quality.",
                images=list(cams.values()),
            )
        )
    if "embedding" in figs:
        sections.append(Section("Case features in 2D", text=res["embedding"]["method"], images=[figs["embedding"]]))
    imps = [v for k, v in figs.items() if k.startswith("importance_")]
    if imps:
        sections.append(Section("Feature importance", images=imps))
    n_review = sum(bool(r["review"]) for r in rows)
    headline = {"cases": len(rows), "flagged for review": n_review}
    return write_html_report(folder / REPORT, f"Quality control ({t})", headline, sections)
