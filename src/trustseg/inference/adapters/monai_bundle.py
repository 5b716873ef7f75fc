"""A MONAI bundle as a predictor: scheme ``bundle:FOLDER`` (the same seam as ``torchscript:``/``state_dict:``, so
MC dropout, test-time flips, sliding windows and temperature scaling apply).

A bundle folder (MONAI's bundle specification)::

    FOLDER/configs/metadata.json     "network_data_format": inputs.image (num_channels, spatial_shape such as
                                     ["16*n", "16*n"]), outputs.pred (num_channels, channel_def {"0": name, ...})
    FOLDER/configs/inference.json    (or .yaml) with "network_def": the network, as MONAI's config syntax
    FOLDER/models/model.pt           its weights (a state dict, read with ``weights_only=True``), or
    FOLDER/models/model.ts           a TorchScript export (used when there is no model.pt)

The network is built by :class:`monai.bundle.ConfigParser` from ``network_def``: a bundle's config names Python
classes to instantiate (``"_target_"``), so load only bundles you trust, as any model code. What the predictor
needs is read from ``metadata.json``: the classes (``channel_def``, else ``class_0 ..``), the input channels, the
spatial dimensions (the length of ``spatial_shape``) and the size multiple (the ``k`` of ``"k*n"``); location keys
override them (``bundle:FOLDER?classes=background,spleen&multiple=32``, the keys of
:mod:`~trustseg.inference.adapters.module_spec`).

Example:
    >>> size_multiple(["32*n", "32*n", "16*n"]), size_multiple([96, 96])
    (32, 1)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trustseg.core.errors import DataError
from trustseg.inference.adapters.module_spec import ModuleSpec, load_torchscript, load_weights, parse_location
from trustseg.inference.adapters.torch_module import (
    MODULE_CAPABILITIES,
    MODULE_OPTIONS,
    TorchModulePredictor,
    check_module_options,
)
from trustseg.inference.device import resolve_device
from trustseg.inference.predictor import PREDICTORS

_MULTIPLE = re.compile(r"^\s*(\d+)\s*\*\s*n\s*$")


def size_multiple(spatial_shape: Sequence[Any]) -> int:
    """The size multiple of a bundle's ``spatial_shape`` entries: the least common multiple of the ``k`` of every
    ``"k*n"`` (a fixed size such as ``96`` asks for no multiple: 1)."""
    ks = [int(m.group(1)) for s in spatial_shape if isinstance(s, str) and (m := _MULTIPLE.match(s))]
    return math.lcm(*ks) if ks else 1


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"not a readable JSON file ({e})", path) from None
    if not isinstance(data, Mapping):
        raise DataError("must hold a JSON object", path)
    return dict(data)


def bundle_keys(folder: Path) -> dict[str, Any]:
    """The module keys (:class:`~trustseg.inference.adapters.module_spec.ModuleSpec`) a bundle's
    ``configs/metadata.json`` gives: classes, in_channels, spatial_dims, multiple.

    Raises:
        DataError: no ``metadata.json``, or one without ``network_data_format`` inputs/outputs (naming it).
    """
    path = folder / "configs" / "metadata.json"
    if not path.is_file():
        raise DataError("not a MONAI bundle (no configs/metadata.json)", folder)
    fmt = _read_json(path).get("network_data_format")
    try:
        image = fmt["inputs"]["image"]  # type: ignore[index]
        pred = fmt["outputs"]["pred"]  # type: ignore[index]
        shape = list(image.get("spatial_shape") or [])
        k = int(pred["num_channels"])
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"network_data_format lacks inputs.image / outputs.pred.num_channels ({e})", path) from None
    names = pred.get("channel_def") or {}
    classes = [str(names.get(str(i), f"class_{i}")) for i in range(k)]
    keys: dict[str, Any] = {"classes": classes, "in_channels": int(image.get("num_channels", 1))}
    if len(shape) in (2, 3):
        keys["spatial_dims"] = len(shape)
    keys["multiple"] = size_multiple(shape)
    return keys


def load_bundle_network(folder: Path, device: torch.device, spec: ModuleSpec) -> nn.Module:
    """The bundle's network with its weights, on ``device``, in eval mode.

    Raises:
        DataError: no inference config or weights, a config whose ``network_def`` MONAI cannot build, or weights
            that do not fit it.
    """
    models = folder / "models"
    weights, script = models / "model.pt", models / "model.ts"
    if not weights.is_file() and script.is_file():
        return load_torchscript(ModuleSpec(**{**spec.__dict__, "path": str(script)}), device)
    if not weights.is_file():
        raise DataError("a MONAI bundle needs models/model.pt (weights) or models/model.ts (TorchScript)", folder)
    config = next((folder / "configs" / f"inference{e}" for e in (".json", ".yaml", ".yml")
                   if (folder / "configs" / f"inference{e}").is_file()), None)  # fmt: skip
    if config is None:
        raise DataError("a MONAI bundle with weights needs configs/inference.json (its network_def)", folder)
    from monai.bundle import ConfigParser  # MONAI is a dependency; the bundle module is heavy to import

    try:
        parser = ConfigParser()
        parser.read_config(str(config))
        network = parser.get_parsed_content("network_def", instantiate=True)
    except Exception as e:  # noqa: BLE001 - any error of MONAI's config machinery
        raise DataError(f"MONAI cannot build network_def ({type(e).__name__}: {str(e)[:200]})", config) from None
    if not isinstance(network, nn.Module):
        raise DataError(f"network_def builds a {type(network).__name__}, not a torch.nn.Module", config)
    return load_weights(network, weights, "the bundle's network_def").to(device).eval()


@PREDICTORS.register(
    "bundle",
    doc="a MONAI bundle folder (configs/metadata.json, inference.json, models/model.pt|ts); --tta, --mc-dropout",
    options=MODULE_OPTIONS,
    capabilities=MODULE_CAPABILITIES,
)
def _bundle(location: str, device: str | torch.device = "auto", **options: Any) -> TorchModulePredictor:
    folder_text, _, query = location.partition("?")
    folder = Path(folder_text)
    if not folder.is_dir():
        raise DataError("no such MONAI bundle folder", folder)
    keys = bundle_keys(folder)
    from_metadata = "&".join(f"{k}={','.join(v) if k == 'classes' else v}" for k, v in keys.items())
    spec = parse_location(f"{folder_text}?{from_metadata}&{query}", "bundle")  # the location's keys win
    dev = resolve_device(device, "predict device")
    network = load_bundle_network(folder, dev, spec)
    return TorchModulePredictor(network, spec, dev, scheme="bundle", **check_module_options(options, "bundle"))


__all__ = ["bundle_keys", "load_bundle_network", "size_multiple"]
