"""Post-hoc temperature of a trained run: streamed case by case, equal to the one-batch fit; splits and datasets."""

from __future__ import annotations

import json

import pytest
import torch

from trustseg.core.errors import ConfigError, DataError
from trustseg.data.dataset import load_dataset
from trustseg.data.synthetic import SynthConfig, make_synthetic_dataset
from trustseg.engine.calibrate import calibrate_run, case_batches
from trustseg.engine.config import MethodConfig, RunConfig, TrainConfig
from trustseg.engine.loader import collate
from trustseg.engine.predict import load_run
from trustseg.engine.train import train
from trustseg.methods.temperature import collect_logits, fit_temperature
from trustseg.models.config import NetConfig


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A one-epoch softmax run on 12 synthetic 16×16 cases (3 raters, 3 classes; 2 validation cases)."""
    tmp = tmp_path_factory.mktemp("calibrate")
    data = make_synthetic_dataset(tmp / "data", SynthConfig(cases=12, raters=3, dims=2, size=16, seed=0), ext=".npy")
    cfg = RunConfig(
        data=str(data),
        net=NetConfig(params={"channels": (4, 8)}),
        method=MethodConfig("softmax", {}),
        train=TrainConfig(epochs=1, batch_size=4),
    )
    torch.manual_seed(0)
    train(cfg, tmp / "run", progress=False)
    return tmp / "run", data


def _one_batch_temperature(run_dir, data, ids):
    """The former path: every case in one batch (same shape here, so no padding), all voxels, one fit."""
    method, models, _ = load_run(run_dir)
    ds = load_dataset(data)
    cases = [ds[i] for i in ids]
    batch = collate([c.image for c in cases], [c.labels for c in cases], ds.num_classes)
    z, y = collect_logits(method, models, [batch])
    return fit_temperature(z, y, samples=True)


def test_streamed_calibration_equals_the_one_batch_fit_and_is_stored(run):
    run_dir, data = run
    val = load_dataset(data).split("val")
    assert len(val) >= 2
    t = calibrate_run(run_dir)
    # the same NLL (every voxel kept: 256 < max_voxels) summed in another order; L-BFGS's gradient tolerance
    # (1e-7 on log T) bounds how far apart the two minimisers can stop
    assert t == pytest.approx(_one_batch_temperature(run_dir, data, val), rel=1e-6)
    assert json.loads((run_dir / "run.json").read_text())["temperature"] == t
    assert load_run(run_dir)[0].temperature == t


def test_other_split_other_dataset_and_subsampling(run, tmp_path):
    run_dir, data = run
    test_ids = load_dataset(data).split("test")
    t_test = calibrate_run(run_dir, split="test")
    assert t_test == pytest.approx(_one_batch_temperature(run_dir, data, test_ids), rel=1e-6)
    assert json.loads((run_dir / "run.json").read_text())["temperature"] == t_test
    # the same dataset given explicitly: its "val" split by default
    assert calibrate_run(run_dir, data=data) == pytest.approx(calibrate_run(run_dir), rel=1e-12)
    # 64 of 256 voxels per case: seeded (same voxels, same T), and an estimate of the full fit
    t_sub = calibrate_run(run_dir, max_voxels=64, seed=3)
    assert calibrate_run(run_dir, max_voxels=64, seed=3) == t_sub
    assert t_sub == pytest.approx(calibrate_run(run_dir), rel=0.25)
    with pytest.raises(DataError, match="unknown split"):
        calibrate_run(run_dir, split="vall")
    other = make_synthetic_dataset(
        tmp_path / "four", SynthConfig(cases=6, raters=2, dims=2, size=16, num_classes=4, seed=1), ext=".npy"
    )
    with pytest.raises(ConfigError, match="4 classes"):
        calibrate_run(run_dir, data=other)


def test_case_batches_are_one_case_each_with_its_unpadded_shape(run):
    _, data = run
    ds = load_dataset(data)
    ids = ds.split("val")
    out = list(case_batches(ds, ids, multiple=32))
    assert len(out) == len(ids)
    for (batch, shapes), cid in zip(out, ids):
        assert tuple(batch.image.shape) == (1, 1, 32, 32) and shapes == [(16, 16)]
        assert torch.equal(batch.labels[0, :, :16, :16], torch.as_tensor(ds[cid].labels).long())
