"""The comparison report from a compare output folder: self-contained, every section, known-answer table marks."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from tests.compare.layout_fixture import DATASET, METHODS
from trustseg.cli.main import main
from trustseg.compare.report import SECTIONS, build_compare_report
from trustseg.compare.report_data import read_compare
from trustseg.compare.report_table import best_methods
from trustseg.core.errors import ConfigError, DataError
from trustseg.reports.compare_plots import correlations


def _page(report_html: Path) -> str:
    return report_html.read_text()


def test_no_external_reference(report_html):
    page = _page(report_html)
    assert "http://" not in page and "https://" not in page
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)["\']', page)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r[:40] for r in refs if not r.startswith("data:")]
    assert "url(" not in page and "@import" not in page and "<link" not in page
    # every figure is an inlined PNG
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) >= 6 + 4  # 6 figures + the gallery


def test_every_section_present(report_html):
    page = _page(report_html)
    for key in SECTIONS:
        block = re.search(rf'data-section="{key}"><h3>[^<]*</h3>(.*?)</div>', page, re.S)
        assert block, key
        assert "No data for this section" not in block.group(1), key
    assert 'id="run-card"' in page and "compare.yaml" in page and "wall_s" in page


def test_table_rows_and_best_cell(report_html):
    page = _page(report_html)
    table = re.search(r'<table class="sortable summary"[^>]*>(.*?)</table>', page, re.S).group(1)
    rows = re.findall(r'<tr data-method="([^"]+)">(.*?)</tr>', table, re.S)
    assert [m for m, _ in rows] == [m for m, _ in METHODS]
    heads = re.findall(r"<th[^>]*>(.*?)</th>", table)
    cells = {m: re.findall(r"<td([^>]*)>(.*?)</td>", body) for m, body in rows}
    col = {h.split(" ")[0]: i for i, h in enumerate(heads)}
    # known answers (layout_fixture.TABLE_VALUES): mc-dropout has the higher Dice, softmax the lower ECE
    dice, ece = col["Dice"], col["top-label"]
    assert 'class="best"' in cells["mc-dropout"][dice][0] and 'class="best"' not in cells["softmax"][dice][0]
    assert 'class="best"' in cells["softmax"][ece][0] and 'class="best"' not in cells["mc-dropout"][ece][0]
    assert "0.75" in cells["mc-dropout"][dice][1] and "Δ +0.05 [0.04, 0.06]" in cells["mc-dropout"][dice][1]
    assert "Δ" not in cells["softmax"][dice][1]  # the baseline has no CI


def test_best_methods_ties_and_none():
    rows = [{"method": m, "values": {"x": {"mean": v}}} for m, v in (("a", 1.0), ("b", 1.0), ("c", 0.5))]
    assert best_methods(rows, "x", True) == {"a", "b"} and best_methods(rows, "x", False) == {"c"}
    assert best_methods(rows + [{"method": "d", "values": {"x": {"mean": None}}}], "x", False) == {"c"}
    assert best_methods(rows, "missing", True) == set()


def test_scatter_r_matches_the_evaluation(compare_dir, report_html):
    """The legend's r and ρ are the evaluation's image-level correlations (map mean vs summed disagreement)."""
    run = read_compare(compare_dir)
    page = _page(report_html)
    for jobs in run.runs(DATASET).values():
        res = jobs[0].results
        u = res["uncertainty"]["entropy"]
        rows = res["per_case"]
        x = [r["rater_disagreement_sum"]["raters"]["all"] for r in rows]
        y = [r["image_score"]["entropy"]["mean"] for r in rows]
        r, rho = correlations(x, y)
        assert r == pytest.approx(u["image_pearson"], abs=1e-6) and rho == pytest.approx(u["image_spearman"], abs=1e-6)
    assert "uncertainty vs rater disagreement" in page.lower()


def test_figures_exported(report_html):
    figs = report_html.parent / "report_figures"
    names = {p.name for p in figs.iterdir()}
    for stem in (
        "reliability",
        "uncertainty_vs_disagreement",
        "quality_control",
        "ood_distributions",
        "noise_robustness",
        "predicted_vs_true_dice",
    ):
        assert {f"{DATASET}_{stem}.png", f"{DATASET}_{stem}.pdf"} <= names, stem
    assert (figs / f"{DATASET}_reliability.pdf").read_bytes().startswith(b"%PDF")


def test_gallery_cases_worst_first(compare_dir, report_html):
    page = _page(report_html)
    cases = re.findall(r'<div class="case" data-id="([^"]+)" data-qc="([^"]*)"', page)
    run = read_compare(compare_dir)
    assert sorted(c for c, _ in cases) == sorted(run.jobs[0].results["cases"])
    qc = [float(v) for _, v in cases]
    assert qc == sorted(qc)  # worst predicted Dice first
    assert "review" in page and "every case is flagged" in page  # the QC reason is shown


def test_refuses_a_folder_that_is_not_a_compare_output(compare_dir, tmp_path):
    with pytest.raises(ConfigError, match="missing compare.yaml, run_card.json, table.json, jobs"):
        build_compare_report(tmp_path, tmp_path / "r.html")
    part = tmp_path / "part"
    shutil.copytree(compare_dir, part, ignore=shutil.ignore_patterns("run", "qc", "qcfit_pred", "*.nii.gz", "*.npy"))
    (part / "table.json").unlink()
    with pytest.raises(ConfigError, match="missing table.json"):
        build_compare_report(part, tmp_path / "r.html")
    (part / "table.json").write_text(json.dumps({"metrics": [], "rows": []}))
    job = next((part / "jobs").rglob("job.json"))
    job.write_text(json.dumps({"status": "running"}))
    with pytest.raises(DataError, match="not 'done'"):
        build_compare_report(part, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_cli(compare_dir, tmp_path, capsys):
    out = tmp_path / "page.html"
    assert main(["report", str(compare_dir), "--out", str(out)]) == 0
    assert out.is_file() and (tmp_path / "page_figures").is_dir()
    assert main(["report", str(compare_dir), "--out", str(out)]) == 0  # its own page is replaced
    other = tmp_path / "mine.html"
    other.write_text("<html>not trustseg</html>")
    assert main(["report", str(compare_dir), "--out", str(other)]) == 2
    assert other.read_text() == "<html>not trustseg</html>"
    assert main(["report", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.html")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_the_report_of_a_real_comparison(real_compare, real_report):
    """End to end: a real tiny comparison (2 methods x 2 seeds, OOD, noise, QC) and its report: offline, every
    section with data, one row per method, the gallery with each case's QC verdict."""
    out, table = real_compare
    page = _page(real_report)
    assert "http://" not in page and "https://" not in page
    refs = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']*)["\']', page)
    assert refs and all(r.startswith(("data:", "#")) for r in refs)
    for key in SECTIONS:
        block = re.search(rf'data-section="{key}"><h3>[^<]*</h3>(.*?)</div>', page, re.S)
        assert block and "No data for this section" not in block.group(1), key
    for row in table["rows"]:
        assert f">{row['method']}<" in page
    assert page.count('<div class="case"') >= 4 and 'data-qc=""' not in page  # every case has a predicted Dice
