"""Known-answer pipeline test of the predicted-quality components: a hand-built prediction folder whose index
carries ``qc`` entries (chosen predicted Dice, intervals, review flags) and a dataset with hand-computable Dice,
evaluated with ``evaluate_predictions``; every reported number is worked out by hand below."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from trustseg.core.atomic import atomic_write_json
from trustseg.core.errors import DataError
from trustseg.data.case import Case
from trustseg.data.dataset import write_dataset
from trustseg.data.io import write_label
from trustseg.evaluation import evaluate_predictions
from trustseg.evaluation.context import SuiteConfig
from trustseg.evaluation.results import flatten

# The organ is row 0 of a 4x4 image (4 pixels, one rater). Each prediction keeps k of them and adds j false
# positives elsewhere: Dice = 2k / (4 + k + j).
KEEP_EXTRA = {"a": (4, 0), "b": (3, 0), "c": (2, 0), "d": (1, 0), "e": (4, 2), "f": (4, 0)}
TRUE = {"a": 1.0, "b": 6 / 7, "c": 2 / 3, "d": 0.4, "e": 0.8, "f": 1.0}
# (predicted Dice, low, high, review); case f has no qc entry
QC = {
    "a": (0.9, 0.8, 1.0, False),  # 1.0 in [0.8, 1.0] (ends included)
    "b": (0.7, 0.6, 0.8, False),  # 6/7 above the interval
    "c": (0.75, 0.6, 0.9, True),  # covered; a failure (2/3 < 0.7), flagged
    "d": (0.5, 0.3, 0.6, True),  # covered; a failure, flagged
    "e": (0.95, 0.85, 1.0, False),  # 0.8 below the interval
}


def _seg(keep: int, extra: int) -> np.ndarray:
    seg = np.zeros((4, 4), np.int64)
    seg[0, :keep] = 1
    seg[3, :extra] = 1
    return seg


def _qc_entry(cid: str) -> dict:
    p, lo, hi, review = QC[cid]
    reason = "predicted Dice below 0.7" if review else ""
    return {"predicted_dice": p, "dice_low": lo, "dice_high": hi, "uncertainty_score": 1 - p, "ood_p": 0.5,
            "review": review, "reason": reason, "target": "dice"}  # fmt: skip


def make(tmp_path, with_qc: bool = True, qc_of=_qc_entry):
    label = np.zeros((1, 4, 4), np.int64)
    label[0, 0, :] = 1
    cases = [Case(cid, np.zeros((1, 4, 4), np.float32), label.copy()) for cid in KEEP_EXTRA]
    root = write_dataset(cases, tmp_path / "data", ["background", "organ"], ext=".npy")
    pred = tmp_path / "pred"
    pred.mkdir()
    entries = []
    for cid, (keep, extra) in KEEP_EXTRA.items():
        write_label(pred / f"{cid}_seg.npy", _seg(keep, extra))
        entry = {"id": cid, "files": {"seg": f"{cid}_seg.npy", "measures": {}}}
        if with_qc and cid in QC:
            entry["qc"] = qc_of(cid)
        entries.append(entry)
    atomic_write_json(pred / "predictions.json", {"method": "hand", "classes": [], "cases": entries})
    return root, pred


def test_every_reported_number_by_hand(tmp_path):
    root, pred = make(tmp_path)
    res = evaluate_predictions(pred, root, tmp_path / "ev" / "m.json")
    rows = {r["case"]: r for r in res["per_case"]}
    assert {c: r["qc_dice"]["majority"]["mean"] for c, r in rows.items()} == pytest.approx(TRUE)
    # per case: the qc entry copied (review as 1/0; the reason text stays in predictions.json)
    assert rows["c"]["predicted_quality"] == {
        "dice": {"predicted": 0.75, "low": 0.6, "high": 0.9},
        "uncertainty": {"score": 0.25},
        "ood": {"p": 0.5},
        "review": {"flag": 1.0},
    }
    assert "predicted_quality" not in rows["f"]
    assert res["mean"]["predicted_quality"]["review"]["flag"] == pytest.approx(2 / 5)  # the review rate
    assert res["count"]["predicted_quality"]["dice"]["predicted"] == 5
    q = res["quality_prediction"]["dice"]
    assert (q["n"], q["threshold"], q["failures"]) == (5, 0.7, 2)  # f has no qc entry; failures c, d
    # absolute errors |p − y| of a, b, c, d, e
    errors = [0.1, 6 / 7 - 0.7, 0.75 - 2 / 3, 0.1, 0.15]
    assert q["mae"] == pytest.approx(sum(errors) / 5)
    # R² = 1 − Σ(y − ŷ)² / Σ(y − ȳ)²
    y = [1.0, 6 / 7, 2 / 3, 0.4, 0.8]
    ybar = sum(y) / 5
    assert q["r2"] == pytest.approx(1 - sum(e * e for e in errors) / sum((v - ybar) ** 2 for v in y))
    p = [0.9, 0.7, 0.75, 0.5, 0.95]
    pbar = sum(p) / 5
    cov = sum((a - pbar) * (b - ybar) for a, b in zip(p, y))
    assert q["pearson"] == pytest.approx(
        cov / math.sqrt(sum((a - pbar) ** 2 for a in p) * sum((b - ybar) ** 2 for b in y))
    )
    # Spearman: ranks of p (4, 2, 3, 1, 5) and of y (5, 4, 2, 1, 3): Σd² = 10 -> 1 − 6·10 / (5·24)
    assert q["spearman"] == pytest.approx(0.5)
    # failures c (.75), d (.5) vs a (.9), b (.7), e (.95): predicted lower in 5 of 6 pairs (c > b)
    assert q["failure_auroc"] == pytest.approx(5 / 6)
    # referral lowest predicted first: d, b, c, a, e; a referred case counts Dice 1
    total = sum(y)
    gains = [0.6, 1 / 7, 1 / 3, 0.0, 0.2]
    curve = [(total + sum(gains[:i])) / 5 for i in range(6)]
    ideal_gains = [0.6, 1 / 3, 0.2, 1 / 7, 0.0]  # worst true Dice first: d, c, e, b, a
    ideal = [(total + sum(ideal_gains[:i])) / 5 for i in range(6)]
    assert q["curve"]["fraction"] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert q["curve"]["dice"] == pytest.approx(curve) and q["curve"]["ideal"] == pytest.approx(ideal)
    gap = [i - c for i, c in zip(ideal, curve)]
    assert q["d_auc"] == pytest.approx(0.2 * (sum(gap) - (gap[0] + gap[-1]) / 2))
    # AURC: keep highest predicted first: e, a, c, b, d with risks .2, 0, 1/3, 1/7, .6
    risks = [0.2, 0.0, 1 / 3, 1 / 7, 0.6]
    aurc = sum(sum(risks[:k]) / k for k in range(1, 6)) / 5
    best = sorted(risks)
    assert q["aurc"] == pytest.approx(aurc)
    assert q["eaurc"] == pytest.approx(aurc - sum(sum(best[:k]) / k for k in range(1, 6)) / 5)
    # intervals: a, c, d covered; widths .2, .2, .3, .3, .15
    assert q["coverage"] == pytest.approx(0.6) and q["n_interval"] == 5
    assert q["interval_width"] == pytest.approx(1.15 / 5)
    # review: c, d flagged, both failures
    assert (q["catch_rate"], q["review_rate"], q["review_precision"], q["n_review"]) == pytest.approx((1, 0.4, 1, 5))
    assert set(q) == {"n", "threshold", "failures", "r2", "pearson", "spearman", "mae", "failure_auroc", "d_auc",
                      "aurc", "eaurc", "curve", "coverage", "interval_width", "n_interval", "catch_rate",
                      "review_rate", "review_precision", "n_review"}  # fmt: skip
    assert res["higher_is_better"]["failure_auroc"] is True and res["higher_is_better"]["mae"] is False
    # on disk: the JSON section and the CSV columns (the flattened rows; f's cells empty)
    on_disk = json.loads((tmp_path / "ev" / "m.json").read_text())
    assert on_disk["quality_prediction"]["dice"]["coverage"] == pytest.approx(0.6)
    table = {r["case"]: r for r in csv.DictReader((tmp_path / "ev" / "m.csv").open())}
    assert float(table["d"]["predicted_quality/dice/predicted"]) == 0.5
    assert float(table["d"]["predicted_quality/review/flag"]) == 1.0 and table["f"]["predicted_quality/dice/low"] == ""
    assert set(table["c"]) == {"case", *flatten(rows["c"])}


def test_the_failure_threshold_comes_from_the_suite_config(tmp_path):
    root, pred = make(tmp_path)
    res = evaluate_predictions(pred, root, tmp_path / "m.json", suite=SuiteConfig(qc_failure_threshold=0.9))
    q = res["quality_prediction"]["dice"]
    # failures now b (6/7), c, d, e (.8); flagged c, d
    assert (q["threshold"], q["failures"], q["catch_rate"], q["review_precision"]) == (0.9, 4, 0.5, 1.0)
    # a (.9) is the one success: predicted below it are b, c, d; e (.95) is not -> 3 of 4
    assert q["failure_auroc"] == pytest.approx(3 / 4)
    assert res["config"]["qc_failure_threshold"] == 0.9


def test_no_qc_entry_no_section(tmp_path):
    root, pred = make(tmp_path, with_qc=False)
    res = evaluate_predictions(pred, root, tmp_path / "m.json")
    assert "quality_prediction" not in res
    assert not any("predicted_quality" in r for r in res["per_case"])
    header = next(csv.reader((tmp_path / "m.csv").open()))
    assert not [c for c in header if c.startswith("predicted_quality")]


def test_partial_entries_interval_or_flag_missing(tmp_path):
    def partial(cid):
        entry = _qc_entry(cid)
        if cid in ("a", "b"):
            del entry["dice_low"], entry["dice_high"], entry["review"]
        return entry

    root, pred = make(tmp_path, qc_of=partial)
    q = evaluate_predictions(pred, root, tmp_path / "m.json")["quality_prediction"]["dice"]
    # intervals and flags of c, d, e only: c, d covered; c, d flagged, both failures
    assert q["n"] == 5 and q["n_interval"] == 3 and q["coverage"] == pytest.approx(2 / 3)
    assert q["n_review"] == 3 and q["review_rate"] == pytest.approx(2 / 3) and q["catch_rate"] == 1.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"predicted_dice": "high"}, "qc.predicted_dice must be a finite number"),
        ({"predicted_dice": None}, "qc.predicted_dice must be a finite number"),
        ({"dice_low": 0.95, "dice_high": 0.9}, "low > high"),
        ({"dice_high": None}, "only one end"),
        ({"review": "yes"}, "qc.review must be true or false"),
        ({"ood_p": 1.5}, r"qc.ood_p must lie in \[0, 1\]"),
        ({"target": "iou"}, "qc.target must be one of"),
    ],
)
def test_bad_qc_entries_name_the_index(tmp_path, change, message):
    root, pred = make(tmp_path, qc_of=lambda cid: {**_qc_entry(cid), **change} if cid == "c" else _qc_entry(cid))
    with pytest.raises(DataError, match=message) as err:
        evaluate_predictions(pred, root, tmp_path / "m.json")
    assert err.value.path == pred / "predictions.json" and "case c" in str(err.value)
