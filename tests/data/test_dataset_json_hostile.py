"""A hand-edited dataset.json of the wrong shape gets one clear error naming the file (reliability audit F12/F15),
never a traceback; a dataset.json without ``file_ext`` (hand-made) reads as NIfTI."""

from __future__ import annotations

import copy
import json

import pytest

from trustseg.core.errors import DataError
from trustseg.data.dataset import load_dataset
from trustseg.data.synthetic import SynthConfig, make_synthetic_dataset

MUTATIONS = {
    "classes an int": (lambda m: m.update(classes=3), "classes"),
    "classes a string": (lambda m: m.update(classes="abc"), "classes"),
    "duplicate classes": (lambda m: m.update(classes=["a", "a"]), "distinct"),
    "raters a string": (lambda m: m.update(raters="rater0"), "raters"),
    "spatial_dims a string": (lambda m: m.update(spatial_dims="2"), "spatial_dims"),
    "spatial_dims not the images'": (lambda m: m.update(spatial_dims=3), "spatial axes"),
    "channels not the images'": (lambda m: m.update(channels=2), "C=2"),
    "channels a string": (lambda m: m.update(channels="1"), "channels"),
    "splits a list": (lambda m: m.update(splits=[]), "splits"),
    "kfold a list": (lambda m: m["splits"].update(kfold=[]), "kfold"),
    "folds an int": (lambda m: m["splits"].update(kfold={"k": 1, "folds": 5}), "kfold"),
    "cases an object": (lambda m: m.update(cases={}), "cases"),
    "labels a list": (lambda m: m["cases"][0].update(labels=["x"]), "labels"),
    "image an int": (lambda m: m["cases"][0].update(image=5), "image"),
    "image null": (lambda m: m["cases"][0].update(image=None), "image"),
    "group a list": (lambda m: m["cases"][0].update(group=[1]), "group"),
    "name an int": (lambda m: m.update(name=5), "name"),
    "file_ext an int": (lambda m: m.update(file_ext=5), "file_ext"),
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "d"
    make_synthetic_dataset(root, SynthConfig(cases=6, raters=2, size=16, num_classes=2), ext=".npy")
    return root, json.loads((root / "dataset.json").read_text())


def _write(root, meta, change):
    m = copy.deepcopy(meta)
    change(m)
    (root / "dataset.json").write_text(json.dumps(m))


@pytest.mark.parametrize("what", sorted(MUTATIONS))
def test_wrong_shapes_are_clear_errors(dataset, what):
    root, meta = dataset
    change, words = MUTATIONS[what]
    _write(root, meta, change)
    with pytest.raises(DataError, match=words) as e:
        ds = load_dataset(root)
        for cid in ds.ids:
            ds[cid]
    assert str(root) in str(e.value)


def test_a_dataset_json_without_file_ext_reads_as_nifti(dataset):
    root, meta = dataset
    _write(root, meta, lambda m: m.pop("file_ext"))
    assert load_dataset(root).file_ext == ".nii.gz"
    _write(root, meta, lambda m: None)
    assert load_dataset(root).file_ext == ".npy"
