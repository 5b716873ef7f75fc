"""Writing a run folder's description files (``config.yaml``, ``run.json``) and reading its config back.

The format itself (file names, ``run.json`` reading, checkpoints) is :mod:`trustseg.inference.run_folder`,
because a trained run is read by inference; this module adds what training writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trustseg.core.atomic import atomic_write_json, make_dirs
from trustseg.core.config import to_dict
from trustseg.data.normalization import NormStats
from trustseg.engine.config import RunConfig, load_saved_run_config, save_run_config
from trustseg.inference.run_folder import CONFIG, RUN_JSON, read_run_json
from trustseg.methods.base import Method


def write_run_files(
    cfg: RunConfig,
    out: Path,
    dataset,
    method: Method,
    multiple: int,
    normalization: NormStats,
    resume: bool = False,
) -> dict[str, Any]:
    """Write ``config.yaml`` and ``run.json`` (on resume, a temperature fitted before is kept).

    Args:
        cfg: The run configuration.
        out: Run folder (created).
        dataset: The opened dataset (classes, raters, shapes).
        method: The built method.
        multiple: The network's spatial size multiple (stored as ``pad_multiple``).
        normalization: The intensity normalisation fitted on the training cases (applied at every prediction).
        resume: Keep the temperature of an existing ``run.json``.
    """
    make_dirs(out)
    save_run_config(cfg, out / CONFIG)
    old = read_run_json(out) if resume and (out / RUN_JSON).exists() else {}
    info = {
        "method": method.name or cfg.method.name,
        "params": method.params_dict(),
        "classes": list(dataset.classes),
        "raters": list(dataset.raters),
        "spatial_dims": dataset.spatial_dims,
        "in_channels": dataset.channels,
        "num_classes": dataset.num_classes,
        "members": method.num_members,
        "patch_size": None if cfg.train.patch_size is None else list(cfg.train.patch_size),
        "pad_multiple": multiple,
        "temperature": old.get("temperature", 1.0),
        "normalization": normalization.to_dict(),
        "net": to_dict(cfg.net),
        "data": cfg.data,
    }
    atomic_write_json(out / RUN_JSON, info)
    return info


def config_from_run(run_dir: str | Path) -> RunConfig:
    """The :class:`RunConfig` saved in a run folder (options it lacks read as what the run was trained with)."""
    return load_saved_run_config(Path(run_dir) / CONFIG)
