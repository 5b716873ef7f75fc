"""OOD and noise protocols: planted signals with a stub predictor, and agreement with `trustseg evaluate`."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from tests.engine.test_train import make_data, tiny_cfg
from trustseg.core.errors import ConfigError
from trustseg.core.predictive import Predictive
from trustseg.data.dataset import load_dataset
from trustseg.engine.predict import predict_folder
from trustseg.engine.run import train
from trustseg.evaluation.evaluate import evaluate_predictions
from trustseg.evaluation.robustness import NoiseConfig, OODConfig, noise_protocol, ood_detection
from trustseg.inference.predictor import Predictor, PredictorInfo
from trustseg.inference.run_predictor import RunPredictor


@dataclasses.dataclass
class FakeCase:
    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, ...] = (1.0, 1.0)


class DistanceStub:
    """Predicts a fixed square; its uncertainty grows with the distance of the image to the nearest clean image.

    So every distorted copy is more uncertain than every clean image: every uncertainty score separates them
    perfectly (AUROC 1, FPR@95 0), and a protocol that swaps clean and distorted gets AUROC 0.
    """

    def __init__(self, clean: list[np.ndarray]):
        self.clean = clean
        self._info = PredictorInfo(classes=("bg", "fg"), in_channels=1, spatial_dims=2, method="stub")

    @property
    def info(self) -> PredictorInfo:
        return self._info

    def predict(self, image, spacing=None) -> Predictive:
        image = np.asarray(image, dtype=np.float64)
        dist = min(float(np.abs(image - c).mean()) for c in self.clean)
        h, w = image.shape[1:]
        fg = torch.zeros(h, w)
        fg[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1
        conf = 0.99 - min(0.45, dist)  # confidence of the predicted class falls with the distance
        p_fg = torch.where(fg > 0, torch.tensor(conf), torch.tensor(1 - conf)).float()
        probs = torch.stack([1 - p_fg, p_fg])[None, None]  # (M=1, B=1, K=2, H, W)
        return Predictive(probs=probs)


def _cases(n: int = 6, size: int = 16) -> list[FakeCase]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        img = rng.normal(0, 1, (1, size, size))
        lab = np.zeros((2, size, size), dtype=np.int64)
        lab[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
        out.append(FakeCase(img, lab))
    return out


def test_stub_is_a_predictor():
    assert isinstance(DistanceStub([]), Predictor)


def test_planted_ood_signal_gives_auroc_one_and_fpr_zero():
    cases = _cases()
    stub = DistanceStub([c.image for c in cases])
    res = ood_detection(stub, cases, OODConfig(distortions=("noise", "contrast"), severities=(2, 5)))
    assert res["clean_dice"] == pytest.approx(1.0)
    assert len(res["results"]) == 4
    for r in res["results"]:
        assert r["scores"], "no score was computed"
        for name, v in r["scores"].items():
            if name.startswith(("entropy", "confidence")):
                assert v["auroc"] == 1.0, (r["distortion"], r["severity"], name)
                assert v["fpr95"] == 0.0, (r["distortion"], r["severity"], name)
    assert res["best"]["noise"]["mean_auroc"] == 1.0


def test_ood_config_validates_before_any_work():
    with pytest.raises(ConfigError, match="severity 7"):
        OODConfig(distortions=("noise",), severities=(7,))
    with pytest.raises(Exception, match="did you mean 'blur'"):
        OODConfig(distortions=("blurr",))


class NoiseStub(DistanceStub):
    """Uncertainty near the square's boundary rises with the mean of the noise added to the image."""

    def predict(self, image, spacing=None) -> Predictive:
        image = np.asarray(image, dtype=np.float64)
        shift = float(image.mean())  # ≈ μ for x + N(μ, σ²) of a zero-mean image
        base = super().predict(self.clean[0]).probs[0, 0, 1]  # the clean square, confident
        h, w = base.shape
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        edge = torch.minimum(
            torch.minimum(yy - h // 4, 3 * h // 4 - 1 - yy), torch.minimum(xx - w // 4, 3 * w // 4 - 1 - xx)
        )
        near = torch.exp(-edge.abs().float())  # 1 on the boundary, falling away from it
        p_fg = torch.where(base > 0.5, 1 - 0.4 * near * shift, 0.4 * near * shift).clamp(1e-6, 1 - 1e-6)
        return Predictive(probs=torch.stack([1 - p_fg, p_fg])[None, None].float())


def test_planted_noise_signal_gives_ur_mu_one():
    cases = _cases(3)
    stub = NoiseStub([np.zeros_like(cases[0].image)])
    res = noise_protocol(stub, cases, NoiseConfig(sigma=0.01))
    assert [r["mu"] for r in res["levels"]] == [0.1, 0.3, 0.5, 0.7, 0.9]
    interp = res["interpretability"]
    assert interp["ur_mu"] == 1.0 and interp["ucc_mu"] == 1.0
    assert interp["ucc_distance"] < 0  # principle 2: nearer the boundary, more uncertainty gained
    assert [r["dice"] for r in res["levels"]] == [1.0] * 5  # the mask itself never changes


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 3-level U-Net (size multiple 4) on 18x18 images: whole-image predictions need padding."""
    tmp = tmp_path_factory.mktemp("robust")
    data = make_data(tmp, cases=8, size=18)
    run = tmp / "run"
    cfg = tiny_cfg(data, "mc-dropout", {"samples": 3}, epochs=1)
    cfg = dataclasses.replace(cfg, net=cfg.net.with_params(channels=(4, 8, 16), dropout=0.2))
    train(cfg, run, progress=False)
    return data, run


def test_clean_ood_numbers_equal_evaluate(trained, tmp_path):
    data, run = trained
    pred = predict_folder(run, data, tmp_path / "pred", split="test", progress=False)
    res = evaluate_predictions(pred, data, tmp_path / "res.json", split="test")
    ds = load_dataset(data)
    cases = [ds[c] for c in res["cases"]]
    predictor = RunPredictor(run)
    ood = ood_detection(predictor, cases, OODConfig(distortions=("blur",), severities=(1,)))
    assert math.isfinite(ood["clean_dice"])
    assert ood["clean_dice"] == pytest.approx(res["summary"]["dice"]["majority"]["mean"], abs=1e-12)
    # the same probabilities as the prediction folder, case by case
    for c in cases:
        saved = np.load(pred / f"{c.case_id}_probs.npy") if (pred / f"{c.case_id}_probs.npy").exists() else None
        if saved is not None:
            np.testing.assert_allclose(predictor.predict(c.image).mean()[0].numpy(), saved, atol=1e-6)
