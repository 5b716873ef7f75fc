"""Run setup shared by training, calibration and member processes: the dataset, the split, the method."""

from __future__ import annotations

from pathlib import Path

from trustseg.core.errors import ConfigError
from trustseg.data.dataset import Dataset, load_dataset
from trustseg.data.normalization import NormStats, fit_case_normalization
from trustseg.engine.config import RunConfig
from trustseg.inference.run_folder import RUN_JSON, read_run_json
from trustseg.methods.base import Method, build_method
from trustseg.models.factory import size_multiple


def pad_multiple(cfg: RunConfig) -> int:
    """The spatial size multiple of the configured network (its own property, e.g. ``2**(depth - 1)`` for a U-Net):
    training batches and predicted images are zero-padded to it."""
    return size_multiple(cfg.net)


def load_data(cfg: RunConfig) -> Dataset:
    """Open the dataset ``cfg.data``."""
    if not cfg.data:
        raise ConfigError("no dataset given (set 'data' in the config or pass --data)")
    return load_dataset(cfg.data)


def split_ids(dataset: Dataset, cfg: RunConfig) -> tuple[list[str], list[str]]:
    """Training and validation case ids: ``dataset.fold(k)`` when ``train.fold`` is set, else the fixed split.

    ``train.max_train_cases`` keeps the first cases of the training list.
    """
    if cfg.train.fold is not None:
        train_ids, val_ids = dataset.fold(cfg.train.fold)
    else:
        train_ids, val_ids = dataset.split("train"), dataset.split("val")
    train_ids, val_ids = list(train_ids), list(val_ids)
    if cfg.train.max_train_cases is not None:
        train_ids = train_ids[: cfg.train.max_train_cases]
    if not train_ids:
        raise ConfigError(f"{cfg.data}: the training split is empty")
    return train_ids, val_ids


def make_method(cfg: RunConfig, dataset: Dataset) -> Method:
    """Build the configured method for the dataset's shapes and check it can learn from its raters."""
    method = build_method(
        cfg.method.name, cfg.net, dataset.spatial_dims, dataset.channels, dataset.num_classes, cfg.method.params
    )
    method.check_raters(dataset.num_raters)
    return method


def normalization_stats(
    cfg: RunConfig, dataset: Dataset, train_ids: list[str], run_dir: Path | None = None
) -> NormStats:
    """The run's intensity normalisation: the statistics stored in ``run_dir/run.json`` when there are some (every
    member and every resumed process uses the same), else fitted on the training cases (``cfg.normalization``)."""
    if run_dir is not None and (Path(run_dir) / RUN_JSON).is_file():
        stored = read_run_json(run_dir).get("normalization")
        if stored is not None:
            return NormStats.from_dict(stored, where=str(Path(run_dir) / RUN_JSON))
    return fit_case_normalization(dataset.__getitem__, train_ids, cfg.normalization, get_image=dataset.image)
