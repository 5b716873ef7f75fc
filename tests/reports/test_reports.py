"""Report building blocks: the HTML page holds the tables and inlines figures, the summary map is the method's
own, the styles tell methods apart."""

import base64

from trustseg.core.figures import pyplot
from trustseg.reports.html import Section, data_uri, fmt, write_html_report
from trustseg.reports.measure_choice import primary_measure
from trustseg.reports.style import method_style, png_bytes, save_png_pdf


def test_html_page(tmp_path):
    (tmp_path / "r.png").write_bytes(png_bytes(pyplot().figure()))
    page = write_html_report(
        tmp_path / "index.html",
        "Title <x>",
        {"Dice": 0.91234567},
        [Section("Table", "text", [{"method": "a", "v": float("nan")}], ["r.png"])],
    ).read_text()
    assert "Title &lt;x&gt;" in page and "0.9123" in page and "<td>–</td>" in page and 'src="r.png"' in page
    assert fmt(None) == "–" and fmt(3) == "3"


def test_primary_measure():
    res = {"uncertainty": {"entropy": {}, "predicted_variance": {}}}
    assert primary_measure("edue", res) == "predicted_variance"
    assert primary_measure("softmax", res) == "entropy"
    # a certainty measure is read by its oriented name
    assert primary_measure("softmax", {"uncertainty": {"one_minus_confidence": {}}}) == "one_minus_confidence"
    assert primary_measure("softmax", {"uncertainty": {}}) is None


def test_inline_images_and_style(tmp_path):
    (tmp_path / "r.png").write_bytes(png_bytes(pyplot().figure()))
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
    styles = [method_style(i) for i in range(40)]  # beyond the palette: colour + marker, colour + line style unique
    assert len({(st["color"], st["marker"]) for st in styles}) == 40
    assert len({(st["color"], str(st["linestyle"])) for st in styles}) == 40
