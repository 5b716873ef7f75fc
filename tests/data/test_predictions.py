"""Reading a prediction folder back: index, maps (npy and NIfTI), cases by role, errors naming the file."""

import json

import numpy as np
import pytest

from trustseg.core.errors import DataError
from trustseg.data.io import write_image, write_label
from trustseg.data.predictions import case_files, index_path, load_prediction, read_index, read_map


def _folder(tmp_path):
    seg = np.array([[0, 1], [1, 1]], np.int64)
    probs = np.stack([1.0 - seg, seg * 1.0]).astype(np.float32)
    write_label(tmp_path / "a_seg.png", seg)
    np.save(tmp_path / "a_probs.npy", probs)
    write_image(tmp_path / "a_entropy.nii.gz", np.full((1, 2, 2), 0.5, np.float32), spatial_dims=2)
    files = {"seg": "a_seg.png", "probs": "a_probs.npy", "measures": {"entropy": "a_entropy.nii.gz"}}
    index = {"method": "m", "classes": ["bg", "fg"], "cases": [{"id": "a", "shape": [2, 2], "files": files}]}
    index_path(tmp_path).write_text(json.dumps(index))
    return seg, probs


def test_load_prediction_reads_every_file(tmp_path):
    seg, probs = _folder(tmp_path)
    pred = load_prediction(tmp_path, "a")
    np.testing.assert_array_equal(pred["seg"], seg)
    np.testing.assert_array_equal(pred["probs"], probs)
    assert pred["maps"]["entropy"].shape == (2, 2) and pred["maps"]["entropy"].dtype == np.float32
    assert pred["samples"] is None and load_prediction(tmp_path, "a", seg=False)["seg"] is None
    entry = read_index(tmp_path)["cases"][0]
    assert case_files(tmp_path, entry) == {
        "seg": tmp_path / "a_seg.png",
        "probs": tmp_path / "a_probs.npy",
        "map:entropy": tmp_path / "a_entropy.nii.gz",
    }
    np.testing.assert_array_equal(read_map(tmp_path / "a_probs.npy"), probs)


def test_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not a prediction folder"):
        read_index(tmp_path)
    _folder(tmp_path)
    with pytest.raises(DataError, match=r"predictions\.json: case 'zz' is not in this prediction folder"):
        load_prediction(tmp_path, "zz")
    (tmp_path / "bad.npy").write_text("not numpy")
    with pytest.raises(DataError, match=r"bad\.npy: cannot read map"):
        read_map(tmp_path / "bad.npy")
    index_path(tmp_path).write_text("{")
    with pytest.raises(DataError, match="cannot parse predictions.json"):
        read_index(tmp_path)
