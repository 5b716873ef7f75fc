"""The predict writer's slab-by-slab files and the in-place normalisation (issue 11, F7): the same numbers as
the whole-volume computation, written without the whole-volume temporaries."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from tests.engine.test_train import make_data, tiny_cfg
from trustseg.engine.npy_stream import slab_slices, write_npy_slabs
from trustseg.engine.predict import predict_folder
from trustseg.engine.train import train
from trustseg.inference.predictor import load_predictor
from trustseg.measures.pixel import compute_measures


@pytest.fixture(scope="module")
def run3d_mc(tmp_path_factory):
    """An MC-dropout run (M = 2) trained 1 epoch on 16³ volumes with an 8³ patch (sliding window at 16³)."""
    tmp = tmp_path_factory.mktemp("stream")
    root = make_data(tmp, dims=3, cases=4, size=16)
    cfg = tiny_cfg(root, "mc-dropout", {"samples": 2}, epochs=1, dropout=0.3, batch_size=2, patch_size=(8, 8, 8))
    train(cfg, tmp / "run", progress=False)
    return tmp / "run"


def test_slabbed_npy_is_byte_identical_to_np_save(tmp_path):
    a = np.random.default_rng(0).random((3, 5, 4, 2)).astype(np.float16)
    pieces = (a[k, sl] for k in range(3) for sl in slab_slices(a.shape[1:], slab_voxels=16))  # 2 rows a slab
    write_npy_slabs(tmp_path / "a.npy", a.shape, a.dtype, pieces)
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    assert (tmp_path / "a.npy").read_bytes() == buf.getvalue()
    assert [s.stop - s.start for s in slab_slices((5, 4, 2), 16)] == [2, 2, 1]


def test_slabbed_npy_with_missing_values_leaves_no_file(tmp_path):
    with pytest.raises(ValueError, match="6 values written, the shape"):
        write_npy_slabs(tmp_path / "a.npy", (2, 4), np.float32, [np.zeros((1, 4)), np.zeros((1, 2))])
    assert not list(tmp_path.iterdir())


def test_streamed_3d_files_equal_the_whole_volume_computation(run3d_mc, tmp_path):
    vol = np.random.default_rng(1).standard_normal((1, 16, 12, 10)).astype(np.float32)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "v.npy", vol)
    predictor = load_predictor(run3d_mc, "cpu")
    ref = predictor.predict(vol.copy())
    assert ref.probs.shape == (2, 1, 3, 16, 12, 10)
    out = predict_folder(predictor, tmp_path / "in", tmp_path / "out", progress=False, save_samples=True)
    mean = ref.mean()[0].numpy()
    np.testing.assert_array_equal(np.load(out / "v_probs.npy"), mean)
    np.testing.assert_array_equal(np.load(out / "v_seg.npy"), mean.argmax(0).astype(np.uint8))
    np.testing.assert_array_equal(np.load(out / "v_samples.npy"), ref.probs[:, 0].numpy().astype(np.float16))
    index = json.loads((out / "predictions.json").read_text())
    assert set(index["measures"]) >= {"entropy", "mi"}
    maps = compute_measures(ref, index["measures"])
    with open(out / "summary.csv") as fh:
        header, row = (line.strip().split(",") for line in fh.readlines()[:2])
    summary = dict(zip(header, row))
    for name in index["measures"]:
        got = np.load(out / f"v_{name}.npy")
        assert got.dtype == np.float32 and got.shape == (16, 12, 10)
        torch.testing.assert_close(torch.from_numpy(got), maps[name][0].float(), rtol=0, atol=1e-6)
        key = next(k for k in summary if k.startswith("mean_") and k.endswith(name))
        assert abs(float(summary[key]) - float(got.mean(dtype=np.float64))) < 1e-6 or "one_minus" in key
    half = predict_folder(predictor, tmp_path / "in", tmp_path / "out16", progress=False, dtype="float16")
    np.testing.assert_array_equal(np.load(half / "v_probs.npy"), mean.astype(np.float16))


def test_consuming_prediction_normalises_in_place_with_the_same_result(run3d_mc, tmp_path):
    predictor = load_predictor(run3d_mc, "cpu")
    vol = np.random.default_rng(2).standard_normal((1, 16, 16, 9)).astype(np.float32) * 3 + 5
    ref = predictor.predict(vol.copy())
    mine = vol.copy()
    got = predictor.predict_consuming(mine)
    torch.testing.assert_close(got.probs, ref.probs, rtol=0, atol=0)
    np.testing.assert_array_equal(mine, predictor.prepare(vol).numpy())  # its memory now holds the network input
    np.save(tmp_path / "m.npy", vol)
    mapped = np.load(tmp_path / "m.npy", mmap_mode="r+")  # file-backed: copied, the file left as it was
    torch.testing.assert_close(predictor.predict_consuming(mapped[:]).probs, ref.probs, rtol=0, atol=0)
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), vol)


def test_predict_folder_without_qc_gives_the_same_files_as_predict(run3d_mc, tmp_path):
    vol = np.random.default_rng(3).standard_normal((1, 16, 12, 10)).astype(np.float32)
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "v.npy", vol)
    predictor = load_predictor(run3d_mc, "cpu")
    out = predict_folder(predictor, tmp_path / "in", tmp_path / "out", progress=False)
    assert np.array_equal(np.load(tmp_path / "in" / "v.npy"), vol)  # the input file is never written
    np.testing.assert_array_equal(np.load(out / "v_probs.npy"), predictor.predict(vol).mean()[0].numpy())
