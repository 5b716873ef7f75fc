"""Run configuration: what to train on, which network, which method, how to train.

A run config is a frozen dataclass tree read from YAML/TOML/JSON with :func:`trustseg.core.config.load_config`
(unknown keys get a "did you mean" :class:`~trustseg.core.errors.ConfigError`) and written as ``config.yaml``
into every run folder, so a run can always be reproduced or resumed from its own folder.

Example ``config.yaml``::

    data: runs/synth
    net: {name: unet, params: {channels: [16, 32, 64], dropout: 0.1}}
    method: {name: mc-dropout, params: {samples: 10}}
    normalization: {scheme: zscore}
    train: {epochs: 20, batch_size: 8, patch_size: [64, 64, 64], augment: {rotate_prob: 0.0}}

Options left out of a file take their defaults (:func:`load_run_config`), except when reading a run folder's own
``config.yaml`` (:func:`load_saved_run_config`): there a missing ``normalization`` or ``train.augment`` means
the run predates them, i.e. it was trained on raw intensities without augmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trustseg.core.config import from_dict, load_config, read_mapping, save_config, to_dict
from trustseg.core.errors import ConfigError
from trustseg.data.augmentation import AugmentConfig
from trustseg.data.normalization import NormConfig
from trustseg.models.config import NetConfig


@dataclass(frozen=True)
class TrainConfig:
    """How a model is optimised.

    Attributes:
        epochs: Passes over the training cases.
        batch_size: Images per optimisation step (the global batch under DDP, shared among the ranks).
        lr: Peak AdamW learning rate; it follows a cosine decay to 0 over all steps.
        weight_decay: AdamW weight decay.
        patch_size: Spatial size of random training crops (seeded), e.g. ``[64, 64, 64]``; images smaller than
            the patch are zero-padded (labels padded with background). ``None`` trains on whole images. At
            prediction time, volumes larger than this patch are predicted by sliding window.
        val_every: Validate every this many epochs (the last epoch is always validated).
        seed: Base seed; ensemble member ``m`` uses ``seed + m``.
        amp: Mixed precision: ``auto`` uses it on CUDA only, ``on`` is the same (CPU never uses it), ``off``
            disables it.
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        grad_clip: Maximum gradient norm (``None`` disables clipping).
        fold: Use the dataset's k-fold split ``fold`` (train/val) instead of its fixed train/val split.
        max_train_cases: Train on at most this many training cases (the first ones, in split order).
        augment: Random augmentation of the training crops (``trustseg.data.augmentation``; on by default,
            ``{enabled: false}`` switches it off). Validation is never augmented.
        max_minutes: Training-time budget per member: a member stops after the epoch during which the summed
            epoch times of its history (kept across resumes) reach this many minutes; that epoch is validated.
            ``None`` (default): no budget. The learning-rate schedule still spans ``epochs``.
    """

    epochs: int = 20
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patch_size: tuple[int, ...] | None = None
    val_every: int = 1
    seed: int = 0
    amp: Literal["auto", "on", "off"] = "auto"
    device: str = "auto"
    grad_clip: float | None = 1.0
    fold: int | None = None
    max_train_cases: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_minutes: float | None = None

    def __post_init__(self) -> None:
        _integer("train.epochs", self.epochs, 1)
        _integer("train.batch_size", self.batch_size, 1)
        _number("train.lr", self.lr, 0.0, strict=True)
        if self.lr > MAX_LR:
            raise ConfigError(f"train.lr must be at most {MAX_LR:g}, got {self.lr!r}")
        _number("train.weight_decay", self.weight_decay, 0.0, strict=False)
        _integer("train.val_every", self.val_every, 1)
        _integer("train.seed", self.seed, 0, 2**63 - 1)
        if self.patch_size is not None:
            for p in self.patch_size:
                if isinstance(p, bool) or not isinstance(p, int) or p < 1:
                    raise ConfigError(f"train.patch_size must be positive integers, got {list(self.patch_size)}")
        if self.grad_clip is not None:
            _number("train.grad_clip", self.grad_clip, 0.0, strict=True, nullable=True)
        if self.fold is not None:
            _integer("train.fold", self.fold, 0, nullable=True)
        if self.max_train_cases is not None:
            _integer("train.max_train_cases", self.max_train_cases, 1, nullable=True)
        if self.max_minutes is not None:
            _number("train.max_minutes", self.max_minutes, 0.0, strict=False, nullable=True)


def _integer(name: str, value: Any, low: int, high: int | None = None, nullable: bool = False) -> None:
    """Refuse ``value`` unless it is an int in ``[low, high]``.

    Raises:
        ConfigError: naming the option, the range and the value.
    """
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok:
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{name} must be an integer {rng}{' or null' if nullable else ''}, got {value!r}")


#: The largest learning rate accepted: beyond float32's range (3.4e38) the optimiser cannot even hold it; below it
#: an absurd rate is left to the divergence check of training, which names the epoch and step.
MAX_LR = 1e30


def _number(name: str, value: Any, low: float, strict: bool, nullable: bool = False) -> None:
    """Refuse ``value`` unless it is a finite number ``> low`` (``strict``) or ``>= low``.

    Raises:
        ConfigError: naming the option, the range and the value (NaN and infinities included).
    """
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = number and math.isfinite(value) and (value > low if strict else value >= low)
    if not ok:
        bound = f"{'>' if strict else '>='} {low:g}"
        raise ConfigError(f"{name} must be a finite number {bound}{' or null' if nullable else ''}, got {value!r}")


@dataclass(frozen=True)
class MethodConfig:
    """Which uncertainty method (``trustseg.methods.METHODS``) and its parameters.

    Attributes:
        name: Registered method name (``softmax``, ``mc-dropout``, ``ensemble``, ...).
        params: The method's own parameters, checked against the method's ``Params`` when it is built.
    """

    name: str = "softmax"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs.

    Attributes:
        data: Root of a trustseg dataset (see ``trustseg.data.dataset``).
        net: Network shape.
        method: Method name and parameters.
        train: Optimisation settings.
        normalization: Intensity normalisation, fitted on the training cases (``trustseg.data.normalization``;
            per-channel z-score by default, ``{scheme: none}`` for raw intensities).
    """

    data: str = ""
    net: NetConfig = field(default_factory=NetConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    normalization: NormConfig = field(default_factory=NormConfig)


#: What a run folder's ``config.yaml`` written before an option existed means by its absence: how such a run
#: was trained. Every ``config.yaml`` written since holds every option, so only older runs are affected.
LEGACY_DEFAULTS: dict[str, Any] = {"normalization": {"scheme": "none"}, "train.augment": {"enabled": False}}


def load_run_config(path: str | Path) -> RunConfig:
    """Read a :class:`RunConfig` from a YAML/TOML/JSON file (unknown keys raise ``ConfigError``)."""
    return load_config(RunConfig, path)


def load_saved_run_config(path: str | Path) -> RunConfig:
    """Read a run folder's own ``config.yaml``: like :func:`load_run_config`, except that options the file lacks
    take their :data:`LEGACY_DEFAULTS` (what the run was trained with), not today's defaults.

    A run trained before normalisation and augmentation existed has neither key and was trained on raw
    intensities without augmentation; reading it with today's defaults would claim z-score and augmentation.
    Use this for every config read back from a run folder (resume checks, prediction, calibration).
    """
    data = read_mapping(path)
    for dotted, value in LEGACY_DEFAULTS.items():
        *parents, key = dotted.split(".")
        node: Any = data
        for name in parents:
            if node.get(name) is None:  # absent, or an empty YAML section
                node[name] = {}
            node = node[name]
            if not isinstance(node, dict):  # a bad value: from_dict reports it
                break
        else:
            node.setdefault(key, dict(value))
    try:
        return from_dict(RunConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def save_run_config(cfg: RunConfig, path: str | Path) -> Path:
    """Write ``cfg`` as YAML (atomically) and return the path."""
    return save_config(cfg, path)


def check_same_config(saved: RunConfig, cfg: RunConfig, where: str | Path) -> None:
    """Refuse to resume with settings other than the run's own (``data`` may be spelled differently).

    ``saved`` should come from :func:`load_saved_run_config`: a run trained before normalisation and augmentation
    existed then reads as ``normalization.scheme: none`` and ``train.augment.enabled: false``, so resuming it with
    today's defaults is refused (it would continue a raw-intensity model on normalised, augmented inputs); resume
    it with its own ``config.yaml``, or a config that sets those two options.

    Raises:
        ConfigError: listing each differing option as ``name: saved -> given``.
    """
    a, b = to_dict(saved), to_dict(cfg)
    diffs: list[str] = []

    def walk(x, y, prefix):
        if isinstance(x, dict) and isinstance(y, dict) and prefix != "method.params":
            for k in sorted(set(x) | set(y)):
                walk(x.get(k), y.get(k), f"{prefix}.{k}" if prefix else k)
        elif x != y and prefix != "data":
            diffs.append(f"{prefix}: {x!r} -> {y!r}")

    walk(a, b, "")
    if diffs:
        raise ConfigError(
            f"{where}: cannot resume with a different configuration ({'; '.join(diffs)}); resume with the run's "
            "own config.yaml, or train into a new folder"
        )
