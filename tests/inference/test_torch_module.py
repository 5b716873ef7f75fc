"""Plain modules as predictors (:mod:`trustseg.inference.adapters`): ``torchscript:`` and ``state_dict:``, MC
dropout, test-time flips and Gaussian sliding windows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from trustseg.cli.main import main
from trustseg.core.errors import ConfigError, DataError, UnknownNameError
from trustseg.data.io import write_image
from trustseg.engine.prediction_folder import load_prediction
from trustseg.inference.adapters import TorchModulePredictor, parse_location
from trustseg.inference.predictor import load_predictor

K = 3


class TinyNet(nn.Module):
    """A deterministic U-Net-ish module (one downsampling, a skip), optionally with dropout."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.enc = nn.Conv2d(1, 4, 3, padding=1)
        self.down = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.drop = nn.Dropout(p) if p > 0 else nn.Identity()
        self.head = nn.Conv2d(8, K, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = torch.relu(self.enc(x))
        u = self.up(torch.relu(self.down(e)))
        return self.head(self.drop(torch.cat([e, u], 1)))


def make_tiny(p: float = 0.0) -> nn.Module:
    """The factory of the state_dict: tests."""
    torch.manual_seed(0)
    return TinyNet(p)


def _script(tmp_path, module: nn.Module, name: str = "model.pt") -> str:
    torch.manual_seed(0)
    path = tmp_path / name
    torch.jit.script(module.eval()).save(str(path))
    return str(path)


def _image(h: int = 12, w: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(1, h, w)).astype(np.float32)


def test_location_keys_query_and_sidecar(tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"classes": ["bg", "fg"], "multiple": 4}))
    spec = parse_location(f"{tmp_path / 'm.pt'}?multiple=8", "torchscript")
    assert spec.classes == ("bg", "fg") and spec.multiple == 8  # the location wins over the JSON file
    with pytest.raises(ConfigError, match="classes=background"):
        parse_location("x.pt", "torchscript")
    with pytest.raises(ConfigError, match="did you mean 'in_channels'"):
        parse_location("x.pt?classes=2&in_channel=2", "torchscript")


def test_mean_of_flips_equals_a_hand_computation(tmp_path):
    module = make_tiny()
    path = _script(tmp_path, module)
    pred = load_predictor(f"torchscript:{path}?classes={K}&multiple=2", "cpu", tta="flips")
    image = _image(12, 10)
    out = pred.predict(image)
    assert out.probs.shape == (4, 1, K, 12, 10) and pred.info.num_samples == 4
    x = torch.from_numpy(image)[None]
    hand = []
    with torch.no_grad():
        for dims in [(), (-2,), (-1,), (-2, -1)]:
            z = module.eval()(torch.flip(x, dims) if dims else x)
            hand.append(torch.flip(torch.softmax(z, 1), dims) if dims else torch.softmax(z, 1))
    torch.testing.assert_close(out.mean(), torch.stack(hand).mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.probs[0], hand[0], atol=1e-5, rtol=1e-5)  # sample 0 is the identity view


def test_cli_torchscript_with_tta_and_mc_dropout(tmp_path):
    path = _script(tmp_path, TinyNet(p=0.5))
    inp = tmp_path / "images"
    inp.mkdir()
    write_image(inp / "case0.nii.gz", _image(12, 10), (1.0, 1.0))
    out = tmp_path / "pred"
    args = ["predict", "--model", f"torchscript:{path}?classes={K}&multiple=2", "--input", str(inp), "--out", str(out)]
    assert main([*args, "--tta", "flips", "--mc-dropout", "3", "--samples", "--no-progress"]) == 0
    samples = np.load(out / "case0_samples.npy")
    assert samples.shape == (3 * 4, K, 12, 10)  # M = 3 passes x 4 flips, not folded into the batch
    assert not np.allclose(samples[0], samples[1])  # dropout varies the passes of one view
    assert load_prediction(out, "case0")["probs"].shape == (K, 12, 10)


def test_mc_dropout_is_refused_without_dropout_layers_and_for_runs(tmp_path):
    path = _script(tmp_path, TinyNet())
    with pytest.raises(ConfigError, match="--mc-dropout needs dropout layers"):
        load_predictor(f"torchscript:{path}?classes={K}", "cpu", mc_dropout=3)
    with pytest.raises(UnknownNameError, match="did you mean 'flips'"):
        load_predictor(f"torchscript:{path}?classes={K}", "cpu", tta="flip")
    rc = main(
        ["predict", "--model", str(tmp_path), "--input", str(tmp_path), "--out", str(tmp_path / "o"), "--tta", "flips"]
    )
    assert rc == 2  # a run: folder takes no --tta (ConfigError, exit 2)


def test_dropout_in_eval_mode_otherwise_and_reproducible(tmp_path):
    path = _script(tmp_path, TinyNet(p=0.5))
    plain = load_predictor(f"torchscript:{path}?classes={K}", "cpu")
    a, b = plain.predict(_image()), plain.predict(_image())
    assert a.num_samples == 1 and torch.equal(a.probs, b.probs)
    mc = load_predictor(f"torchscript:{path}?classes={K}", "cpu", mc_dropout=4, seed=7)
    c, d = mc.predict(_image()), mc.predict(_image())
    assert torch.equal(c.probs, d.probs)  # reseeded per prediction
    assert not torch.allclose(c.probs[0], c.probs[1])


def test_sliding_window_is_exact_for_a_1x1_conv(tmp_path):
    torch.manual_seed(0)
    path = _script(tmp_path, nn.Conv2d(1, K, 1))
    spec = f"torchscript:{path}?classes={K}"
    image = _image(20, 18)
    whole = load_predictor(spec, "cpu", tta="flips").predict(image)
    windowed = load_predictor(spec, "cpu", tta="flips", patch_size=(8, 8)).predict(image)
    assert windowed.probs.shape == whole.probs.shape == (4, 1, K, 20, 18)
    torch.testing.assert_close(windowed.probs, whole.probs, atol=1e-6, rtol=1e-5)


def test_sliding_window_is_close_for_a_unet_ish_module(tmp_path):
    path = _script(tmp_path, make_tiny())
    spec = f"torchscript:{path}?classes={K}&multiple=2"
    image = _image(24, 24, seed=3)
    whole = load_predictor(spec, "cpu").predict(image)
    windowed = load_predictor(spec, "cpu", patch_size=(16, 16), overlap=0.5).predict(image)
    diff = (windowed.probs - whole.probs).abs()
    assert float(diff[..., 4:-4, 4:-4].max()) < 0.05  # the module's receptive field is a few pixels
    assert float(diff.mean()) < 0.02


def test_state_dict_with_a_factory(tmp_path):
    module = make_tiny()
    torch.save({"model": module.state_dict()}, tmp_path / "w.pt")
    spec = f"state_dict:{tmp_path / 'w.pt'}?factory=tests.inference.test_torch_module:make_tiny&classes={K}&multiple=2"
    pred = load_predictor(spec, "cpu")
    assert isinstance(pred, TorchModulePredictor) and pred.info.source.startswith("state_dict:")
    image = _image()
    with torch.no_grad():
        ref = torch.softmax(module.eval()(torch.from_numpy(image)[None]), 1)
    torch.testing.assert_close(pred.predict(image).probs[0], ref, atol=1e-6, rtol=1e-5)
    with pytest.raises(ConfigError, match="factory"):
        load_predictor(f"state_dict:{tmp_path / 'w.pt'}?classes={K}", "cpu")
    torch.save({"model": nn.Conv2d(1, 2, 1).state_dict()}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="do not fit"):
        load_predictor(spec.replace("w.pt", "other.pt"), "cpu")


def test_bad_files_and_outputs(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(DataError, match="not a TorchScript file"):
        load_predictor(f"torchscript:{tmp_path / 'junk.pt'}?classes=2", "cpu")
    with pytest.raises(DataError, match="not found"):
        load_predictor(f"torchscript:{tmp_path / 'none.pt'}?classes=2", "cpu")
    path = _script(tmp_path, TinyNet())
    pred = load_predictor(f"torchscript:{path}?classes=2&multiple=2", "cpu")  # the module gives K = 3
    with pytest.raises(ConfigError, match="check classes="):
        pred.predict(_image())
