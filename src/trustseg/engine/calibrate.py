"""Post-hoc temperature scaling of a trained run (``trustseg train --calibrate``, or later on its own).

The fitted temperature is stored in the run's ``run.json`` and applied by
:func:`trustseg.inference.run_predictor.load_run`.
"""

from __future__ import annotations

from pathlib import Path

from trustseg.core.atomic import atomic_write_json
from trustseg.core.errors import ConfigError
from trustseg.engine.config import load_run_config
from trustseg.engine.loader import CaseLoader
from trustseg.engine.setup import load_data, split_ids
from trustseg.inference.run_folder import CONFIG, RUN_JSON, read_run_json, size_multiple
from trustseg.inference.run_predictor import load_run
from trustseg.methods.temperature import fit_method_temperature


def calibrate_run(run_dir: str | Path) -> float:
    """Fit a post-hoc temperature on the validation cases of a trained run and store it in ``run.json``.

    Uses :func:`trustseg.methods.temperature.fit_method_temperature`: one ``T`` minimising the NLL of the soft
    label ȳ under the predictive mean of the (tempered) samples. The validation cases form one batch, zero-padded
    to a common shape (the padding counts as background), and are predicted whole.

    Returns:
        The fitted temperature.

    Raises:
        ConfigError: no validation cases, or a method without logits.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir / CONFIG)
    method, models, info = load_run(run_dir)
    dataset = load_data(cfg)
    _, val_ids = split_ids(dataset, cfg)
    if not val_ids:
        raise ConfigError(f"{cfg.data}: no validation cases to fit a temperature on")
    loader = CaseLoader(
        dataset.__getitem__, val_ids, dataset.num_classes, batch_size=len(val_ids), pad_multiple=size_multiple(info)
    )
    batches = [batch for _, batch in loader.batches(0)]
    method.temperature = 1.0
    t = float(fit_method_temperature(method, models, batches, target="soft"))
    data = read_run_json(run_dir)
    data["temperature"] = t
    atomic_write_json(run_dir / RUN_JSON, data)
    return t
