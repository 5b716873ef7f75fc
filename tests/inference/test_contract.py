"""Contract tests over the predictor registry: every registered scheme behaves as the Predictor protocol says.

A scheme registered without an example here fails ``test_every_scheme_has_an_example``, so a new adapter is
tested by the existing contract from the day it is registered.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.engine.test_train import make_data, tiny_cfg
from tests.inference.test_monai_bundle import make_bundle
from tests.inference.test_nnunet_adapter import make_model_folder, write_case
from tests.inference.test_torch_module import TinyNet, make_tiny
from trustseg.core.errors import DataError, UnknownNameError
from trustseg.data.dataset import load_dataset
from trustseg.data.io import read_image
from trustseg.engine.run import train
from trustseg.inference.predictor import PREDICTORS, Predictor, PredictorInfo, load_predictor, split_spec


def _run_example(tmp: Path) -> tuple[str, np.ndarray, tuple[float, ...]]:
    data = make_data(tmp, cases=6, size=18)  # 18 is not a multiple of the 3-level U-Net's 4: padding is exercised
    cfg = tiny_cfg(data, "mc-dropout", {"samples": 3}, epochs=1)
    cfg = dataclasses.replace(cfg, net=cfg.net.with_params(channels=(4, 8, 16), dropout=0.2))
    train(cfg, tmp / "run", progress=False)
    case = load_dataset(data)[0]
    return f"run:{tmp / 'run'}", case.image, tuple(case.spacing)


def _torchscript_example(tmp: Path) -> tuple[str, np.ndarray, tuple[float, ...]]:
    torch.manual_seed(0)
    torch.jit.script(TinyNet(p=0.3).eval()).save(str(tmp / "model.pt"))
    return f"torchscript:{tmp / 'model.pt'}?classes=3&multiple=2", np.ones((1, 9, 10), np.float32), (1.0, 1.0)


def _state_dict_example(tmp: Path) -> tuple[str, np.ndarray, tuple[float, ...]]:
    torch.save(make_tiny().state_dict(), tmp / "w.pt")
    factory = "tests.inference.test_torch_module:make_tiny"
    return f"state_dict:{tmp / 'w.pt'}?factory={factory}&classes=3&multiple=2", np.ones((1, 8, 6), np.float32), (1.0,)


def _bundle_example(tmp: Path) -> tuple[str, np.ndarray, tuple[float, ...]]:
    folder, _ = make_bundle(tmp)
    return f"bundle:{folder}", np.ones((1, 12, 16), np.float32), (1.0, 1.0)


def _nnunet_example(tmp: Path) -> tuple[str, np.ndarray, tuple[float, ...]]:
    pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (.ci/install-nnunet installs it, --no-deps)")
    model = make_model_folder(tmp, folds=1)
    image = read_image(write_case(tmp / "imagesTs"))
    return f"nnunet:{model}", image.array, tuple(image.spacing)


#: scheme -> function(tmp_path) -> (spec, an image it can predict, its spacing)
EXAMPLES = {
    "run": _run_example,
    "torchscript": _torchscript_example,
    "state_dict": _state_dict_example,
    "nnunet": _nnunet_example,
    "bundle": _bundle_example,
}


def test_every_scheme_has_an_example():
    assert set(PREDICTORS.names()) <= set(EXAMPLES), "add a contract example for each registered predictor scheme"


@pytest.fixture(scope="module", params=sorted(EXAMPLES))
def example(request, tmp_path_factory):
    spec, image, spacing = EXAMPLES[request.param](tmp_path_factory.mktemp(request.param))
    return load_predictor(spec, device="cpu"), image, spacing


def test_it_is_a_predictor_with_a_consistent_info(example):
    predictor, image, _ = example
    assert isinstance(predictor, Predictor)
    info = predictor.info
    assert isinstance(info, PredictorInfo) and info.num_classes >= 2 and info.classes[0]
    assert info.in_channels == image.shape[0] and info.spatial_dims == image.ndim - 1


def test_predict_returns_one_normalised_cpu_float32_case(example):
    predictor, image, spacing = example
    pred = predictor.predict(image, spacing)
    assert pred.batch_size == 1 and pred.num_classes == predictor.info.num_classes
    assert tuple(pred.spatial_shape) == tuple(image.shape[1:])
    assert pred.probs.dtype == torch.float32 and pred.probs.device.type == "cpu"
    torch.testing.assert_close(pred.probs.sum(2), torch.ones_like(pred.probs.sum(2)), atol=1e-5, rtol=0)
    if predictor.info.num_samples is not None:
        assert pred.num_samples == predictor.info.num_samples


def test_predict_is_reproducible_and_accepts_torch(example):
    predictor, image, spacing = example
    a = predictor.predict(image, spacing)
    predictor.predict(np.flip(image, -1).copy(), spacing)  # something else in between
    b = predictor.predict(torch.from_numpy(np.asarray(image)), spacing)
    torch.testing.assert_close(a.probs, b.probs)


def test_bad_images_get_a_clear_error(example):
    predictor, image, spacing = example
    with pytest.raises(DataError, match="channels"):
        predictor.predict(np.concatenate([image, image]), spacing)
    with pytest.raises(DataError, match="D images"):
        predictor.predict(image[0], spacing)
    bad = image.copy()
    bad.flat[3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        predictor.predict(bad, spacing)


def test_specs():
    assert split_spec("run:a/b") == ("run", "a/b") and split_spec("a/b") == ("run", "a/b")
    assert split_spec("C:/runs/x") == ("run", "C:/runs/x")  # a drive letter is not a scheme
    with pytest.raises(DataError, match="run.json"):
        load_predictor("run:/nonexistent/run", device="cpu")
    with pytest.raises(UnknownNameError, match="did you mean"):
        PREDICTORS.get("rnu")
