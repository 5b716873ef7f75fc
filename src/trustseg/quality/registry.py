"""The registry of quality predictors (``trustseg qc fit --predictor NAME``).

Each entry is a class registered with :func:`register_qc_predictor` and the metadata

* ``input``: ``"features"`` (a table of per-case features, :mod:`trustseg.quality.features`) or ``"image"``
  (image + segmentation + uncertainty maps as channels, :mod:`trustseg.quality.cnn`);
* ``file``: the file name it saves itself to inside a QC model folder (JSON or a ``weights_only`` checkpoint:
  no pickle).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from trustseg.core.errors import ConfigError
from trustseg.core.registry import Registry

T = TypeVar("T")

#: name -> predictor class; metadata ``input`` ("features" | "image") and ``file``.
QC_PREDICTORS: Registry = Registry("quality predictor")

INPUTS = ("features", "image")


def register_qc_predictor(name: str, *, input: str, file: str, doc: str | None = None) -> Callable[[T], T]:
    """Class decorator registering a quality predictor (see the module docstring for the metadata)."""
    if input not in INPUTS:
        raise ConfigError(f"quality predictor {name!r}: input must be one of {INPUTS}, got {input!r}")
    meta: dict[str, Any] = {"input": input, "file": file}
    return QC_PREDICTORS.register(name, doc=doc, **meta)
