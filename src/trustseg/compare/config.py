"""The frozen configuration of a comparison: datasets x methods x seeds (x folds), one backbone, one budget.

A :class:`CompareConfig` is read from YAML/TOML/JSON with :func:`load_compare_config` (the loader of every
trustseg config: unknown keys get a "did you mean" :class:`~trustseg.core.errors.ConfigError`), overridden by the
CLI flags (:func:`with_overrides`) and written as ``OUT/compare.yaml`` before any job runs.

Example ``compare.yaml``::

    datasets:
      - {name: synthetic2d, synth: {cases: 60, raters: 4, dims: 2, size: 64}}
      - {name: lidc, data: runs/lidc}
    methods:
      - {name: softmax}
      - {name: mc-dropout}            # samples = the fixed sample count (16) unless params set it
      - {name: ensemble, params: {members: 3}, epochs: 20}
    seeds: [0, 1, 2]
    net: {name: unet, params: {channels: [16, 32, 64]}}
    train: {epochs: 30, batch_size: 8}
    budget_minutes: 10
    ood: {distortions: [noise, blur], severities: [3]}
    baseline: softmax
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustseg.core.config import from_dict, load_config, replace, to_dict
from trustseg.core.errors import ConfigError
from trustseg.data.normalization import NormConfig
from trustseg.data.synthetic import SynthConfig
from trustseg.engine.config import MethodConfig, RunConfig, TrainConfig
from trustseg.evaluation.context import SuiteConfig
from trustseg.evaluation.robustness import NoiseConfig, OODConfig
from trustseg.methods import METHODS
from trustseg.models.config import NetConfig
from trustseg.quality.config import QCConfig

#: A dataset or method label: it names a job folder, so it is a plain file name.
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: The sample count of the sample-based multi-rater metrics (GED, Hungarian-matched IoU): the LIDC convention.
DEFAULT_SAMPLES = 16


def _label(what: str, value: str) -> None:
    if not LABEL.match(value):
        raise ConfigError(f"{what} {value!r} must be a plain name (letters, digits, '_', '-', '.'): it names a folder")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the comparison: an existing trustseg dataset folder, or synthetic data generated into
    ``OUT/data/<name>``.

    Attributes:
        name: Label (row key in the table, job folder ``OUT/jobs/<name>``).
        data: A trustseg dataset folder (``trustseg import ...`` or ``trustseg synth``); relative paths are read
            from the working directory.
        synth: Settings of a synthetic dataset (instead of ``data``).
    """

    name: str
    data: str = ""
    synth: SynthConfig | None = None

    def __post_init__(self) -> None:
        _label("dataset name", self.name)
        if bool(self.data) == (self.synth is not None):
            raise ConfigError(f"dataset {self.name!r}: give exactly one of `data: DIR` or `synth: {{...}}`")


@dataclass(frozen=True)
class MethodSpec:
    """One method of the comparison.

    Attributes:
        name: A registered method (``trustseg methods``).
        params: The method's parameters (checked when the method is built). A method with a ``samples``
            parameter gets :attr:`CompareConfig.samples` unless ``params`` sets it.
        epochs: Epochs of this method (default: ``train.epochs``).
        label: The row name and job folder (default: ``name``); needed to compare two variants of one method.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        METHODS.entry(self.name)  # unknown -> did you mean
        _label("method label", self.key)
        if self.epochs is not None and (isinstance(self.epochs, bool) or self.epochs < 1):
            raise ConfigError(f"method {self.key!r}: epochs must be an integer >= 1, got {self.epochs!r}")

    @property
    def key(self) -> str:
        """The row name / job folder."""
        return self.label or self.name


@dataclass(frozen=True)
class QCSpec:
    """Quality control in each job: a QC model fitted on the predictions of the validation split.

    Attributes:
        enabled: Fit QC models at all.
        min_cases: Fit only when the validation split has at least this many cases (else ``job.json`` says why
            QC was skipped).
        config: The QC model's settings (``trustseg qc fit``).
    """

    enabled: bool = True
    min_cases: int = 10
    config: QCConfig = field(default_factory=QCConfig)


@dataclass(frozen=True)
class BootstrapSpec:
    """The paired bootstrap of the per-case differences against the baseline.

    Attributes:
        resamples: Bootstrap resamples.
        confidence: Coverage of the percentile interval.
        seed: Seed of the resampling.
    """

    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.resamples < 1:
            raise ConfigError(f"bootstrap.resamples must be >= 1, got {self.resamples}")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"bootstrap.confidence must be in (0, 1), got {self.confidence}")


@dataclass(frozen=True)
class CompareConfig:
    """Everything a comparison runs: every method trained with the same backbone, data, seeds and budget.

    Attributes:
        datasets: The datasets.
        methods: The methods.
        seeds: Training seeds (each method is trained once per seed).
        folds: 1: the dataset's fixed train/val split; ``K > 1``: the first ``K`` folds of its k-fold split
            (``train.fold``), each one job. The test split is the same in every job.
        net: The shared network.
        train: The shared optimisation settings (``train.seed`` and ``train.fold`` are set per job).
        normalization: The shared intensity normalisation.
        budget_minutes: Per-member training-time cap (``train.max_minutes``); ``None``: epochs only.
        samples: Sample count of methods with a ``samples`` parameter (GED and Hungarian IoU at 16 samples).
        suite: The evaluation suite's settings.
        ood: The OOD protocol (distortions x severities) of every job; ``None`` skips it.
        noise: SURE's noise protocol of every job; ``None`` skips it.
        qc: Quality control.
        baseline: The method label every other is compared with (paired bootstrap).
        bootstrap: Bootstrap settings.
    """

    datasets: tuple[DatasetSpec, ...] = ()
    methods: tuple[MethodSpec, ...] = ()
    seeds: tuple[int, ...] = (0,)
    folds: int = 1
    net: NetConfig = field(default_factory=NetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    normalization: NormConfig = field(default_factory=NormConfig)
    budget_minutes: float | None = None
    samples: int = DEFAULT_SAMPLES
    suite: SuiteConfig = field(default_factory=SuiteConfig)
    ood: OODConfig | None = field(default_factory=lambda: OODConfig(("noise", "blur"), (3,)))
    noise: NoiseConfig | None = field(default_factory=lambda: NoiseConfig(levels=(0.1, 0.5, 0.9)))
    qc: QCSpec = field(default_factory=QCSpec)
    baseline: str = "softmax"
    bootstrap: BootstrapSpec = field(default_factory=BootstrapSpec)

    def __post_init__(self) -> None:
        if not self.datasets:
            raise ConfigError("a comparison needs at least one dataset (`datasets:` or --data DIR)")
        if not self.methods:
            raise ConfigError("a comparison needs at least one method (`methods:` or --methods a,b)")
        for what, keys in (("dataset", [d.name for d in self.datasets]), ("method", [m.key for m in self.methods])):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            if dup:
                raise ConfigError(f"{what} names repeat: {dup} (give each variant its own `label:`)")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ConfigError(f"seeds must be distinct integers >= 0, got {list(self.seeds)}")
        if isinstance(self.folds, bool) or self.folds < 1:
            raise ConfigError(f"folds must be an integer >= 1, got {self.folds!r}")
        if self.budget_minutes is not None and not self.budget_minutes > 0:
            raise ConfigError(f"budget_minutes must be > 0 or null, got {self.budget_minutes!r}")
        if self.samples < 2:
            raise ConfigError(f"samples must be >= 2 (the sample-based metrics need M > 1), got {self.samples}")
        labels = [m.key for m in self.methods]
        if self.baseline not in labels:
            raise ConfigError(f"baseline {self.baseline!r} is not one of the methods {labels}")

    def method(self, key: str) -> MethodSpec:
        """The method of label ``key``."""
        return next(m for m in self.methods if m.key == key)

    def dataset(self, name: str) -> DatasetSpec:
        """The dataset named ``name``."""
        return next(d for d in self.datasets if d.name == name)

    def fold_ids(self) -> tuple[int | None, ...]:
        """The folds of every (dataset, method, seed): ``(None,)`` for the fixed split, else ``0 .. K-1``."""
        return (None,) if self.folds == 1 else tuple(range(self.folds))


def method_params(cfg: CompareConfig, spec: MethodSpec) -> dict[str, Any]:
    """The parameters a method is trained with: its own, plus ``samples = cfg.samples`` when its ``Params`` has
    a ``samples`` field that the spec leaves unset (so GED / Hungarian IoU use the same sample count)."""
    params = dict(spec.params)
    fields = {f.name for f in dataclasses.fields(METHODS.get(spec.name).Params)}
    if "samples" in fields and "samples" not in params:
        params["samples"] = cfg.samples
    return params


def run_config(cfg: CompareConfig, spec: MethodSpec, data: str, seed: int, fold: int | None) -> RunConfig:
    """The :class:`RunConfig` of one job (shared net/train/normalisation; the job's method, seed, fold)."""
    train = dataclasses.replace(
        cfg.train,
        epochs=spec.epochs or cfg.train.epochs,
        seed=seed,
        fold=fold,
        max_minutes=cfg.budget_minutes if cfg.budget_minutes is not None else cfg.train.max_minutes,
    )
    return RunConfig(
        data=data,
        net=cfg.net,
        method=MethodConfig(name=spec.name, params=method_params(cfg, spec)),
        train=train,
        normalization=cfg.normalization,
    )


def config_hash(cfg: CompareConfig) -> str:
    """A stable digest of the whole config (recorded in each ``job.json``; a changed config redoes the jobs)."""
    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:16]


def load_compare_config(path: str | Path) -> CompareConfig:
    """Read a :class:`CompareConfig` from a YAML/TOML/JSON file (unknown keys: "did you mean")."""
    return load_config(CompareConfig, path)


def compare_config_from_dict(data: dict[str, Any]) -> CompareConfig:
    """Build a :class:`CompareConfig` from a mapping (as in a YAML file)."""
    return from_dict(CompareConfig, data)


def with_overrides(
    base: dict[str, Any],
    *,
    data: str | None = None,
    methods: list[str] | None = None,
    seeds: list[int] | None = None,
    folds: int | None = None,
    budget_minutes: float | None = None,
    sets: dict[str, Any] | None = None,
) -> CompareConfig:
    """The config mapping ``base`` (a file's, or a preset's) with the CLI flags applied, then checked.

    ``data`` replaces the datasets by one folder (named after it); ``methods`` keeps the listed labels of
    ``base`` (with their params) and adds the others with default params; ``sets`` are dotted ``--set`` keys
    (``train.epochs=1``) applied last.
    """
    out = dict(base)
    if data is not None:
        out["datasets"] = [{"name": _folder_label(data), "data": str(data)}]
    if methods is not None:
        known = {(m.get("label") or m["name"]): m for m in out.get("methods", []) if isinstance(m, dict)}
        out["methods"] = [known.get(name, {"name": name}) for name in methods]
        if out.get("baseline", "softmax") not in methods:
            out["baseline"] = methods[0]
    if seeds is not None:
        out["seeds"] = list(seeds)
    if folds is not None:
        out["folds"] = folds
    if budget_minutes is not None:
        out["budget_minutes"] = budget_minutes
    cfg = compare_config_from_dict(out)
    return replace(cfg, **sets) if sets else cfg


def _folder_label(path: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(path).resolve().name) or "data"
    return name if LABEL.match(name) else f"d{name}"
