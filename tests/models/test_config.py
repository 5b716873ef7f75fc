"""NetConfig ``{name, params}``: checked complete params, did-you-mean errors, and the migration of old flat keys."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from trustseg.core.config import from_dict, replace, to_dict
from trustseg.core.errors import ConfigError, UnknownNameError
from trustseg.engine.config import RunConfig, load_run_config, save_run_config
from trustseg.models.config import NetConfig, network_params
from trustseg.models.unet import UNetParams


def test_params_are_checked_and_stored_complete():
    net = NetConfig("unet", {"channels": [8, 16], "dropout-where": "last"})
    assert net.params == dataclasses.asdict(UNetParams(channels=(8, 16), dropout_where="last"))
    assert net.params["channels"] == (8, 16)  # lists become tuples, as everywhere in the configs
    assert net.typed_params == UNetParams(channels=(8, 16), dropout_where="last")
    assert NetConfig() == NetConfig("unet", {"channels": (16, 32, 64, 128)})  # defaults are explicit
    assert network_params("unet", {"norm": "batch"}) == UNetParams(norm="batch")


def test_bad_params_and_names():
    with pytest.raises(ConfigError, match=r"unknown option 'net.params.chanels'; did you mean 'channels'\?"):
        NetConfig("unet", {"chanels": [8, 16]})
    with pytest.raises(ConfigError, match="net.params.norm: 'btach' is not one of .*did you mean 'batch'"):
        NetConfig("unet", {"norm": "btach"})
    with pytest.raises(ConfigError, match="net.params.dropout must be in"):
        NetConfig("unet", {"dropout": 1.5})
    with pytest.raises(UnknownNameError, match="did you mean 'unet'"):
        NetConfig("unett")


def test_with_params_changes_and_checks_again():
    net = NetConfig("unet", {"channels": (4, 8)})
    deep = net.with_params(deep_heads=True)
    assert deep.params["deep_heads"] and deep.params["channels"] == (4, 8) and not net.params["deep_heads"]
    with pytest.raises(ConfigError, match="did you mean 'deep_heads'"):
        net.with_params(deep_head=True)


def test_old_flat_keys_are_read_as_unet_params():
    assert NetConfig.upgrade_mapping({"name": "unet", "params": {"norm": "batch"}}) == {
        "name": "unet",
        "params": {"norm": "batch"},
    }
    old = {"name": "unet", "channels": [8, 16, 32], "norm": "group", "dropout": 0.1, "deep_heads": False}
    net = from_dict(NetConfig, old)
    assert net == NetConfig("unet", {"channels": (8, 16, 32), "norm": "group", "dropout": 0.1})
    assert from_dict(NetConfig, {"channels": [4, 8]}) == NetConfig(params={"channels": (4, 8)})
    assert from_dict(NetConfig, to_dict(net)) == net  # today's form reads back unchanged
    # the dotted override of an old flat key (what `--set net.channels=...` did) still sets the parameter
    cfg = replace(RunConfig(), **{"net.channels": [8, 16]})
    assert cfg.net.params["channels"] == (8, 16)


def test_an_old_style_config_yaml_loads(tmp_path):
    # written by an older version: the U-Net's fields directly under `net`
    old = {
        "data": "runs/synth",
        "net": {"name": "unet", "channels": [4, 8], "norm": "batch", "dropout": 0.0, "dropout_where": "decoder"},
        "method": {"name": "mc-dropout", "params": {"samples": 3}},
        "train": {"epochs": 2},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(old))
    cfg = load_run_config(path)
    assert cfg.net == NetConfig("unet", {"channels": (4, 8), "norm": "batch"})
    again = load_run_config(save_run_config(cfg, tmp_path / "new.yaml"))
    assert again == cfg
    assert yaml.safe_load((tmp_path / "new.yaml").read_text())["net"]["params"]["channels"] == [4, 8]
