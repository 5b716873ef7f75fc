"""``train.max_minutes``: the per-member training-time budget (used by ``trustseg compare --budget-minutes``)."""

from __future__ import annotations

import csv

import pytest

from trustseg.core.errors import ConfigError
from trustseg.data.synthetic import SynthConfig, make_synthetic_dataset
from trustseg.engine.config import MethodConfig, RunConfig, TrainConfig
from trustseg.engine.run import train
from trustseg.models.config import NetConfig


def _cfg(data, max_minutes):
    return RunConfig(
        data=str(data),
        net=NetConfig(params={"channels": (4, 8)}),
        method=MethodConfig(name="softmax"),
        train=TrainConfig(epochs=3, batch_size=4, val_every=5, seed=0, max_minutes=max_minutes),
    )


def test_budget_stops_after_the_epoch_that_spends_it_and_resume_keeps_it(tmp_path):
    data = make_synthetic_dataset(tmp_path / "d", SynthConfig(cases=8, raters=2, size=16, seed=0), ext=".npy")
    # a zero budget is spent by the first epoch: exactly one epoch, validated although val_every = 5
    summary = train(_cfg(data, 0.0), tmp_path / "run", progress=False)
    assert summary["members"][0]["epochs"] == 1
    assert (tmp_path / "run" / "member_0" / "best.pt").is_file()
    rows = list(csv.DictReader(open(tmp_path / "run" / "member_0" / "history.csv")))
    assert len(rows) == 1 and rows[0]["val_dice"] not in ("", "nan")
    # resuming does not train past the budget (the spent time is read back from the history)
    again = train(_cfg(data, 0.0), tmp_path / "run", resume=True, progress=False)
    assert again["members"][0]["epochs"] == 1
    # no budget: all epochs
    full = train(_cfg(data, None), tmp_path / "full", progress=False)
    assert full["members"][0]["epochs"] == 3


def test_negative_budget_is_refused():
    with pytest.raises(ConfigError, match="train.max_minutes"):
        TrainConfig(max_minutes=-1.0)
