"""Reading a prediction folder back: index, maps (npy and NIfTI), cases by role, errors naming the file."""

import json

import numpy as np
import pytest

from trustseg.core.errors import DataError
from trustseg.data.io import write_image, write_label
from trustseg.data.predictions import (
    case_files,
    check_complete,
    completeness,
    index_path,
    load_prediction,
    read_index,
    read_map,
)


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


@pytest.mark.parametrize("role", ["seg", "probs", "entropy", "preview", "samples", "symlink"])
def test_files_outside_the_folder_are_refused_unless_allowed(tmp_path, role):
    pred = tmp_path / "pred"
    pred.mkdir()
    seg, probs = _folder(pred)
    outside = tmp_path / "outside"
    outside.mkdir()
    other = np.zeros((2, 2), np.int64)
    write_label(outside / "a_seg.png", other)
    np.save(outside / "a_probs.npy", probs[::-1].copy())
    np.save(outside / "a_samples.npy", probs[None])
    index = json.loads(index_path(pred).read_text())
    files = index["cases"][0]["files"]
    key = {"seg": "seg", "probs": "probs", "samples": "samples"}.get(role)
    if role == "symlink":
        (pred / "a_seg.png").unlink()
        (pred / "a_seg.png").symlink_to(outside / "a_seg.png")
        key, rel = "seg", "a_seg.png"
    elif role == "entropy":
        files["measures"]["entropy"] = rel = str(outside / "a_probs.npy")
    elif role == "preview":
        files["previews"] = {"entropy": (rel := "../outside/a_seg.png")}
    else:
        files[key] = rel = f"../outside/a_{role}.{'png' if role == 'seg' else 'npy'}"
    index_path(pred).write_text(json.dumps(index))
    entry = index["cases"][0]
    calls = [
        lambda **kw: read_index(pred, **kw),
        lambda **kw: load_prediction(pred, "a", **kw),
        lambda **kw: load_prediction(pred, "a", entry=entry, **kw),
        lambda **kw: case_files(pred, entry, **kw),
    ]
    for call in calls:
        with pytest.raises(DataError, match="lies outside") as e:
            call()
        assert e.value.path == index_path(pred) and "case 'a' files[" in e.value.problem
        assert repr(rel) in e.value.problem
        call(allow_outside=True)
    got = load_prediction(pred, "a", allow_outside=True)
    if key == "seg":
        np.testing.assert_array_equal(got["seg"], other)  # the outside file is what was read
    elif key == "probs":
        np.testing.assert_array_equal(got["probs"], probs[::-1])
    elif key == "samples":
        assert got["samples"].shape == (1, 2, 2, 2)


def test_completeness_marker(tmp_path):
    """An index marked incomplete gives (k, n) and is refused naming predictions.json unless partial; an index
    without the marker (written before it existed) counts as complete."""
    _folder(tmp_path)
    legacy = read_index(tmp_path)
    assert completeness(legacy) is None and check_complete(tmp_path, legacy) is None
    index = {**legacy, "complete": False, "expected": ["a", "b", "c"]}
    assert completeness(index) == (1, 3)
    with pytest.raises(DataError, match=r"1 of 3 cases predicted; finish it with trustseg predict --resume") as e:
        check_complete(tmp_path, index)
    assert e.value.path == index_path(tmp_path)
    assert check_complete(tmp_path, index, partial=True) == {"scored": 1, "expected": 3}
    done = {**index, "complete": True}
    assert completeness(done) is None and check_complete(tmp_path, done) is None
    assert completeness({**index, "expected": ["z"]}) == (0, 1)  # a listed case that is not expected is not counted
