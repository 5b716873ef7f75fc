"""A MONAI bundle folder as a predictor (``bundle:FOLDER``): its network_def and weights, its metadata's classes,
channels and size multiple, through the same seam as TorchScript (flips, MC dropout)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import UNet

from trustseg.cli.main import main
from trustseg.core.errors import DataError
from trustseg.data.predictions import load_prediction
from trustseg.inference.adapters.monai_bundle import bundle_keys, size_multiple
from trustseg.inference.predictor import load_predictor

NET = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [4, 8], "strides": [2], "dropout": 0.2}


def make_bundle(root: Path, torchscript: bool = False) -> tuple[Path, torch.nn.Module]:
    """A bundle as MONAI's bundle specification lays it out, with a tiny 2D UNet (seeded weights)."""
    folder = root / "spleen_tiny"
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    meta = {
        "network_data_format": {
            "inputs": {"image": {"num_channels": 1, "spatial_shape": ["8*n", "8*n"]}},
            "outputs": {"pred": {"num_channels": 3, "channel_def": {"0": "background", "1": "spleen", "2": "liver"}}},
        }
    }
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta))
    (folder / "configs" / "inference.json").write_text(
        json.dumps({"network_def": {"_target_": "monai.networks.nets.UNet", **NET}})
    )
    torch.manual_seed(0)
    net = UNet(**NET).eval()
    if torchscript:
        torch.jit.script(net).save(str(folder / "models" / "model.ts"))
    else:
        torch.save(net.state_dict(), folder / "models" / "model.pt")
    return folder, net


def test_metadata_gives_classes_channels_and_multiple(tmp_path):
    folder, _ = make_bundle(tmp_path)
    assert bundle_keys(folder) == {
        "classes": ["background", "spleen", "liver"],
        "in_channels": 1,
        "spatial_dims": 2,
        "multiple": 8,
    }
    assert size_multiple(["32*n", "16*n"]) == 32 and size_multiple([96, 96]) == 1


@pytest.mark.parametrize("torchscript", [False, True])
def test_the_bundle_predicts_as_its_network(tmp_path, torchscript):
    folder, net = make_bundle(tmp_path, torchscript)
    pred = load_predictor(f"bundle:{folder}", "cpu")
    assert pred.info.classes == ("background", "spleen", "liver") and pred.info.num_samples == 1
    image = np.random.default_rng(0).normal(size=(1, 16, 24)).astype(np.float32)
    with torch.no_grad():
        want = torch.softmax(net(torch.from_numpy(image)[None]), 1)
    torch.testing.assert_close(pred.predict(image).probs[0], want, atol=1e-5, rtol=0)


def test_cli_with_flips_and_mc_dropout(tmp_path):
    folder, _ = make_bundle(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    np.save(images / "a.npy", np.random.default_rng(1).normal(size=(16, 16)).astype(np.float32))
    out = tmp_path / "pred"
    argv = ["predict", "--model", f"bundle:{folder}", "--input", str(images), "--out", str(out)]
    assert main([*argv, "--tta", "flips", "--mc-dropout", "2", "--samples", "--no-progress"]) == 0
    samples = load_prediction(out, "a")["samples"]
    assert samples.shape[0] == 4 * 2 and not np.allclose(samples[0], samples[1])  # dropout varies the passes


def test_refusals_name_the_bundle(tmp_path):
    with pytest.raises(DataError, match="no such MONAI bundle folder"):
        load_predictor(f"bundle:{tmp_path / 'none'}", "cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="metadata.json"):
        load_predictor(f"bundle:{tmp_path / 'empty'}", "cpu")
    folder, _ = make_bundle(tmp_path / "b")
    torch.save({"x": torch.zeros(2)}, folder / "models" / "model.pt")
    with pytest.raises(DataError, match="do not fit"):
        load_predictor(f"bundle:{folder}", "cpu")
