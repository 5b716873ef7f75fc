"""Temperature scaling for any predictor with logits (``trustseg calibrate --model``, ``predict --temperature``).

Known answer: a 1x1-convolution module whose logits are 3x those of a calibrated model, on a dataset whose
raters' mean label is exactly the calibrated probability at every pixel (p = 1/4, 1/2, 3/4 with R = 4 raters),
so the NLL of ȳ is minimised by T = 3 exactly (softmax(z / 3) = ȳ everywhere).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from trustseg.cli.main import main
from trustseg.core.errors import ConfigError, DataError
from trustseg.data.case import Case
from trustseg.data.dataset import write_dataset
from trustseg.data.io import write_image
from trustseg.engine.calibrate import (
    apply_temperature,
    calibrate_predictor,
    read_temperature,
    soft_label,
    temperature_sidecar,
)
from trustseg.engine.predict import predict_folder
from trustseg.engine.prediction_folder import load_prediction
from trustseg.inference.predictor import PredictorInfo, load_predictor

LEVELS = (math.log(1 / 3), 0.0, math.log(3))  # sigmoid: 1/4, 1/2, 3/4
FOREGROUND_RATERS = (1, 2, 3)  # of R = 4


def overconfident(tmp_path, scale: float = 3.0) -> str:
    """A TorchScript 1x1 convolution with logits (0, scale·x): scale × the calibrated model's (0, x)."""
    conv = nn.Conv2d(1, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.0, scale]).view(2, 1, 1, 1))
        conv.bias.zero_()
    path = tmp_path / "model.pt"
    torch.jit.script(conv.eval()).save(str(path))
    return f"torchscript:{path}?classes=background,organ"


def _case(i: int, rng: np.random.Generator) -> Case:
    level = rng.integers(0, 3, size=(6, 5))
    image = np.asarray(LEVELS, dtype=np.float32)[level][None]
    labels = np.zeros((4, 6, 5), dtype=np.int64)
    for r in range(4):
        labels[r] = (np.asarray(FOREGROUND_RATERS)[level] > r).astype(np.int64)
    return Case(f"c{i}", image, labels)


@pytest.fixture
def planted(tmp_path):
    rng = np.random.default_rng(0)
    cases = [_case(i, rng) for i in range(4)]
    splits = {"fixed": {"train": ["c0", "c1"], "val": ["c2", "c3"], "test": []}}
    root = write_dataset(cases, tmp_path / "data", ["background", "organ"], ext=".npy", splits=splits)
    return overconfident(tmp_path), root, cases


def test_soft_label_is_the_calibrated_probability(planted):
    _, _, cases = planted
    y = soft_label(cases[0].labels, 2)
    p = torch.sigmoid(torch.from_numpy(cases[0].image[0]).double())
    assert torch.allclose(y[1].double(), p, atol=1e-6)


def test_planted_overconfidence_gives_t_3(planted, tmp_path):
    spec, root, _ = planted
    out = tmp_path / "temp.json"
    t = calibrate_predictor(spec, root, out, split="val", device="cpu")
    assert t == pytest.approx(3.0, rel=1e-4)
    record = json.loads(out.read_text())
    assert record["temperature"] == t and record["split"] == "val" and record["cases"] == 2
    assert read_temperature(out) == t
    # a calibrated module (scale 1) gets T = 1
    (tmp_path / "cal").mkdir()
    assert calibrate_predictor(overconfident(tmp_path / "cal", 1.0), root, None, device="cpu") == pytest.approx(
        1.0, rel=1e-4
    )


def test_cli_calibrate_writes_sidecar_and_predict_applies_it(planted, tmp_path):
    spec, root, cases = planted
    assert main(["calibrate", "--model", spec, "--data", str(root)]) == 0
    side = temperature_sidecar(spec)
    assert side == tmp_path / "model.temperature.json" and read_temperature(side) == pytest.approx(3.0, rel=1e-4)
    src = tmp_path / "images"
    write_image(src / "a.nii.gz", cases[0].image, spatial_dims=2)
    out = predict_folder(spec, src, tmp_path / "pred", progress=False, device="cpu")  # the sidecar is found
    probs = load_prediction(out, "a")["probs"]
    x = torch.from_numpy(cases[0].image[0]).double()
    z = torch.stack([torch.zeros_like(x), 3 * x])  # the module's logits
    expected = torch.softmax(z / read_temperature(side), 0).numpy()
    np.testing.assert_allclose(probs, expected, atol=1e-5)  # softmax(z / T) = the calibrated sigmoid(x)
    index = json.loads((out / "predictions.json").read_text())
    assert index["temperature"] == pytest.approx(3.0, rel=1e-4)
    # an explicit number wins over the sidecar; T = 1 is the raw module
    args = ["predict", "--model", spec, "--input", str(src), "--out", str(tmp_path / "raw"), "--no-progress"]
    assert main([*args, "--temperature", "1"]) == 0
    raw = load_prediction(tmp_path / "raw", "a")["probs"]
    np.testing.assert_allclose(raw, torch.softmax(z, 0).numpy(), atol=1e-5)


def test_predict_logits_matches_predict(planted):
    spec, _, cases = planted
    pred = load_predictor(spec, "cpu", tta="flips")
    pred.temperature = 2.5
    z = pred.predict_logits(cases[1].image)
    assert z.shape == (4, 1, 2, 6, 5)  # M = 4 flip views (2D)
    probs = pred.predict(cases[1].image).probs
    torch.testing.assert_close(probs, torch.softmax(z / 2.5, 2), atol=1e-6, rtol=0)


class _NoLogits:
    info = PredictorInfo(classes=("background", "organ"), in_channels=1, spatial_dims=2, source="plain")

    def predict(self, image, spacing=None):  # pragma: no cover - never called
        raise AssertionError


def test_refusals(planted, tmp_path):
    spec, root, _ = planted
    with pytest.raises(ConfigError, match="gives no logits"):
        calibrate_predictor(_NoLogits(), root)
    with pytest.raises(ConfigError, match="takes no temperature"):
        apply_temperature(_NoLogits(), 2.0, None)
    bad = tmp_path / "bad.json"
    bad.write_text('{"temperature": -1}')
    with pytest.raises(DataError, match="finite number > 0"):
        read_temperature(bad)
    assert main(["calibrate", "--data", str(root)]) == 2  # neither RUN nor --model
    assert main(["calibrate", "--model", spec]) == 2  # no --data
