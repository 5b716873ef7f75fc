"""The report in a real browser (Debian's headless ``chromium``; ``.ci/ensure-chromium`` installs it in
``make test``): a screenshot that is not blank, and the gallery's search and sort run through the DOM (the page's
script reads ``#search=...&sort=...`` on load; ``--dump-dom`` prints the DOM after the scripts ran)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium") if p and Path(p).exists()), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (run .ci/ensure-chromium as root with apt available)"
)
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--allow-file-access-from-files"]


def _chromium(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=timeout, check=False)


def _dom(page: Path, hash_: str = "") -> str:
    res = _chromium("--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri() + hash_)
    assert 'data-ready="1"' in res.stdout, res.stderr[-2000:]  # the page's script ran to its end
    return res.stdout


def _cases(dom: str) -> list[tuple[str, bool, str]]:
    """(id, hidden, data-qc) of the gallery's cases in DOM order."""
    return [
        (m.group(2), "hidden" in m.group(1) + m.group(3), re.search(r'data-qc="([^"]*)"', m.group(0)).group(1))
        for m in re.finditer(r'<div class="case"([^>]*?)data-id="([^"]+)"([^>]*)>', dom)
    ]


def test_screenshot_not_blank(real_report, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "shot.png"
    res = _chromium(f"--screenshot={shot}", "--window-size=1280,2400", real_report.resolve().as_uri())
    assert shot.is_file(), res.stderr[-2000:]
    pixels = imread(shot)
    assert pixels.shape[0] >= 2000 and pixels.shape[1] >= 1200
    assert float(np.std(pixels[..., :3])) > 0.05  # text, tables and figures, not a blank page


def test_gallery_search_and_sort_in_the_dom(real_report):
    report_html = real_report  # the report of a real tiny comparison (tests/compare/conftest.py)
    plain = _cases(_dom(report_html))
    ids = [c for c, _, _ in plain]
    assert len(ids) >= 3 and not any(h for _, h, _ in plain)
    target = sorted(ids)[1]
    found = _cases(_dom(report_html, f"#search={target}"))
    assert [c for c, hidden, _ in found if not hidden] == [target]
    by_id = _cases(_dom(report_html, "#sort=id"))
    assert [c for c, _, _ in by_id] == sorted(ids)
    desc = _cases(_dom(report_html, "#sort=qc-desc"))
    qc = [float(v) for _, _, v in desc]
    assert qc == sorted(qc, reverse=True)
    asc = _cases(_dom(report_html, "#sort=qc-asc&search=synth"))
    assert [float(v) for _, _, v in asc] == sorted(qc) and not any(h for _, h, _ in asc)
