"""The comparison table on hand-built job folders (known answers): mean ± sd over seeds, the paired bootstrap
against the baseline, the cost columns, and the three files."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from trustseg.compare.config import compare_config_from_dict
from trustseg.compare.jobs import JOB_JSON, job_hash, plan_jobs
from trustseg.compare.table import build_table, write_table
from trustseg.core.atomic import atomic_write_json, atomic_write_text, csv_text
from trustseg.core.errors import DataError
from trustseg.evaluation.results import flatten

CASES = ["c0", "c1", "c2", "c3"]
BASE_DICE = [0.5, 0.6, 0.7, 0.8]


def _cfg():
    return compare_config_from_dict(
        {
            "datasets": [{"name": "d", "data": "/nowhere"}],
            "methods": [{"name": "softmax"}, {"name": "mc-dropout"}, {"name": "tta"}],
            "seeds": [0, 1],
            "ood": None,
            "bootstrap": {"resamples": 500},
        }
    )


def _write_job(cfg, job, dice, cost_params=100):
    rows = [{"case": c, "dice": {"majority": {"mean": v}}} for c, v in zip(CASES, dice)]
    text = csv_text([flatten(r) for r in rows])
    results = {
        "pred_dir": "p", "data": "/nowhere", "per_case": rows, "csv": "results.csv",
        "summary": {"dice": {"majority": {"mean": sum(dice) / len(dice)}}, "nll": {"soft": {"all": 0.3}}},
        "csv_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }  # fmt: skip
    atomic_write_text(job.results.with_suffix(".csv"), text)
    atomic_write_json(job.results, results)
    cost = {"params": cost_params, "train_s": 2.0, "inference_rel_forward": 3.0, "peak_rss_mb": 10.0}
    atomic_write_json(job.folder / JOB_JSON, {"status": "done", "hash": job_hash(cfg, job), "cost": cost})


@pytest.fixture
def folder(tmp_path):
    cfg = _cfg()
    for job in plan_jobs(cfg, tmp_path):
        shift = {"softmax": 0.0, "mc-dropout": 0.0, "tta": 0.1}[job.method]  # mc-dropout == softmax, tta = +0.1
        seed_shift = 0.02 * job.seed  # seeds differ by a constant: the sd over seeds is known
        _write_job(cfg, job, [v + shift + seed_shift for v in BASE_DICE], cost_params=100 + 10 * job.seed)
    return cfg, tmp_path


def test_known_answer_table(folder):
    cfg, out = folder
    table = build_table(cfg, out)
    rows = {r["method"]: r for r in table["rows"]}
    assert table["baseline"] == "softmax" and list(rows) == ["softmax", "mc-dropout", "tta"]
    base = rows["softmax"]["values"]["dice_majority"]
    assert base["per_seed"] == pytest.approx([0.65, 0.67])
    assert base["mean"] == pytest.approx(0.66) and base["sd"] == pytest.approx(math.sqrt(2) * 0.01)
    assert base["ci_vs_baseline"] is None  # the baseline has no CI
    same = rows["mc-dropout"]["values"]["dice_majority"]["ci_vs_baseline"]
    assert (same["diff"], same["low"], same["high"], same["n_cases"]) == (0.0, 0.0, 0.0, 4)
    shifted = rows["tta"]["values"]["dice_majority"]["ci_vs_baseline"]
    assert shifted["low"] == pytest.approx(0.1) and shifted["high"] == pytest.approx(0.1)
    assert shifted["p_better"] == 1.0
    # a metric without per-case values (pooled NLL) has no CI; one absent from the results is null
    assert rows["tta"]["values"]["nll_soft"]["ci_vs_baseline"] is None
    assert rows["tta"]["values"]["nll_soft"]["mean"] == pytest.approx(0.3)
    assert rows["tta"]["values"]["nll_soft"]["sd"] == pytest.approx(0.0)
    assert rows["tta"]["values"]["ged2_iou"] == {"mean": None, "sd": None, "per_seed": [None, None],
                                                  "ci_vs_baseline": None}  # fmt: skip
    assert rows["tta"]["cost"] == {"params": 105, "train_s": 2.0, "inference_rel_forward": 3.0, "peak_rss_mb": 10.0}
    assert rows["tta"]["seeds"] == [0, 1] and rows["tta"]["folds"] == [0]
    keys = [m["key"] for m in table["metrics"]]
    assert len(keys) == len(set(keys)) and {"dice_majority", "ged2_iou", "params"} <= set(keys)
    assert {m["group"] for m in table["metrics"]} <= {
        "segmentation", "calibration", "multi-rater", "uncertainty", "interpretability", "qc", "ood", "noise",
        "quality-prediction", "cost",
    }  # fmt: skip


def test_files_written(folder):
    cfg, out = folder
    write_table(cfg, out)
    assert json.loads((out / "table.json").read_text())["rows"][2]["method"] == "tta"
    csv = (out / "table.csv").read_text().splitlines()
    assert csv[0].startswith("dataset,method,seeds,dice_majority,dice_majority_sd,dice_majority_diff")
    assert len(csv) == 4
    md = (out / "table.md").read_text()
    assert "| Dice vs majority (dice_majority) ↑ | 0.660 ± 0.014 | 0.660 ± 0.014 [0.000, 0.000] |" in md


def test_unfinished_or_tampered_jobs_are_refused(folder):
    cfg, out = folder
    job = plan_jobs(cfg, out)[1]
    job.results.with_suffix(".csv").write_text("case\nx\n")  # not the CSV written with the results
    with pytest.raises(DataError, match="not the one written"):
        build_table(cfg, out)
    (job.folder / JOB_JSON).unlink()
    with pytest.raises(DataError, match="has not finished"):
        build_table(cfg, out)
