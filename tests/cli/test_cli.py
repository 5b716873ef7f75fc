"""The command line: help everywhere, clear errors, and one end-to-end run synth -> train -> predict -> evaluate."""

import json

import numpy as np
import pytest

from trustseg.cli.main import build_parser, main, parse_severities, run_config_from_args
from trustseg.core.errors import ConfigError
from trustseg.data.dataset import load_dataset
from trustseg.data.io import write_label
from trustseg.engine.calibrate import calibrate_run

SUBCOMMANDS = [
    "synth",
    "import",
    "train",
    "calibrate",
    "predict",
    "evaluate",
    "methods",
    "measures",
    "metrics",
    "distortions",
    "demo",
]


@pytest.mark.parametrize("cmd", [None, *SUBCOMMANDS])
def test_help_everywhere(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"] if cmd is None else [cmd, "--help"])
    assert e.value.code == 0
    assert "usage: trustseg" in capsys.readouterr().out


def test_parser_lists_every_subcommand():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(SUBCOMMANDS) <= set(sub.choices)


@pytest.mark.parametrize("registry", ["methods", "measures", "metrics", "distortions"])
def test_lists(registry, capsys):
    assert main([registry]) == 0
    out = capsys.readouterr().out
    assert {"methods": "edue", "measures": "epkl", "metrics": "ged", "distortions": "ghosting"}[registry] in out


def test_unknown_names_and_bad_options_give_one_line_errors(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "d"), "--cases", "6", "--size", "16"]) == 0
    capsys.readouterr()
    rc = main(["synth", "--out", str(tmp_path / "e"), "--cases", "6", "--size", "16", "--test-fraction", "0.9"])
    err = capsys.readouterr().err
    assert rc == 2 and "test_fraction" in err and not (tmp_path / "e").exists()
    # 3.5 / 5 / 1.5 cases: whole cases by the midpoint rule
    rc = main(["synth", "--out", str(tmp_path / "f"), "--cases", "10", "--size", "16", "--val-fraction", "0.5"])
    splits = json.loads((tmp_path / "f" / "dataset.json").read_text())["splits"]["fixed"]
    assert rc == 0 and [len(splits[p]) for p in ("train", "val", "test")] == [3, 5, 2]
    capsys.readouterr()
    rc = main(["train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--method", "mc-droput"])
    err = capsys.readouterr().err
    assert rc == 2 and "did you mean 'mc-dropout'" in err
    rc = main(["train", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--set", "train.epohcs=2"])
    err = capsys.readouterr().err
    assert rc == 2 and "did you mean 'epochs'" in err
    rc = main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and "nowhere" in err
    assert main(["import", "lidcc", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "did you mean 'lidc'" in capsys.readouterr().err


def test_severities_as_lists_and_ranges():
    assert parse_severities("1..5") == [1, 2, 3, 4, 5]
    assert parse_severities("1,3,5") == [1, 3, 5]
    assert parse_severities("4, 1..2,2") == [1, 2, 4]
    for bad in ("0..3", "6", "a", "", "1...3", "5..1"):
        with pytest.raises(ConfigError, match="from 1 to 5"):
            parse_severities(bad)


@pytest.mark.parametrize("key", ["net.channels", "net.params.channels"])
def test_set_network_parameters_old_and_new_spelling(key, tmp_path):
    args = build_parser().parse_args(
        ["train", "--out", str(tmp_path), "--set", f"{key}=[8,16,32]", "--set", "net.norm=batch"]
    )
    cfg = run_config_from_args(args)
    assert cfg.net.name == "unet" and cfg.net.params["channels"] == (8, 16, 32) and cfg.net.params["norm"] == "batch"
    with pytest.raises(ConfigError, match="did you mean 'channels'"):
        run_config_from_args(build_parser().parse_args(["train", "--out", str(tmp_path), "--set", "net.chanels=[8]"]))


def test_end_to_end_synth_train_predict_evaluate(tmp_path, capsys):
    data, run, pred, res = tmp_path / "data", tmp_path / "run", tmp_path / "pred", tmp_path / "eval" / "results.json"
    assert main(["synth", "--out", str(data), "--cases", "10", "--raters", "3", "--size", "24", "--seed", "1"]) == 0
    assert (data / "dataset.json").exists()
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("net: {channels: [4, 8]}\ntrain: {batch_size: 4}\n")
    rc = main(
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(run),
            "--config",
            str(cfg),
            "--method",
            "mc-dropout",
            "--epochs",
            "2",
            "--seed",
            "0",
            "--set",
            "method.params.samples=3",
            "--no-progress",
        ]
    )
    assert rc == 0
    saved = (run / "config.yaml").read_text()
    assert "mc-dropout" in saved and "samples: 3" in saved and "- 4" in saved
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
                "--measures",
                "entropy,mi",
                "--no-progress",
            ]
        )
        == 0
    )
    index = json.loads((pred / "predictions.json").read_text())
    assert index["cases"] and (pred / "summary.csv").exists()
    assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--split", "test", "--out", str(res)]) == 0
    results = json.loads(res.read_text())
    assert 0.0 <= results["summary"]["dice"]["majority"]["mean"] <= 1.0
    assert set(results["uncertainty"]) == {"entropy", "mi"}
    assert res.with_suffix(".csv").exists() or (res.parent / "per_case.csv").exists()
    # a corrupt dataset file gives an error naming it
    (data / "dataset.json").write_text("{not json")
    assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(res)]) == 2
    assert "dataset.json" in capsys.readouterr().err


def test_resume_reads_the_runs_own_config(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["synth", "--out", str(data), "--cases", "6", "--size", "16"]) == 0
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data: {data}\nnet: {{channels: [4, 8]}}\ntrain: {{batch_size: 4, epochs: 1}}\n")
    assert main(["train", "--out", str(run), "--config", str(cfg), "--no-progress"]) == 0
    last = (run / "member_0" / "last.pt").stat().st_mtime_ns
    # no --config and no --data: the run folder's config.yaml is used, the finished member is left as it is
    assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 0
    assert (run / "member_0" / "last.pt").stat().st_mtime_ns == last
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "fresh"), "--resume", "--no-progress"]) == 2
    assert "--data" in capsys.readouterr().err


def test_calibrate_fits_and_stores_the_temperature(tmp_path, capsys):
    data, run = tmp_path / "data", tmp_path / "run"
    assert main(["synth", "--out", str(data), "--cases", "8", "--raters", "3", "--size", "16", "--ext", ".npy"]) == 0
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("net: {channels: [4, 8]}\ntrain: {batch_size: 4, epochs: 1}\n")
    assert main(["train", "--data", str(data), "--out", str(run), "--config", str(cfg), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["calibrate", str(run)]) == 0
    t_val = json.loads((run / "run.json").read_text())["temperature"]
    assert t_val > 0 and f"{t_val:.6g}" in capsys.readouterr().out
    assert calibrate_run(run) == pytest.approx(t_val)  # the CLI is the function
    assert main(["calibrate", str(run), "--data", str(data), "--split", "test"]) == 0
    t_test = json.loads((run / "run.json").read_text())["temperature"]
    assert t_test == pytest.approx(calibrate_run(run, split="test")) and t_test != t_val
    capsys.readouterr()
    assert main(["calibrate", str(run), "--split", "tset"]) == 2
    assert "unknown split 'tset'" in capsys.readouterr().err


def test_allow_outside_on_the_commands_that_read_indexes(tmp_path, capsys):
    """predictions.json / dataset.json naming files outside their folder: exit 2 naming them; --allow-outside reads."""
    data, pred, res = tmp_path / "data", tmp_path / "pred", tmp_path / "res.json"
    assert main(["synth", "--out", str(data), "--cases", "4", "--raters", "2", "--size", "16", "--seed", "1"]) == 0
    ds = load_dataset(data)
    case = ds[0]
    pred.mkdir()
    (tmp_path / "outside").mkdir()
    write_label(pred / "seg.png", np.zeros(case.labels.shape[1:], np.int64))
    write_label(tmp_path / "outside" / "seg.png", case.labels[0])  # the outside file scores better
    entry = {"id": case.case_id, "shape": list(case.labels.shape[1:]), "files": {"seg": "../outside/seg.png"}}
    index = {"method": "other-tool", "classes": ds.classes, "measures": [], "cases": [entry]}
    (pred / "predictions.json").write_text(json.dumps(index))
    capsys.readouterr()
    assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(res)]) == 2
    err = capsys.readouterr().err
    assert "predictions.json" in err and f"case {case.case_id!r}" in err and "../outside/seg.png" in err
    assert not res.exists()
    args = ["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(res), "--allow-outside"]
    assert main(args) == 0
    outside_dice = json.loads(res.read_text())["summary"]["dice"]
    write_label(pred / "seg.png", case.labels[0])  # the same file inside gives the same scores: it was read
    entry["files"]["seg"] = "seg.png"
    (pred / "predictions.json").write_text(json.dumps(index))
    assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(res)]) == 0
    assert json.loads(res.read_text())["summary"]["dice"] == outside_dice
    write_label(pred / "seg.png", np.zeros(case.labels.shape[1:], np.int64))
    assert main(["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(res)]) == 0
    assert json.loads(res.read_text())["summary"]["dice"] != outside_dice
    meta = json.loads((data / "dataset.json").read_text())
    meta["cases"][0]["image"] = "../outside/secret.nii.gz"
    (data / "dataset.json").write_text(json.dumps(meta))
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1", "--no-progress"]) == 2
    assert "dataset.json" in capsys.readouterr().err
    for cmd in (["train", "--out", "r"], ["predict", "--run", "r", "--input", "i", "--out", "o"], ["calibrate", "r"]):
        assert build_parser().parse_args([*cmd, "--allow-outside"]).allow_outside is True
