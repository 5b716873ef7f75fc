"""Report renderers: figures are valid PNGs, the HTML page holds the tables, comparison rows pick the right map."""

import numpy as np
from PIL import Image

from trustseg.reports.html import Section, fmt, write_html_report
from trustseg.reports.overview import OverviewRow, render_overview
from trustseg.reports.plots import qc_plot, reliability_plot
from trustseg.reports.run_report import comparison_row, primary_measure


def test_overview_png_2d_and_3d(tmp_path):
    rng = np.random.default_rng(0)
    lab2 = np.zeros((3, 16, 16), int)
    lab2[:, 4:12, 4:12] = 1
    lab3 = np.zeros((2, 8, 16, 16), int)
    lab3[:, 3:5, 4:12, 4:12] = 2
    rows = [
        OverviewRow("a", rng.normal(size=(1, 16, 16)), lab2, lab2[0], {"entropy": rng.random((16, 16))}, "Dice 1"),
        OverviewRow("b", rng.normal(size=(1, 8, 16, 16)), lab3, lab3[0], {"entropy": rng.random((8, 16, 16))}),
    ]
    out = render_overview(rows, tmp_path / "o.png", title="t")
    img = Image.open(out)
    assert img.format == "PNG" and img.size[0] > img.size[1] > 100


def test_plots_and_html(tmp_path):
    rel = {"m": {"confidence": [0.1, 0.5, 0.9], "accuracy": [0.2, 0.5, 0.8], "count": [1, 0, 3]}}
    qc = {"m": {"fraction": [0, 0.5, 1], "dice": [0.8, 0.9, 1.0], "ideal": [0.8, 0.95, 1.0]}}
    assert Image.open(reliability_plot(rel, tmp_path / "r.png")).format == "PNG"
    assert Image.open(qc_plot(qc, tmp_path / "q.png")).format == "PNG"
    page = write_html_report(
        tmp_path / "index.html",
        "Title <x>",
        {"Dice": 0.91234567},
        [Section("Table", "text", [{"method": "a", "v": float("nan")}], ["r.png"])],
    ).read_text()
    assert "Title &lt;x&gt;" in page and "0.9123" in page and "<td>–</td>" in page and 'src="r.png"' in page
    assert fmt(None) == "–" and fmt(3) == "3"


def test_primary_measure_and_row():
    res = {
        "summary": {"dice": {"majority": {"mean": 0.9}}, "nll": {"soft": {"all": 0.3}}},
        "uncertainty": {"entropy": {"pixel_pearson_mean": 0.5}, "predicted_variance": {"pixel_pearson_mean": 0.6}},
        "quality_control": {"predicted_variance": {"mean": {"d_auc": 0.01, "eaurc": 0.02}, "fg_mean": {"d_auc": 9}}},
    }
    assert primary_measure("edue", res) == "predicted_variance"
    assert primary_measure("softmax", res) == "entropy"
    row = comparison_row("edue", res)
    assert row["pixel r (vs rater disagreement)"] == 0.6 and row["QC d-AUC"] == 0.01 and row["dice_majority"] == 0.9
    assert row["nll_soft"] == 0.3 and row["brier_soft"] is None  # read from the nested summary; absent -> None
    # a certainty measure is read by its oriented name
    conf = {"uncertainty": {"one_minus_confidence": {"pixel_pearson_mean": 0.1}}}
    assert primary_measure("softmax", conf) == "one_minus_confidence"


def test_inline_images_and_style(tmp_path):
    import base64

    from trustseg.core.figures import pyplot
    from trustseg.reports.html import data_uri
    from trustseg.reports.style import method_style, png_bytes, save_png_pdf

    reliability_plot({"m": {"confidence": [0.5], "accuracy": [0.5], "count": [1]}}, tmp_path / "r.png")
    page = write_html_report(tmp_path / "i.html", "t", {}, [Section("s", images=["r.png"])], inline=True).read_text()
    src = page.split('src="')[1].split('"')[0]
    assert (
        src.startswith("data:image/png;base64,")
        and base64.b64decode(src.split(",")[1]) == (tmp_path / "r.png").read_bytes()
    )
    assert data_uri(b"\x89PNG") == "data:image/png;base64,iVBORw=="
    png, pdf = save_png_pdf(pyplot().figure(), tmp_path / "f")
    assert (
        png.read_bytes()[:4] == b"\x89PNG"
        and pdf.read_bytes()[:4] == b"%PDF"
        and b"matplotlib.org" not in png.read_bytes()
    )
    assert b"http" not in png_bytes(pyplot().figure())
    assert len({method_style(i)["color"] for i in range(7)}) == 7
