"""Run configuration: defaults, round trip through YAML/TOML, unknown keys and bad values."""

from __future__ import annotations

import math

import pytest

from trustseg.cli.main import main
from trustseg.core.config import replace as config_replace
from trustseg.core.errors import ConfigError
from trustseg.data.augmentation import AugmentConfig
from trustseg.data.normalization import NormConfig
from trustseg.engine.config import (
    MethodConfig,
    RunConfig,
    TrainConfig,
    check_same_config,
    load_run_config,
    load_saved_run_config,
    save_run_config,
)
from trustseg.models.config import NetConfig


def test_defaults():
    cfg = RunConfig()
    assert cfg.train.epochs == 20 and cfg.train.batch_size == 8 and cfg.train.lr == pytest.approx(2e-3)
    assert cfg.train.patch_size is None and cfg.train.amp == "auto" and cfg.train.grad_clip == 1.0
    assert cfg.method == MethodConfig("softmax", {}) and cfg.net == NetConfig()


def test_yaml_round_trip(tmp_path):
    cfg = RunConfig(
        data="some/data",
        net=NetConfig(params={"channels": (8, 16, 32), "dropout": 0.2}),
        method=MethodConfig("ensemble", {"members": 3}),
        train=TrainConfig(epochs=3, patch_size=(32, 32, 16), fold=2, amp="off", grad_clip=None, max_train_cases=5),
    )
    path = save_run_config(cfg, tmp_path / "config.yaml")
    back = load_run_config(path)
    assert back == cfg
    assert isinstance(back.train.patch_size, tuple) and isinstance(back.net.params["channels"], tuple)


def test_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('data = "d"\n[train]\nepochs = 4\npatch_size = [8, 8, 8]\n[method]\nname = "mc-dropout"\n')
    cfg = load_run_config(path)
    assert cfg.train.epochs == 4 and cfg.train.patch_size == (8, 8, 8) and cfg.method.name == "mc-dropout"
    assert cfg.train.batch_size == 8  # untouched fields keep their defaults


def test_unknown_key_did_you_mean(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="did you mean 'epochs'") as e:
        load_run_config(path)
    assert str(path) in str(e.value)


def test_bad_literal_and_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  amp: of\n")
    with pytest.raises(ConfigError, match="did you mean 'off'"):
        load_run_config(path)
    for bad in ({"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"val_every": 0}, {"patch_size": (0, 4)}):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("lr", math.inf),
        ("lr", math.nan),
        ("lr", -1e-3),
        ("weight_decay", -1.0),
        ("weight_decay", math.inf),
        ("grad_clip", math.nan),
        ("grad_clip", 0.0),
        ("epochs", 0),
        ("batch_size", 0),
        ("val_every", 0),
        ("seed", -1),
        ("seed", 2**63),
        ("seed", 1.5),
        ("fold", -1),
        ("max_train_cases", 0),
    ],
)
def test_non_finite_and_out_of_range_values_are_refused_naming_the_option(option, value):
    with pytest.raises(ConfigError, match=f"train.{option} must be"):
        TrainConfig(**{option: value})


def test_boundary_values_are_accepted():
    cfg = TrainConfig(weight_decay=0.0, grad_clip=None, seed=0, fold=0, lr=1e-8)
    assert cfg.weight_decay == 0.0 and cfg.grad_clip is None and cfg.fold == 0


@pytest.mark.parametrize("setting", ["train.lr=.inf", "train.lr=.nan", "train.weight_decay=-1"])
def test_cli_train_refuses_bad_values_with_one_line_before_any_work(tmp_path, capsys, setting):
    out = tmp_path / "run"
    rc = main(["train", "--data", str(tmp_path / "nowhere"), "--out", str(out), "--set", setting])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and setting.split("=")[0] in err and len(err.splitlines()) == 1
    assert not out.exists()


# ------------------------------------------------------------------------ normalisation and augmentation options
def test_normalization_and_augment_defaults_and_round_trip(tmp_path):
    cfg = RunConfig()
    assert cfg.normalization == NormConfig("zscore") and cfg.train.augment == AugmentConfig(enabled=True)
    cfg = RunConfig(
        data="d",
        normalization=NormConfig("ct", percentiles=(1.0, 99.0), reservoir=5000),
        train=TrainConfig(augment=AugmentConfig(flip_axes=(0,), plane=(1, 2), elastic_prob=0.3)),
    )
    path = save_run_config(cfg, tmp_path / "config.yaml")
    assert load_run_config(path) == cfg
    assert load_saved_run_config(path) == cfg  # a config written today holds every option
    text = path.read_text()
    assert "normalization:" in text and "augment:" in text


def test_normalization_and_augment_did_you_mean(tmp_path):
    for text, hint in [
        ("normalization:\n  schem: ct\n", "did you mean 'scheme'"),
        ("normalization:\n  scheme: zscor\n", "did you mean 'zscore'"),
        ("train:\n  augment:\n    flip_prop: 0.3\n", "did you mean 'flip_prob'"),
        ("train:\n  augment:\n    padding_mode: border2\n", "did you mean 'border'"),
    ]:
        path = tmp_path / "c.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=hint):
            load_run_config(path)
    path.write_text("train:\n  augment:\n    flip_prob: 2.0\n")
    with pytest.raises(ConfigError, match="flip_prob"):
        load_run_config(path)


OLD_CONFIG = """data: runs/synth
net: {channels: [8, 16], dropout: 0.0}
method: {name: softmax, params: {}}
train: {epochs: 2, batch_size: 2, seed: 0}
"""


def test_a_run_folder_written_before_normalisation_reads_as_trained(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(OLD_CONFIG)
    user = load_run_config(path)  # a user's config file: missing options take today's defaults
    assert user.normalization.scheme == "zscore" and user.train.augment.enabled
    saved = load_saved_run_config(path)  # the run's own config: it was trained raw, without augmentation
    assert saved.normalization == NormConfig("none") and saved.train.augment == AugmentConfig(enabled=False)
    assert saved.train.epochs == 2 and tuple(saved.net.params["channels"]) == (8, 16)
    # resuming it with today's defaults is refused, naming both options
    with pytest.raises(ConfigError, match="normalization.scheme: 'none' -> 'zscore'.*train.augment.enabled"):
        check_same_config(saved, user, path)
    # ... and accepted with the settings it was trained with
    old_way = config_replace(user, **{"normalization.scheme": "none", "train.augment.enabled": False})
    check_same_config(saved, old_way, path)
    # an empty train section, or none at all
    path.write_text("data: d\ntrain:\n")
    assert not load_saved_run_config(path).train.augment.enabled
    path.write_text("data: d\n")
    assert load_saved_run_config(path).normalization.scheme == "none"
    path.write_text("data: d\ntrain: 3\n")
    with pytest.raises(ConfigError, match="config.yaml"):
        load_saved_run_config(path)
