"""Post-hoc temperature scaling of a trained run (``trustseg train --calibrate``, or ``trustseg calibrate RUN``).

The fitted temperature is stored in the run's ``run.json`` and applied by
:func:`trustseg.inference.run_predictor.load_run`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from trustseg.core.atomic import atomic_write_json
from trustseg.core.errors import ConfigError
from trustseg.data.dataset import load_dataset
from trustseg.data.normalization import NormStats
from trustseg.engine.config import load_saved_run_config
from trustseg.engine.loader import collate
from trustseg.engine.setup import load_data, split_ids
from trustseg.inference.device import resolve_device
from trustseg.inference.run_folder import CONFIG, RUN_JSON, read_run_json, size_multiple
from trustseg.inference.run_predictor import load_run
from trustseg.methods.base import Batch
from trustseg.methods.temperature import DEFAULT_MAX_VOXELS, fit_method_temperature


def case_batches(
    dataset, ids: Sequence[str], multiple: int = 1, normalization: NormStats | None = None
) -> Iterator[tuple[Batch, list[tuple[int, ...]]]]:
    """One batch per case, read when needed: ``(batch, [unpadded spatial shape])``.

    The image is normalised as in training (``normalization``, the run's stored statistics; ``None`` for runs
    trained on raw intensities), then zero-padded at the end of each axis to a multiple of ``multiple`` (the
    network's size multiple; a case's field-of-view mask becomes the batch's ``valid`` map, so the voxels outside
    it are left out of the fit too); the shape lets
    :func:`~trustseg.methods.temperature.fit_method_temperature` drop the padded voxels. At most one case is in
    memory at a time.
    """
    for cid in ids:
        case = dataset[cid]
        image = case.image if normalization is None else normalization.apply(case.image, where=f"case {cid!r}")
        valid = None if case.mask is None else [case.mask]
        yield collate([image], [case.labels], dataset.num_classes, multiple, valid), [tuple(case.image.shape[1:])]


def calibrate_run(
    run_dir: str | Path,
    *,
    data: str | Path | None = None,
    split: str | None = None,
    max_voxels: int = DEFAULT_MAX_VOXELS,
    seed: int = 0,
    device: str = "auto",
) -> float:
    """Fit a post-hoc temperature on validation cases of a trained run and store it in ``run.json``.

    Uses :func:`trustseg.methods.temperature.fit_method_temperature`: one ``T`` minimising the NLL of the soft
    label ȳ under the predictive mean of the (tempered) samples. The cases are predicted whole, one per batch
    (zero-padded to the network's size multiple; the padding is cropped off before the fit, so it does not count
    as background), and at most ``max_voxels`` voxels per case are kept (a seeded uniform subsample, weighted so
    that the NLL estimate is unbiased; all voxels when the case is smaller).

    Args:
        run_dir: The trained run folder.
        data: A trustseg dataset to fit on instead of the run's own (same classes).
        split: Fixed split of the dataset to use. Default: the run's validation cases (its ``train.fold`` if set)
            for the run's dataset, ``val`` for ``data``.
        max_voxels: Voxels kept per case.
        seed: Seed of the voxel subsample.
        device: Where to run the networks (``auto``: CUDA when available, as ``trustseg predict``).

    Returns:
        The fitted temperature.

    Raises:
        ConfigError: no cases to fit on, a dataset whose classes differ from the run's, or a method without
            logits.
    """
    run_dir = Path(run_dir)
    cfg = load_saved_run_config(run_dir / CONFIG)
    method, models, info = load_run(run_dir, device=resolve_device(device, "calibrate device"))
    dataset = load_data(cfg) if data is None else load_dataset(data)
    if data is None and split is None:
        _, ids = split_ids(dataset, cfg)
    else:
        ids = dataset.split(split or "val")
    if not ids:
        raise ConfigError(f"{dataset.root}: no {split or 'validation'} cases to fit a temperature on")
    if dataset.num_classes != int(info["num_classes"]):
        raise ConfigError(
            f"{dataset.root}: {dataset.num_classes} classes, but the run {run_dir} predicts {info['num_classes']}"
        )
    method.temperature = 1.0
    stored = info.get("normalization")
    stats = None if stored is None else NormStats.from_dict(stored, where=str(run_dir / RUN_JSON))
    batches = case_batches(dataset, ids, size_multiple(info), stats)
    t = float(fit_method_temperature(method, models, batches, target="soft", max_voxels=max_voxels, seed=seed))
    record = read_run_json(run_dir)
    record["temperature"] = t
    atomic_write_json(run_dir / RUN_JSON, record)
    return t
