"""Compatibility names of the engine's training API (``from trustseg.engine.train import train`` keeps working).

The code lives in :mod:`trustseg.engine.run` (:func:`train`), :mod:`trustseg.engine.fit` (the per-member loop),
:mod:`trustseg.engine.setup` (dataset, split, method) and :mod:`trustseg.engine.run_folder` (run files).
"""

from trustseg.engine.fit import foreground_dice, train_member, validate
from trustseg.engine.run import summarize, train
from trustseg.engine.run_folder import config_from_run, write_run_files
from trustseg.engine.setup import load_data, make_method, pad_multiple, split_ids
from trustseg.inference.device import resolve_device, use_amp
from trustseg.inference.run_folder import CONFIG, RUN_JSON, read_run_json
from trustseg.inference.run_folder import size_multiple as multiple_of

__all__ = [
    "CONFIG",
    "RUN_JSON",
    "config_from_run",
    "foreground_dice",
    "load_data",
    "make_method",
    "multiple_of",
    "pad_multiple",
    "read_run_json",
    "resolve_device",
    "split_ids",
    "summarize",
    "train",
    "train_member",
    "use_amp",
    "validate",
    "write_run_files",
]
