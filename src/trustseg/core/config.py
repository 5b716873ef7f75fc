"""Frozen dataclass configs read from YAML or TOML and written next to every run's outputs.

A config is any (nested) frozen dataclass. :func:`from_dict` checks every key (unknown keys get a
"did you mean" error) and converts lists to tuples so configs stay hashable; :func:`load_config` reads a
``.yaml``/``.yml``/``.toml``/``.json`` file; :func:`save_config` writes YAML atomically.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from trustseg.core.atomic import atomic_write_text
from trustseg.core.errors import ConfigError

C = TypeVar("C")


def to_dict(cfg: Any) -> Any:
    """A config as plain dicts/lists (tuples become lists), ready for YAML/JSON."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is object:
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}{hint}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = [value]
        if origin is tuple and len(args) > 1 and args[1] is not Ellipsis:  # tuple[X, Y]: a fixed length
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {list(value)!r}")
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        return tuple(_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != out:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return out
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is Path:
        return Path(value)
    return value


def from_dict(cls: type[C], data: dict[str, Any], where: str = "") -> C:
    """Build the dataclass ``cls`` from a mapping, checking every key and converting types.

    A class with a classmethod ``upgrade_mapping(data) -> data`` gets mappings written by older versions
    rewritten by it before the keys are checked.

    Raises:
        ConfigError: on an unknown key (with a "did you mean"), or a value of the wrong type.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a dataclass")
    upgrade = getattr(cls, "upgrade_mapping", None)
    if upgrade is not None:
        data = upgrade(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in (data or {}).items():
        key = str(key).replace("-", "_")
        name = f"{where}.{key}" if where else key
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown option {name!r}{hint} Known: {', '.join(fields)}")
        kwargs[key] = _convert(value, hints[key], name)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def replace(cfg: C, **changes: Any) -> C:
    """Like :func:`dataclasses.replace`, with dotted keys for nested fields (``train.epochs=3``)."""
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for k, v in changes.items():
        head, _, rest = k.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = v
        else:
            flat[k] = v
    fields = {f.name for f in dataclasses.fields(cfg)} if dataclasses.is_dataclass(cfg) else set()
    for head, sub in nested.items():
        if head not in fields or not dataclasses.is_dataclass(getattr(cfg, head)):
            close = difflib.get_close_matches(head, sorted(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown config section {head!r} in {head}.{next(iter(sub))}{hint} Known: {sorted(fields)}"
            )
        flat[head] = replace(getattr(cfg, head), **sub)
    data = to_dict(cfg)
    for k, v in flat.items():
        data[k] = to_dict(v) if dataclasses.is_dataclass(v) else v
    return from_dict(type(cfg), data)


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML, TOML or JSON file into a dict (an empty file gives ``{}``)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file (byte {e.start} is not UTF-8)") from None
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except Exception as e:  # noqa: BLE001 - parser errors vary
        raise ConfigError(f"{path}: not a valid {path.suffix.lstrip('.') or 'YAML'} file: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def load_config(cls: type[C], path: str | Path) -> C:
    """Read ``path`` (YAML/TOML/JSON) into the frozen dataclass ``cls``."""
    try:
        return from_dict(cls, read_mapping(path))
    except ConfigError as e:
        if str(path) in str(e):
            raise
        raise ConfigError(f"{path}: {e}") from None


def save_config(cfg: Any, path: str | Path) -> Path:
    """Write ``cfg`` as YAML (or TOML-free JSON for ``.json``) atomically; returns the path."""
    path = Path(path)
    data = to_dict(cfg)
    text = json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
    atomic_write_text(path, text)
    return path
