"""OOD-detection and noise-robustness protocols on a tiny trained run; the CLI flags that drive them."""

import json

import pytest

from tests.engine.test_train import make_data, tiny_cfg
from trustseg.cli.main import main
from trustseg.data.dataset import load_dataset
from trustseg.engine.train import train
from trustseg.ood.protocol import NOISE_LEVELS, noise_robustness, ood_detection


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ood")
    data = make_data(tmp, cases=8, size=24)
    run = tmp / "run"
    train(tiny_cfg(data, "mc-dropout", {"samples": 3}, epochs=2), run, progress=False)
    return data, run


def test_ood_detection_structure_and_ranges(trained):
    data, run = trained
    ds = load_dataset(data)
    cases = [ds[i] for i in ds.ids[:4]]
    res = ood_detection(run, cases, ds.num_classes, distortions=("noise", "blur"), severities=(1, 5))
    assert 0.0 <= res["clean_dice"] <= 1.0
    assert [(r["distortion"], r["severity"]) for r in res["results"]] == [
        ("noise", 1),
        ("noise", 5),
        ("blur", 1),
        ("blur", 5),
    ]
    for r in res["results"]:
        assert "sample_disagreement" in r["scores"]
        for v in r["scores"].values():
            assert 0.0 <= v["auroc"] <= 1.0 and 0.0 <= v["fpr95"] <= 1.0
    assert set(res["best"]) == {"noise", "blur"}
    with pytest.raises(ValueError, match="severity 7"):
        ood_detection(run, cases, ds.num_classes, distortions=("noise",), severities=(7,))


def test_noise_robustness_rows(trained):
    data, run = trained
    ds = load_dataset(data)
    rows = noise_robustness(run, [ds[i] for i in ds.ids[:3]], ds.num_classes)
    assert [r["mu"] for r in rows] == list(NOISE_LEVELS)
    for r in rows:
        assert set(r) == {"mu", "dice", "hd95", "ece", "ueo"}
        assert 0.0 <= r["dice"] <= 1.0 and 0.0 <= r["ece"] <= 1.0


def test_cli_evaluate_with_distortions(trained, tmp_path, capsys):
    data, run = trained
    pred, out = tmp_path / "pred", tmp_path / "res.json"
    assert (
        main(
            [
                "predict",
                "--run",
                str(run),
                "--input",
                str(data),
                "--split",
                "test",
                "--out",
                str(pred),
                "--samples",
                "--no-progress",
            ]
        )
        == 0
    )
    rc = main(
        [
            "evaluate",
            "--pred",
            str(pred),
            "--data",
            str(data),
            "--split",
            "test",
            "--out",
            str(out),
            "--run",
            str(run),
            "--distort",
            "contrast",
            "--severity",
            "3",
            "--noise-robustness",
        ]
    )
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["ood"]["results"][0]["distortion"] == "contrast" and len(res["noise_robustness"]) == 5
    assert "ged2_iou" in res["summary"]
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(out), "--distort", "noise"]) == 2
    assert "--run" in capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(pred),
                "--data",
                str(data),
                "--out",
                str(out),
                "--run",
                str(run),
                "--distort",
                "nosie",
            ]
        )
        == 2
    )
    assert "did you mean 'noise'" in capsys.readouterr().err
