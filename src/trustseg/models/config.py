"""Network configuration ``{name, params}`` (the run config's ``net`` section), like the method's.

``name`` is a registered model (:data:`~trustseg.models.registry.MODELS`); ``params`` is checked against that
model's frozen parameter dataclass (unknown keys get a "did you mean" :class:`~trustseg.core.errors.ConfigError`)
and stored complete, defaults included, so a saved ``config.yaml`` records the whole network.

Configs and run folders written before networks had a name and parameters used flat U-Net keys
(``net: {channels: [16, 32], norm: batch}``); :meth:`NetConfig.upgrade_mapping` (the one place of that migration,
applied by :func:`trustseg.core.config.from_dict` before the keys are checked) reads every key other than
``name`` and ``params`` as a parameter of the model (``unet`` unless ``name`` says otherwise).

Example:
    >>> NetConfig.upgrade_mapping({"channels": [8, 16], "norm": "batch"})
    {'name': 'unet', 'params': {'channels': [8, 16], 'norm': 'batch'}}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trustseg.core.config import from_dict
from trustseg.models.registry import MODELS


def network_params(name: str, params: Mapping[str, Any] | None = None) -> Any:
    """The parameter dataclass of model ``name`` built from ``params`` (checked, "did you mean" on unknown keys).

    Raises:
        UnknownNameError: ``name`` is not a registered model.
        ConfigError: an unknown parameter or a bad value (named ``net.params.<key>``).
    """
    cls = MODELS.meta(name)["params"]
    return from_dict(cls, dict(params or {}), where="net.params")


@dataclass(frozen=True)
class NetConfig:
    """Which network (``trustseg.models.MODELS``) and its parameters.

    Attributes:
        name: Registered model name (``unet``).
        params: The model's parameters, checked against its params dataclass (for ``unet``:
            :class:`~trustseg.models.unet.UNetParams`); stored complete after the check.
    """

    name: str = "unet"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", dataclasses.asdict(network_params(self.name, self.params)))

    @property
    def typed_params(self) -> Any:
        """``params`` as the model's frozen parameter dataclass."""
        return network_params(self.name, self.params)

    def with_params(self, **changes: Any) -> NetConfig:
        """The same network with some parameters changed (checked again)."""
        return NetConfig(self.name, {**self.params, **changes})

    @classmethod
    def upgrade_mapping(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        """Read a ``net`` mapping of an older version: flat keys become ``params`` (flat keys win on a clash)."""
        data = dict(data)
        flat = {k: v for k, v in data.items() if k not in ("name", "params")}
        if not flat:
            return data
        return {"name": data.get("name", "unet"), "params": {**dict(data.get("params") or {}), **flat}}
