"""Device choice shared by training and inference."""

from __future__ import annotations

import os

import torch

from trustseg.core.errors import ConfigError


def resolve_device(spec: str | torch.device, what: str = "device") -> torch.device:
    """``auto`` -> CUDA when available (the local rank's device under torchrun), else CPU; else ``spec``.

    Args:
        spec: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or a :class:`torch.device`.
        what: The option's name, for the error message (e.g. ``train.device``).

    Raises:
        ConfigError: an unknown device, or CUDA asked for where it is not available.
    """
    if isinstance(spec, torch.device):
        return spec
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"{what}: unknown device {spec!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{what} is {spec!r} but CUDA is not available")
    return dev


def use_amp(amp: str, device: torch.device) -> bool:
    """Mixed precision only on CUDA, unless switched off."""
    return device.type == "cuda" and amp != "off"
