"""OOD-detection and noise-robustness protocols on a tiny trained run; the CLI flags that drive them."""

import json

import pytest

from tests.engine.test_train import make_data, tiny_cfg
from trustseg.cli.main import main
from trustseg.data.dataset import load_dataset
from trustseg.engine.train import train
from trustseg.evaluation import robustness
from trustseg.evaluation.robustness import OODConfig
from trustseg.inference.run_predictor import RunPredictor
from trustseg.ood.protocol import NOISE_LEVELS, noise_robustness, ood_detection


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ood")
    data = make_data(tmp, cases=8, size=24)
    run = tmp / "run"
    train(tiny_cfg(data, "mc-dropout", {"samples": 3}, epochs=2), run, progress=False)
    return data, run


def test_ood_detection_wrapper_is_the_protocol_on_the_run_predictor(trained):
    data, run = trained
    ds = load_dataset(data)
    cases = [ds[i] for i in ds.ids[:4]]
    res = ood_detection(run, cases, ds.num_classes, distortions=("noise", "blur"), severities=(1, 5))
    assert [(r["distortion"], r["severity"]) for r in res["results"]] == [
        ("noise", 1),
        ("noise", 5),
        ("blur", 1),
        ("blur", 5),
    ]
    assert all("sample_disagreement" in r["scores"] for r in res["results"])  # M = 3 samples
    direct = robustness.ood_detection(RunPredictor(run), cases, OODConfig(("noise", "blur"), (1, 5)))
    assert res == direct
    best = {d: max(rows, key=rows.get) for d, rows in _mean_aurocs(res).items()}
    assert {d: b["score"] for d, b in res["best"].items()} == best
    with pytest.raises(ValueError, match="severity 7"):
        ood_detection(run, cases, ds.num_classes, distortions=("noise",), severities=(7,))


def _mean_aurocs(res):
    out = {}
    for r in res["results"]:
        for name, v in r["scores"].items():
            out.setdefault(r["distortion"], {}).setdefault(name, []).append(v["auroc"])
    return {d: {n: sum(v) / len(v) for n, v in names.items()} for d, names in out.items()}


def test_noise_robustness_rows_are_the_protocol_levels(trained):
    data, run = trained
    ds = load_dataset(data)
    cases = [ds[i] for i in ds.ids[:3]]
    rows = noise_robustness(run, cases, ds.num_classes)
    assert [r["mu"] for r in rows] == list(NOISE_LEVELS)
    assert all(set(r) == {"mu", "dice", "hd95", "ece", "ueo"} for r in rows)
    assert rows == robustness.noise_protocol(RunPredictor(run), cases)["levels"]


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
    interp = res["noise_interpretability"]
    assert {"ucc_distance", "ur_distance", "ur_mu", "ucc_mu"} <= set(interp) and interp["mu_high"] == 0.9
    # ties counted +1: UCC_mu = 2 P(u_high >= u_low) - 1 >= 2 UR_mu - 1
    assert interp["ucc_mu"] >= 2 * interp["ur_mu"] - 1 - 1e-12
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
