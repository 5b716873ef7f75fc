"""The method hooks the training run calls: optimiser, augmentation, post-training step; normalisation stored."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import torch

from tests.engine.test_train import make_data, tiny_cfg, weights
from trustseg.data.augmentation import AugmentConfig
from trustseg.data.dataset import load_dataset, write_dataset
from trustseg.data.normalization import NormStats
from trustseg.engine.checkpoint import load_checkpoint
from trustseg.engine.run import train
from trustseg.inference.run_predictor import RunPredictor
from trustseg.methods.softmax import Softmax


def test_post_training_step_is_recorded_in_run_json(tmp_path, monkeypatch):
    seen = {}

    def after(self, models, val_batches):
        seen["models"] = len(models)
        seen["batches"] = sum(1 for _ in val_batches)
        return {"post_training": {"ran": True}}

    monkeypatch.setattr(Softmax, "after_training", after)
    data = make_data(tmp_path)
    train(tiny_cfg(data, epochs=1), tmp_path / "run", progress=False)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["post_training"] == {"ran": True}
    assert seen == {"models": 1, "batches": len(load_dataset(data).split("val"))}


def test_the_optimiser_hook_is_what_trains(tmp_path, monkeypatch):
    def sgd(self, model, lr, weight_decay, total_steps):
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the weights must not move
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)

    monkeypatch.setattr(Softmax, "configure_optimizer", sgd)
    data = make_data(tmp_path)
    run = tmp_path / "run"
    train(tiny_cfg(data, epochs=1), run, progress=False)
    state = load_checkpoint(run / "member_0" / "last.pt")
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.0  # the hook's optimiser was saved and resumed
    torch.manual_seed(0)
    fresh = Softmax(tiny_cfg(data).net, 2, 1, 3).build_model(0).state_dict()
    for k, v in weights(run).items():
        if v.is_floating_point() and "running" not in k:
            torch.testing.assert_close(v, fresh[k], msg=k)


def test_the_augmentation_hook_decides(tmp_path, monkeypatch):
    data = make_data(tmp_path)
    off = tiny_cfg(data, epochs=1)
    off = dataclasses.replace(off, train=dataclasses.replace(off.train, augment=AugmentConfig(enabled=False)))
    train(off, tmp_path / "off", progress=False)
    monkeypatch.setattr(Softmax, "augmentation", lambda self, default: AugmentConfig(enabled=False))
    train(tiny_cfg(data, epochs=1), tmp_path / "hooked", progress=False)  # default config: augmentation on
    for k, v in weights(tmp_path / "off").items():
        torch.testing.assert_close(v, weights(tmp_path / "hooked")[k], msg=k)


def test_normalisation_is_fitted_on_training_cases_and_applied_at_prediction(tmp_path):
    synth = load_dataset(make_data(tmp_path))  # z-scored already: rescale to raw-looking intensities
    raw = [dataclasses.replace(synth[c], image=(synth[c].image * 40 + 120).astype(np.float32)) for c in synth.ids]
    data = write_dataset(raw, tmp_path / "raw", synth.classes, splits=synth._meta["splits"])
    run = tmp_path / "run"
    train(tiny_cfg(data, epochs=1), run, progress=False)
    info = json.loads((run / "run.json").read_text())
    stats = NormStats.from_dict(info["normalization"])
    ds = load_dataset(data)
    pixels = [ds[c].image.reshape(ds[c].image.shape[0], -1).astype(np.float64) for c in ds.split("train")]
    train_pixels = np.concatenate(pixels, 1)
    np.testing.assert_allclose(stats.mean, train_pixels.mean(1), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats.std, train_pixels.std(1), rtol=1e-5)
    predictor = RunPredictor(run, device="cpu")
    assert predictor.info.intensity_scale == stats.scale
    case = ds[ds.split("test")[0]]
    x = predictor.prepare(case.image)
    assert stats.mean[0] > 100 and stats.std[0] > 20
    np.testing.assert_allclose(x.numpy(), (case.image - stats.mean[0]) / stats.std[0], rtol=1e-5, atol=1e-5)


def test_training_sees_normalised_images(tmp_path):
    """A dataset and its affine rescaling (raw = 40·x + 120) normalise to the same training inputs: same weights."""
    synth = load_dataset(make_data(tmp_path))
    raw = [dataclasses.replace(synth[c], image=(synth[c].image * 40 + 120).astype(np.float32)) for c in synth.ids]
    raw_root = write_dataset(raw, tmp_path / "raw", synth.classes, splits=synth._meta["splits"])
    train(tiny_cfg(synth.root, epochs=1), tmp_path / "a", progress=False)
    train(tiny_cfg(raw_root, epochs=1), tmp_path / "b", progress=False)
    wa, wb = weights(tmp_path / "a"), weights(tmp_path / "b")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-3, rtol=1e-3, msg=k)
