"""``trustseg qc fit / predict / explain`` and ``trustseg predict --qc`` end to end on tiny planted data."""

from __future__ import annotations

import csv
import json

import pytest

from trustseg.cli.main import main


@pytest.fixture(scope="module")
def qc_model(planted, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_qc") / "qcmodel"
    rc = main(
        [
            "qc", "fit", "--pred", str(planted["fit"]), "--data", str(planted["data"]), "--out", str(out),
            "--predictor", "both", "--review-below", "0.8", "--set", "cnn.epochs=3", "cnn.size=[16, 16]",
        ]
    )  # fmt: skip
    assert rc == 0
    return out


def test_fit_writes_a_model_folder(qc_model, capsys):
    manifest = json.loads((qc_model / "qc_model.json").read_text())
    assert set(manifest["predictors"]) == {"gbr", "cnn"}
    assert (qc_model / "predictors" / "cnn" / "cnn.pt").is_file()
    assert (qc_model / "predictors" / "gbr" / "tabular.json").is_file()
    assert manifest["config"]["cnn"] == {"epochs": 3, "size": [16, 16]}


def test_predict_and_explain(qc_model, planted, tmp_path, capsys):
    out = tmp_path / "qc.csv"
    assert main(["qc", "predict", "--pred", str(planted["new"]), "--model", str(qc_model), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "flagged for review" in text and "exchangeable" in text
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20 and {"predicted_dice_gbr", "predicted_dice_cnn", "review", "reason"} <= set(rows[0])
    ex = tmp_path / "explain"
    rc = main(
        ["qc", "explain", "--pred", str(planted["new"]), "--model", str(qc_model), "--out", str(ex),
         "--data", str(planted["data"]), "--max-cases", "2"]
    )  # fmt: skip
    assert rc == 0
    res = json.loads((ex / "explain.json").read_text())
    assert len(res["figures"]["gradcam"]) == 2 and res["embedding"]["method"] in ("pca", "umap")
    for f in [res["figures"]["embedding"], res["figures"]["importance_gbr"], *res["figures"]["gradcam"].values()]:
        assert (ex / f).is_file()
    page = (ex / "report.html").read_text()
    assert "Grad-CAM" in page and "embedding.png" in page
    # a second explain into the same folder needs --overwrite; other folders are never replaced
    assert main(["qc", "explain", "--pred", str(planted["new"]), "--model", str(qc_model), "--out", str(ex)]) == 2
    assert "overwrite" in capsys.readouterr().err


def test_predict_with_qc_writes_the_same_columns_in_one_pass(qc_model, planted, tmp_path):
    run, pred = tmp_path / "run", tmp_path / "pred"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("net: {channels: [4, 8]}\ntrain: {batch_size: 8}\n")
    rc = main(
        ["train", "--data", str(planted["data"]), "--out", str(run), "--config", str(cfg), "--method", "mc-dropout",
         "--epochs", "1", "--set", "method.params.samples=3", "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    rc = main(
        ["predict", "--run", str(run), "--input", str(planted["data"]), "--split", "test", "--out", str(pred),
         "--qc", str(qc_model), "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    index = json.loads((pred / "predictions.json").read_text())
    assert index["qc_model"] == str(qc_model)
    entry = index["cases"][0]["qc"]
    assert {"predicted_dice", "dice_low", "dice_high", "review", "reason", "ood_p"} <= set(entry)
    with open(pred / "summary.csv", newline="") as fh:
        assert "predicted_dice" in next(csv.DictReader(fh))
    # the evaluation scores the predicted Dice it finds in the folder
    res = tmp_path / "ev" / "results.json"
    assert main(["evaluate", "--pred", str(pred), "--data", str(planted["data"]), "--out", str(res)]) == 0
    qp = json.loads(res.read_text())["quality_prediction"]["dice"]
    assert qp["n"] == len(index["cases"]) and "mae" in qp


def test_qc_errors_are_one_line(tmp_path, planted, capsys):
    assert main(["qc", "predict", "--pred", str(planted["new"]), "--model", str(tmp_path), "--out", "x.csv"]) == 2
    assert "not a QC model folder" in capsys.readouterr().err
    rc = main(["qc", "fit", "--pred", str(planted["fit"]), "--data", str(planted["data"]), "--out",
               str(tmp_path / "m"), "--predictor", "gbm"])  # fmt: skip
    assert rc == 2 and "did you mean" in capsys.readouterr().err
