from dataclasses import dataclass, field
from typing import Literal

import pytest

from trustseg.core.config import from_dict, load_config, replace, save_config, to_dict
from trustseg.core.errors import ConfigError


@dataclass(frozen=True)
class Inner:
    width: int = 8
    norm: Literal["instance", "batch"] = "instance"
    channels: tuple[int, ...] = (4, 8)


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    lr: float = 1e-3
    patch: tuple[int, ...] | None = None
    inner: Inner = field(default_factory=Inner)
    params: dict = field(default_factory=dict)


def test_round_trip_yaml_and_toml(tmp_path):
    cfg = Outer(name="run", lr=0.01, patch=(32, 32), inner=Inner(width=3, norm="batch"), params={"a": 1})
    p = save_config(cfg, tmp_path / "c.yaml")
    assert load_config(Outer, p) == cfg
    (tmp_path / "c.toml").write_text('name = "t"\nlr = 2\n[inner]\nchannels = [1, 2, 3]\n')
    got = load_config(Outer, tmp_path / "c.toml")
    assert got.lr == 2.0 and isinstance(got.lr, float) and got.inner.channels == (1, 2, 3)


def test_unknown_key_did_you_mean(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'width'"):
        from_dict(Outer, {"inner": {"widht": 3}})
    (tmp_path / "bad.yaml").write_text("lrr: 1\n")
    with pytest.raises(ConfigError, match="bad.yaml.*unknown option 'lrr'.*did you mean 'lr'"):
        load_config(Outer, tmp_path / "bad.yaml")


def test_type_errors():
    with pytest.raises(ConfigError, match="inner.norm"):
        from_dict(Outer, {"inner": {"norm": "group"}})
    with pytest.raises(ConfigError, match="expected an integer"):
        from_dict(Outer, {"inner": {"width": 2.5}})
    with pytest.raises(ConfigError, match="expected float"):
        from_dict(Outer, {"lr": "fast"})


def test_replace_dotted_and_frozen():
    cfg = Outer()
    new = replace(cfg, **{"inner.width": 16, "lr": 0.5})
    assert new.inner.width == 16 and new.lr == 0.5 and cfg.inner.width == 8
    assert to_dict(new)["inner"]["channels"] == [4, 8]
    with pytest.raises(AttributeError):
        new.lr = 1.0  # frozen


def test_invalid_file(tmp_path):
    (tmp_path / "x.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Outer, tmp_path / "x.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(Outer, tmp_path / "missing.yaml")
