"""CompareConfig: YAML loading, validation, CLI overrides, per-job run configs, the recipes and the preset."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustseg.cli.main import main
from trustseg.compare.config import (
    CompareConfig,
    DatasetSpec,
    MethodSpec,
    compare_config_from_dict,
    load_compare_config,
    run_config,
    with_overrides,
)
from trustseg.compare.jobs import job_hash, plan_jobs
from trustseg.compare.presets import preset
from trustseg.core.errors import ConfigError, UnknownNameError

RECIPES = Path(__file__).resolve().parents[2] / "recipes"

BASE = {
    "datasets": [{"name": "tiny", "synth": {"cases": 10, "size": 16}}],
    "methods": [{"name": "softmax"}, {"name": "mc-dropout", "params": {"p": 0.2}}, {"name": "ensemble", "epochs": 3}],
    "seeds": [0, 1],
    "train": {"epochs": 2},
}


def test_yaml_round_trip_and_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "datasets: [{name: a, data: some/dir}]\nmethods: [{name: softmax}, {name: tta}]\nseeds: [3]\n"
        "train: {epochs: 4}\nbudget_minutes: 2.5\n"
    )
    cfg = load_compare_config(path)
    assert cfg.datasets == (DatasetSpec("a", "some/dir"),)
    assert [m.key for m in cfg.methods] == ["softmax", "tta"]
    assert cfg.seeds == (3,) and cfg.samples == 16 and cfg.baseline == "softmax" and cfg.folds == 1
    assert cfg.bootstrap.resamples == 2000


@pytest.mark.parametrize(
    "change, match",
    [
        ({"sedes": [0]}, "did you mean 'seeds'"),
        ({"methods": [{"name": "mc-dropuot"}]}, "did you mean 'mc-dropout'"),
        ({"baseline": "tta"}, "baseline 'tta' is not one of the methods"),
        ({"seeds": [0, 0]}, "seeds must be distinct"),
        ({"folds": 0}, "folds must be"),
        ({"budget_minutes": 0}, "budget_minutes must be > 0"),
        ({"datasets": [{"name": "x"}]}, "exactly one of"),
        ({"datasets": [{"name": "a/b", "data": "d"}]}, "plain name"),
        ({"methods": [{"name": "softmax"}, {"name": "softmax"}]}, "names repeat"),
        ({"train": {"epoch": 3}}, "did you mean 'epochs'"),
    ],
)
def test_bad_configs_get_one_clear_error(change, match):
    with pytest.raises((ConfigError, UnknownNameError), match=match):
        compare_config_from_dict({**BASE, **change})


def test_cli_overrides():
    cfg = with_overrides(
        BASE, data="/x/my data", methods=["mc-dropout", "tta"], seeds=[5], folds=3, budget_minutes=1.5,
        sets={"train.epochs": 7},
    )  # fmt: skip
    assert cfg.datasets == (DatasetSpec("my_data", "/x/my data"),)
    assert cfg.methods == (MethodSpec("mc-dropout", {"p": 0.2}), MethodSpec("tta"))  # base params kept
    assert cfg.baseline == "mc-dropout"  # softmax was dropped: the first method is the baseline
    assert (cfg.seeds, cfg.folds, cfg.budget_minutes, cfg.train.epochs) == ((5,), 3, 1.5, 7)


def test_run_config_of_a_job_shares_everything_but_method_seed_fold():
    cfg = with_overrides(BASE, budget_minutes=2.0)
    rc = run_config(cfg, cfg.method("mc-dropout"), "d", seed=1, fold=None)
    assert rc.method.params == {"p": 0.2, "samples": 16}  # the fixed sample count of GED / Hungarian IoU
    assert (rc.train.seed, rc.train.epochs, rc.train.max_minutes, rc.net) == (1, 2, 2.0, cfg.net)
    assert run_config(cfg, cfg.method("ensemble"), "d", 0, 2).train.epochs == 3  # per-method epochs
    assert run_config(cfg, cfg.method("ensemble"), "d", 0, 2).train.fold == 2
    assert run_config(cfg, cfg.method("softmax"), "d", 0, None).method.params == {}  # no samples parameter


def test_plan_and_job_hash(tmp_path):
    cfg = compare_config_from_dict({**BASE, "folds": 2})
    jobs = plan_jobs(cfg, tmp_path)
    assert len(jobs) == 1 * 2 * 2 * 3 and [j.index for j in jobs] == list(range(12))
    assert jobs[0].folder == tmp_path / "jobs" / "tiny" / "softmax" / "seed0" / "fold0"
    assert jobs[0].name == "tiny/softmax/seed0/fold0" and jobs[0].data == str(tmp_path / "data" / "tiny")
    # adding a method keeps the other jobs' hashes; changing the training changes them
    more = compare_config_from_dict({**BASE, "folds": 2, "methods": [*BASE["methods"], {"name": "tta"}]})
    assert job_hash(cfg, jobs[0]) == job_hash(more, plan_jobs(more, tmp_path)[0])
    other = compare_config_from_dict({**BASE, "folds": 2, "train": {"epochs": 9}})
    assert job_hash(cfg, jobs[0]) != job_hash(other, plan_jobs(other, tmp_path)[0])


@pytest.mark.parametrize("name", sorted(p.stem for p in RECIPES.glob("*.yaml")))
def test_every_recipe_parses(name):
    cfg = load_compare_config(RECIPES / f"{name}.yaml")
    # issue 13's protocol: every method and both EDUE variants, CIs against the deep ensemble
    labels = {m.key for m in cfg.methods}
    assert isinstance(cfg, CompareConfig) and cfg.baseline == "ensemble"
    assert {"softmax", "mc-dropout", "ensemble", "evidential", "edue", "edue-heads", "layer-ensemble"} <= labels
    if name.startswith("qubiq"):
        assert cfg.folds == 5
    if name.startswith("lidc"):
        assert cfg.samples == 16 and cfg.datasets[0].data
    if name == "synthetic2d":  # image-level correlations need disagreement that varies from image to image
        assert cfg.datasets[0].synth is not None and cfg.datasets[0].synth.disagreement_spread > 0


def test_demo_preset_is_a_valid_config():
    cfg = with_overrides(preset("demo", seed=2), sets={"train.epochs": 1})
    assert cfg.seeds == (2,) and cfg.train.epochs == 1 and cfg.datasets[0].synth is not None
    with pytest.raises(UnknownNameError, match="did you mean 'demo'"):
        preset("dmeo")


def test_cli_errors_are_one_line_with_exit_2(tmp_path, capsys):
    rc = main(["compare", "--data", str(tmp_path), "--methods", "softmax,mc-droput", "--out", str(tmp_path / "o")])
    assert rc == 2 and "did you mean 'mc-dropout'" in capsys.readouterr().err
    rc = main(["compare", "--preset", "demo", "--seeds", "a,b", "--out", str(tmp_path / "o")])
    assert rc == 2 and "--seeds a,b" in capsys.readouterr().err
    rc = main(["compare", "--preset", "demo", "--set", "trian.epochs=1", "--out", str(tmp_path / "o")])
    assert rc == 2 and "did you mean 'train'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing written before the config is valid
