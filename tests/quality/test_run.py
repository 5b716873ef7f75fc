"""The QC model end to end on planted prediction folders: fit -> save -> load -> predict, the review flag's
guarantee on the calibration cases, the outputs, and the refusals."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from trustseg.core.errors import ConfigError, DataError, UnknownNameError
from trustseg.data.dataset import load_dataset
from trustseg.quality.cases import read_cases
from trustseg.quality.config import QCConfig, predictor_names
from trustseg.quality.model import MANIFEST, QCModel, calibration_split
from trustseg.quality.run import fit_qc, predict_qc
from trustseg.quality.targets import true_quality

CFG = QCConfig(predictors=("gbr",), review_threshold=0.8, calibration_fraction=0.4, seed=0)


@pytest.fixture(scope="module")
def fitted(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("qc") / "model"
    model = fit_qc(planted["fit"], planted["data"], out, CFG)
    return out, model


def test_true_quality_is_the_suites_qc_dice(planted):
    ds = load_dataset(planted["data"])
    cases = list(read_cases(planted["fit"], planted["data"]))
    assert len(cases) == 50
    c = cases[0]
    assert c.truth == pytest.approx(true_quality("dice", c.inp.seg, ds[c.inp.case_id].labels, 2))
    assert 0.4 < min(x.truth for x in cases) < max(x.truth for x in cases) <= 1.0


def test_calibration_split_keeps_groups_whole_and_is_seeded(planted):
    cases = list(read_cases(planted["fit"], planted["data"]))
    for i, c in enumerate(cases):
        c.group = f"patient{i // 3}"
    fit, cal = calibration_split(cases, 0.3, seed=0)
    assert sorted(fit + cal) == list(range(50)) and len(cal) >= 15
    assert not {cases[i].group for i in fit} & {cases[i].group for i in cal}
    assert calibration_split(cases, 0.3, seed=0) == (fit, cal) != calibration_split(cases, 0.3, seed=1)
    with pytest.raises(DataError, match="at least 10 cases"):
        calibration_split(cases[:5], 0.3, 0)


def test_fit_records_what_it_used_and_scores_itself_on_held_out_cases(fitted, planted):
    out, model = fitted
    manifest = json.loads((out / MANIFEST).read_text())
    tr = manifest["training"]
    assert sorted(tr["fit_cases"] + tr["calibration_cases"]) == sorted(load_dataset(planted["data"]).ids[:50])
    assert tr["source"] == "validation" and manifest["target"] == "dice" and manifest["trustseg_version"]
    assert len(manifest["calibration"]["predicted"]) == len(tr["calibration_cases"])
    held = manifest["held_out"]
    # the planted relation is strong: a useful predictor on cases it never saw
    assert held["pearson"] > 0.6 and held["mae"] < 0.08, held
    assert (out / "config.yaml").is_file() and (out / "predictors" / "gbr").is_dir()


def test_save_load_same_predictions(fitted, planted):
    out, model = fitted
    inputs = [c.inp for c in read_cases(planted["new"])]
    a, b = model.predict(inputs), QCModel.load(out).predict(inputs)
    assert a == b


def test_predict_writes_csv_and_json_with_the_guarantee(fitted, planted, tmp_path):
    out, _ = fitted
    res = predict_qc(planted["new"], out, tmp_path / "qc.csv", data=planted["data"])
    with open(tmp_path / "qc.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20
    need = {"case", "predicted_dice", "dice_low", "dice_high", "uncertainty_score", "ood_p", "review", "reason"}
    assert need <= set(rows[0])
    for r in res["cases"]:
        assert 0 <= r["dice_low"] <= r["predicted_dice"] <= r["dice_high"] <= 1
        assert r["review"] == bool(r["reason"])
        assert 0 < r["ood_p"] <= 1 and 0 <= r["uncertainty_score"] <= 1
    st = res["settings"]
    assert st["review_threshold"] == 0.8 and st["catch"] == 0.9 and "exchangeable" in st["assumption"]
    ev = res["evaluation"]
    assert ev["n"] == 20 and np.isfinite(ev["mae"])
    # flagged exactly when the predicted Dice is at most the conformal threshold, or the case is OOD
    for r in res["cases"]:
        assert r["review"] == (r["predicted_dice"] <= st["conformal_threshold"] or r["ood_p"] < 0.01)


def test_review_threshold_and_catch_can_change_at_predict_time(fitted, planted):
    _, model = fitted
    inputs = [c.inp for c in read_cases(planted["new"])]
    loose = sum(r["review"] for r in model.predict(inputs, threshold=0.6, catch=0.5))
    strict = sum(r["review"] for r in model.predict(inputs, threshold=0.9, catch=0.95))
    assert loose <= strict


def test_refusals(fitted, planted, tmp_path):
    out, _ = fitted
    with pytest.raises(ConfigError, match="overwrite"):
        fit_qc(planted["fit"], planted["data"], out, CFG)
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "mine.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a QC model"):
        fit_qc(planted["fit"], planted["data"], tmp_path / "keep", CFG)
    assert (tmp_path / "keep" / "mine.txt").read_text() == "x"
    with pytest.raises(ConfigError, match="not a QC model folder"):
        QCModel.load(tmp_path / "keep")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / MANIFEST).write_text("{broken")
    with pytest.raises(ConfigError, match="not valid JSON"):
        QCModel.load(bad)
    (bad / MANIFEST).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ConfigError, match="not a trustseg QC model"):
        QCModel.load(bad)
    with pytest.raises(ConfigError, match=r"\.csv"):
        predict_qc(planted["new"], out, tmp_path / "qc.txt")


def test_config_validation_and_predictor_sets():
    assert predictor_names("tabular") == ("gbr",) and predictor_names("both") == ("gbr", "cnn")
    with pytest.raises(UnknownNameError, match="did you mean"):
        QCConfig(predictors=("gbm",))
    with pytest.raises(ConfigError, match="catch"):
        QCConfig(catch=1.0)
    assert QCConfig(target="hd95").threshold == 10.0 and not QCConfig(target="hd95").higher_is_better


def test_a_corrupt_or_foreign_predictor_file_is_named(fitted, tmp_path):
    out, _ = fitted
    copy = tmp_path / "m"
    shutil.copytree(out, copy)
    tab = copy / "predictors" / "gbr" / "tabular.json"
    tab.write_text(tab.read_text()[:200])  # truncated
    with pytest.raises(ConfigError, match="tabular.json"):
        QCModel.load(copy)
    tab.write_text(json.dumps({"kind": "something", "format_version": 1}))
    with pytest.raises(ConfigError, match="tabular.json"):
        QCModel.load(copy)
    shutil.rmtree(copy)
    shutil.copytree(out, copy)
    (copy / "features.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ConfigError, match="features.npy"):
        QCModel.load(copy)


def test_hd95_target_flags_cases_above_the_threshold(planted, tmp_path):
    cfg = QCConfig(predictors=("ridge",), target="hd95", review_threshold=2.0, calibration_fraction=0.4)
    model = fit_qc(planted["fit"], planted["data"], tmp_path / "m", cfg)
    assert model.manifest["target"] == "hd95" and not model.manifest["higher_is_better"]
    assert min(model.manifest["training"]["truth"]) >= 0
    res = predict_qc(planted["new"], tmp_path / "m", tmp_path / "qc.csv", data=planted["data"])
    st = res["settings"]
    assert not st["higher_is_better"] and st["review_threshold"] == 2.0
    for r in res["cases"]:
        assert 0 <= r["hd95_low"] <= r["predicted_hd95"] <= r["hd95_high"]
        assert r["review"] == (r["predicted_hd95"] >= st["conformal_threshold"] or r["ood_p"] < 0.01)
    assert np.isfinite(res["evaluation"]["mae"])


def test_too_few_failures_flag_every_case_and_say_why(fitted, planted):
    _, model = fitted
    rows = model.predict([c.inp for c in read_cases(planted["new"])], threshold=0.05)  # no calibration case fails
    assert rows and all(r["review"] for r in rows)
    assert all("every case is flagged" in r["reason"] and "inf" not in r["reason"] for r in rows)
    assert "every case is flagged" in model.statement(threshold=0.05)["warning"]
