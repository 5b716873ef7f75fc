"""Field-of-view masks in the dataset layout: written, read back, validated, contained."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from trustseg.core.errors import DataError
from trustseg.data.case import Case
from trustseg.data.dataset import load_dataset, write_dataset


def _cases(n=6, mask=True):
    rng = np.random.default_rng(0)
    fov = np.zeros((8, 8), bool)
    fov[1:7, 2:6] = True
    return [
        Case(
            f"c{i}",
            rng.random((1, 8, 8), dtype=np.float32),
            rng.integers(0, 2, (2, 8, 8)),
            mask=(fov if mask and i % 2 == 0 else None),
        )
        for i in range(n)
    ]


def test_masks_are_written_and_read_back_exactly(tmp_path):
    write_dataset(_cases(), tmp_path / "ds", classes=["bg", "fg"], name="x", ext=".nii.gz")
    meta = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert [c.get("mask") for c in meta["cases"]] == ["masks/c0.nii.gz", None, "masks/c2.nii.gz", None] + [
        "masks/c4.nii.gz",
        None,
    ]
    ds = load_dataset(tmp_path / "ds")
    assert ds.has_masks and not ds.subset(["c1", "c3"]).has_masks
    m = ds["c0"].mask
    assert m.dtype == bool and m.sum() == 24 and m[1:7, 2:6].all()
    assert ds["c1"].mask is None


def test_a_dataset_without_masks_has_no_masks_folder(tmp_path):
    write_dataset(_cases(mask=False), tmp_path / "ds", classes=["bg", "fg"], name="x", ext=".npy")
    assert not (tmp_path / "ds" / "masks").exists()
    assert not load_dataset(tmp_path / "ds").has_masks


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.ones((8, 7), bool), "does not match the image's spatial shape"),
        (np.full((8, 8), 2, np.uint8), "0 (outside) and 1 (inside) only"),
        (np.zeros((8, 8), bool), "mask is empty"),
    ],
)
def test_bad_masks_are_refused_on_write(tmp_path, mask, message):
    cases = _cases()
    cases[0].mask = mask
    with pytest.raises(DataError, match=re.escape(message)):
        write_dataset(cases, tmp_path / "ds", classes=["bg", "fg"], name="x", ext=".nii.gz")


def test_mask_entries_are_checked_and_contained(tmp_path):
    root = tmp_path / "ds"
    write_dataset(_cases(), root, classes=["bg", "fg"], name="x", ext=".nii.gz")
    path = root / "dataset.json"
    meta = json.loads(path.read_text())
    meta["cases"][0]["mask"] = 5
    path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="'mask' must be a file path"):
        load_dataset(root)
    meta["cases"][0]["mask"] = "../outside.nii.gz"
    path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="mask"):
        load_dataset(root)


def test_a_mask_file_that_is_not_binary_is_named_on_read(tmp_path):
    root = tmp_path / "ds"
    write_dataset(_cases(), root, classes=["bg", "fg"], name="x", ext=".npy")
    np.save(root / "masks" / "c0.npy", np.full((8, 8), 3, np.uint8))
    with pytest.raises(DataError, match="c0.npy"):
        load_dataset(root)["c0"]
