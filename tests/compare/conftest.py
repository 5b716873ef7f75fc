"""The compare output folder the report tests read (built once per session by :mod:`tests.compare.layout_fixture`;
swap ``build_compare_fixture`` for a real tiny ``trustseg compare`` run once it exists)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compare.layout_fixture import build_compare_fixture


@pytest.fixture(scope="session")
def compare_dir(tmp_path_factory) -> Path:
    return build_compare_fixture(tmp_path_factory.mktemp("compare") / "out")


@pytest.fixture(scope="session")
def report_html(compare_dir, tmp_path_factory) -> Path:
    from trustseg.compare.report import build_compare_report

    return build_compare_report(compare_dir, tmp_path_factory.mktemp("report") / "report.html")
