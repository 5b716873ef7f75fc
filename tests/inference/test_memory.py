"""Memory estimate and the clear refusal of a prediction that cannot fit (F7)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trustseg.core.errors import DataError
from trustseg.core.memory import MEMORY_LIMIT_ENV
from trustseg.inference.memory import MemoryNeededError, check_fits, predict_bytes


def test_predict_bytes_known_answers():
    # whole: 4 N (2C + 2F + A) = 4 * 1000 * (2 + 4 + 8)
    assert predict_bytes((10, 10, 10), channels=1, outputs=2, activations=8) == 4 * 1000 * 14
    # sliding: 4 N (2C + F + 2) + 4 P (2C + 2F + A) = 4*1000*6 + 4*8*14
    assert predict_bytes((10, 10, 10), 1, 2, patch=(2, 2, 2), activations=8) == 24000 + 448
    assert predict_bytes((64,) * 3, 1, 6, patch=(16,) * 3) > predict_bytes((64,) * 3, 1, 2, patch=(16,) * 3)


def test_check_fits_names_needed_available_and_what_helps(monkeypatch):
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "100M")
    check_fits(99 * 2**20, "sliding window")
    with pytest.raises(MemoryNeededError, match=r"needs about 2\.00 GB, 100 MB available") as info:
        check_fits(2 * 2**30, "whole image")
    text = str(info.value)
    assert "train.patch_size" in text and "--dtype float16" in text and "samples" in text and "\n" not in text


@pytest.fixture(scope="module")
def run3d(tmp_path_factory):
    from tests.engine.test_train import make_data, tiny_cfg
    from trustseg.engine.train import train

    tmp = tmp_path_factory.mktemp("mem")
    root = make_data(tmp, dims=3, cases=4, size=16)
    train(tiny_cfg(root, epochs=1, patch_size=(16, 16, 16)), tmp / "run", progress=False)
    return tmp / "run", root


def test_predict_refuses_a_volume_over_the_limit_before_allocating(run3d, tmp_path, monkeypatch):
    from trustseg.engine.predict import predict_folder
    from trustseg.inference.run_predictor import RunPredictor

    run, _ = run3d
    p = RunPredictor(run, device="cpu")
    image = np.zeros((1, 24, 20, 16), dtype=np.float32)
    needed = p.memory_needed(image.shape)
    # K = 3 classes, M = 1: sliding estimate with F = 3 outputs per voxel
    assert needed == predict_bytes((24, 20, 16), 1, 3, patch=(16, 16, 16), activations=16)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(needed - 1))
    with pytest.raises(MemoryNeededError, match="sliding window"):
        p.predict(image)
    src = tmp_path / "in"
    src.mkdir()
    np.save(src / "big.npy", image)
    with pytest.raises(
        DataError, match=r"case 'big': predicting this image .* available \(TRUSTSEG_MEMORY_LIMIT\); what helps"
    ):
        predict_folder(p, src, tmp_path / "out", progress=False)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, str(needed))
    assert p.predict(image).probs.shape == (1, 1, 3, 24, 20, 16)


def test_an_allocator_failure_during_predict_is_the_same_clear_error(run3d, tmp_path, monkeypatch):
    from trustseg.engine.predict import predict_folder
    from trustseg.inference.run_predictor import RunPredictor

    run, _ = run3d
    p = RunPredictor(run, device="cpu")
    image = np.zeros((1, 16, 16, 16), dtype=np.float32)
    p.memory_needed(image.shape)  # the probe runs before the failure is injected

    def fail(x: torch.Tensor):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(p, "predict_batch", fail)
    with pytest.raises(MemoryNeededError, match="needs about .* available"):
        p.predict(image)
    src = tmp_path / "in"
    src.mkdir()
    np.save(src / "v.npy", image)
    with pytest.raises(DataError, match="case 'v': .*what helps"):
        predict_folder(p, src, tmp_path / "out", progress=False)
