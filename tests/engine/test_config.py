"""Run configuration: defaults, round trip through YAML/TOML, unknown keys and bad values."""

from __future__ import annotations

import pytest

from trustseg.core.errors import ConfigError
from trustseg.engine.config import MethodConfig, RunConfig, TrainConfig, load_run_config, save_run_config
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
