"""What a plain PyTorch model needs to be a predictor, and loading it: the location of the ``torchscript:`` and
``state_dict:`` schemes.

A location is ``PATH[?key=value&key=value...]``. The keys (:class:`ModuleSpec`) say what the model takes and
predicts, since a bare module does not: ``classes`` (comma-separated names, background first, or a number K),
``in_channels``, ``spatial_dims``, ``multiple`` (inputs are zero-padded to a multiple of it and cropped back),
``normalize`` (``none``: intensities as stored; ``zscore``: each channel of each image to mean 0, std 1) and,
for ``state_dict:``, ``factory`` (``pkg.module:function``, called without arguments, returning the
``nn.Module`` the weights belong to). The same keys can sit in a JSON file beside the model, ``PATH`` with the
suffix ``.json`` (``model.pt`` -> ``model.json``); keys of the location win.

Loading: TorchScript files with :func:`torch.jit.load` (a TorchScript file is a program, not a pickle: it runs
only TorchScript operations, but load only models you trust); state dicts with ``torch.load(...,
weights_only=True)`` (tensors only, no code), either the state dict itself or a mapping with ``model`` or
``state_dict``.

Example:
    >>> spec = parse_location("model.pt?classes=background,tumour&spatial_dims=3&multiple=16", "torchscript")
    >>> spec.path, spec.classes, spec.spatial_dims, spec.multiple
    ('model.pt', ('background', 'tumour'), 3, 16)
    >>> parse_location("model.pt?classes=3", "torchscript").classes
    ('class_0', 'class_1', 'class_2')
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch import nn

from trustseg.core.config import from_dict
from trustseg.core.errors import ConfigError, DataError


@dataclass(frozen=True)
class ModuleSpec:
    """A plain module as a predictor sees it.

    Attributes:
        path: The model file.
        classes: Class names, background first (``K = len(classes)``); the module's output has K channels.
        in_channels: Image channels C the module takes.
        spatial_dims: 2 or 3.
        multiple: Spatial sizes the module needs are multiples of it (inputs are zero-padded, outputs cropped).
        normalize: ``none`` or ``zscore`` (per image and channel).
        factory: ``pkg.module:function`` building the module of a state dict (``state_dict:`` only).
    """

    path: str
    classes: tuple[str, ...] = ()
    in_channels: int = 1
    spatial_dims: int = 2
    multiple: int = 1
    normalize: Literal["none", "zscore"] = "none"
    factory: str | None = None

    def __post_init__(self) -> None:
        where = f"model {self.path}"
        if len(self.classes) < 2:
            raise ConfigError(
                f"{where}: say what the model predicts, e.g. {self.path}?classes=background,tumour (or classes=K), "
                f'or put {{"classes": [...]}} in {sidecar(self.path)}'
            )
        if self.spatial_dims not in (2, 3):
            raise ConfigError(f"{where}: spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if self.in_channels < 1 or self.multiple < 1:
            raise ConfigError(f"{where}: in_channels and multiple must be >= 1")
        if self.normalize not in ("none", "zscore"):
            raise ConfigError(f"{where}: normalize must be none or zscore, got {self.normalize!r}")


def sidecar(path: str | Path) -> Path:
    """The JSON file of a model's keys: ``model.pt`` -> ``model.json``."""
    return Path(path).with_suffix(".json")


def _value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_location(location: str, scheme: str) -> ModuleSpec:
    """``PATH[?key=value&...]`` (plus the JSON file beside ``PATH``) -> a checked :class:`ModuleSpec`.

    Raises:
        ConfigError: an unknown key ("did you mean"), a bad value, or no ``classes``.
    """
    path, _, query = location.partition("?")
    if not path:
        raise ConfigError(f"{scheme}: give the model file, e.g. {scheme}:model.pt")
    data: dict[str, Any] = {}
    side = sidecar(path)
    if side.is_file():
        try:
            loaded = json.loads(side.read_text())
        except (OSError, ValueError) as e:
            raise ConfigError(f"{side}: not a readable JSON file ({e})") from None
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{side}: must hold a JSON object of model keys")
        data.update(loaded)
    for item in filter(None, query.split("&")):
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"{scheme}:{location}: {item!r} is not key=value")
        data[key] = value if key in ("classes", "factory", "normalize") else _value(value)
    classes = data.get("classes", ())
    if isinstance(classes, str):
        classes = [c.strip() for c in classes.split(",") if c.strip()]
        if len(classes) == 1 and classes[0].isdigit():
            classes = int(classes[0])
    if isinstance(classes, int) and not isinstance(classes, bool):
        classes = [f"class_{k}" for k in range(classes)]
    data["classes"] = tuple(str(c) for c in classes)
    return from_dict(ModuleSpec, {**data, "path": path}, where=f"{scheme}:{path}")


def load_torchscript(spec: ModuleSpec, device: torch.device) -> nn.Module:
    """The TorchScript module of ``spec.path`` on ``device``, in eval mode.

    Raises:
        DataError: a missing file or one that is not a TorchScript archive.
    """
    path = Path(spec.path)
    if not path.is_file():
        raise DataError("model file not found", path)
    try:
        module = torch.jit.load(str(path), map_location=device)
    except Exception as e:  # noqa: BLE001 - TorchScript's errors vary
        raise DataError(f"not a TorchScript file ({type(e).__name__}: {str(e).splitlines()[0][:200]})", path) from None
    return module.eval()


def import_factory(text: str) -> Any:
    """The function named ``pkg.module:function``.

    Raises:
        ConfigError: a malformed name, a module that cannot be imported or a missing function.
    """
    mod_name, sep, fn_name = text.partition(":")
    if not sep or not mod_name or not fn_name:
        raise ConfigError(f"factory must be pkg.module:function, got {text!r}")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"factory {text!r}: cannot import {mod_name!r} ({e})") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"factory {text!r}: {mod_name!r} has no function {fn_name!r}")
    return fn


def load_weights(module: nn.Module, path: Path, what: str) -> nn.Module:
    """Load the state dict of ``path`` (``torch.load(..., weights_only=True)``: tensors only, no code; the state
    dict itself or a mapping with ``model`` or ``state_dict``) into ``module``; returns ``module``.

    Args:
        module: The module the weights belong to.
        path: The weights file.
        what: The module as the error names it (``the module pkg.mod:make builds``).

    Raises:
        DataError: an unreadable file, one that holds no state dict, or weights that do not fit ``module``.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickle/zip errors vary
        raise DataError(f"not a readable weights file ({type(e).__name__}: {e})", path) from None
    if isinstance(state, Mapping):
        state = state.get("model", state.get("state_dict", state))
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError("not a state dict (a mapping of names to tensors, or one under 'model'/'state_dict')", path)
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        first = (str(e).splitlines()[1:2] or [str(e)])[0].strip()[:200]
        raise DataError(f"the weights do not fit {what} ({first})", path) from None
    return module


def load_state_dict_module(spec: ModuleSpec, device: torch.device) -> nn.Module:
    """The module ``spec.factory()`` with the weights of ``spec.path`` (:func:`load_weights`), eval mode.

    Raises:
        ConfigError: no factory, or the factory does not return an ``nn.Module``.
        DataError: a missing or unreadable weights file, or weights that do not fit the module.
    """
    if not spec.factory:
        raise ConfigError(f"state_dict:{spec.path} needs the module's factory: ?factory=pkg.module:function")
    path = Path(spec.path)
    if not path.is_file():
        raise DataError("weights file not found", path)
    module = import_factory(spec.factory)()
    if not isinstance(module, nn.Module):
        raise ConfigError(f"factory {spec.factory!r} returned {type(module).__name__}, not a torch.nn.Module")
    return load_weights(module, path, f"the module {spec.factory} builds").to(device).eval()
