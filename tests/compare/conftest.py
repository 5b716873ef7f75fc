"""Compare folders the tests read, each built once per session:

* ``compare_dir`` (:mod:`tests.compare.layout_fixture`): the compare layout with a hand-written ``table.json`` whose
  numbers are known answers for the report's table (best-marked cells, CIs);
* ``real_compare``: a real tiny ``trustseg compare`` run (2 methods x 2 seeds, 1 epoch, 2 workers, OOD, noise and
  QC), whose report the end-to-end and browser tests open.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compare.layout_fixture import build_compare_fixture
from trustseg.compare.config import compare_config_from_dict
from trustseg.compare.report import build_compare_report
from trustseg.compare.run import run_compare

#: The smallest comparison that exercises every part: 2 methods, 1 epoch, 16² images; 80 cases, so that the
#: validation split (12 cases) is large enough to fit a QC model.
TINY = {
    "datasets": [{"name": "tiny", "synth": {"cases": 10, "raters": 3, "size": 16, "num_classes": 2}}],
    "methods": [{"name": "softmax"}, {"name": "mc-dropout", "params": {"samples": 3}}],
    "seeds": [0],
    "net": {"params": {"channels": [4, 8]}},
    "train": {"epochs": 1, "batch_size": 4},
    "ood": None,
    "noise": None,
    "qc": {"enabled": False},
    "bootstrap": {"resamples": 200},
}
WHOLE = {
    **TINY,
    "datasets": [{"name": "tiny", "synth": {"cases": 80, "raters": 3, "size": 16, "num_classes": 2}}],
    "seeds": [0, 1],
    "ood": {"distortions": ["noise"], "severities": [3]},
    "noise": {"levels": [0.5]},
    "qc": {"enabled": True, "min_cases": 10},
}


@pytest.fixture(scope="session")
def compare_dir(tmp_path_factory) -> Path:
    return build_compare_fixture(tmp_path_factory.mktemp("compare") / "out")


@pytest.fixture(scope="session")
def report_html(compare_dir, tmp_path_factory) -> Path:
    return build_compare_report(compare_dir, tmp_path_factory.mktemp("report") / "report.html")


@pytest.fixture(scope="session")
def real_compare(tmp_path_factory) -> tuple[Path, dict]:
    """``(OUT, table)`` of the real comparison :data:`WHOLE` with 2 workers."""
    out = tmp_path_factory.mktemp("real_compare") / "out"
    table = run_compare(compare_config_from_dict(WHOLE), out, workers=2, progress=False, command=["test"])
    return out, table


@pytest.fixture(scope="session")
def real_report(real_compare) -> Path:
    return build_compare_report(real_compare[0], real_compare[0] / "report" / "index.html")
