"""A predictions.json of the wrong shape, or a zero-byte map, is one clear error naming the file (audit F12)."""

from __future__ import annotations

import copy
import json
import shutil

import pytest

from trustseg.core.errors import DataError
from trustseg.data.predictions import load_prediction, read_index

MUTATIONS = {
    "a list": (lambda m: [], "JSON object"),
    "no cases": (lambda m: {k: v for k, v in m.items() if k != "cases"}, "'cases'"),
    "cases an object": (lambda m: {**m, "cases": {}}, "'cases'"),
    "a case without files": (lambda m: _case(m, lambda c: c.pop("files")), "'seg'"),
    "a case without seg": (lambda m: _case(m, lambda c: c["files"].pop("seg")), "'seg'"),
    "a case without id": (lambda m: _case(m, lambda c: c.pop("id")), "'id'"),
    "shape a string": (lambda m: _case(m, lambda c: c.update(shape="x")), "shape"),
    "measures a list": (lambda m: _case(m, lambda c: c["files"].update(measures=["a"])), "measures"),
    "classes an int": (lambda m: {**m, "classes": 3}, "classes"),
}


def _case(m, change):
    change(m["cases"][0])
    return m


@pytest.mark.parametrize("what", sorted(MUTATIONS))
def test_wrong_shapes_are_clear_errors(planted, tmp_path, what):
    index = json.loads((planted["new"] / "predictions.json").read_text())
    change, words = MUTATIONS[what]
    folder = tmp_path / "p"
    folder.mkdir()
    (folder / "predictions.json").write_text(json.dumps(change(copy.deepcopy(index))))
    with pytest.raises(DataError, match=words) as e:
        read_index(folder)
    assert "predictions.json" in str(e.value)


def test_a_zero_byte_map_is_named(planted, tmp_path):
    folder = tmp_path / "p"
    shutil.copytree(planted["new"], folder)
    entry = read_index(folder)["cases"][0]
    (folder / entry["files"]["probs"]).write_bytes(b"")
    with pytest.raises(DataError, match="probs.npy"):
        load_prediction(folder, entry["id"])
