"""Importers on small fixtures of each source layout, and on ../shared/data when present."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from trustseg.cli.main import main
from trustseg.core.errors import ConfigError, DataError, UnknownNameError
from trustseg.data.dataset import load_dataset
from trustseg.data.importers import IMPORTERS, import_dataset
from trustseg.data.io import write_image, write_label

RNG = np.random.default_rng(0)


def _png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


def _nii(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.diag([0.8, 0.9, 1.0, 1.0])), str(path))


def _lidc_fixture(root, patients=("0001", "0002", "0003", "0004", "0005"), nodules=2, slices=3, size=8):
    """LIDC-IDRI-slices/LIDC-IDRI-XXXX/nodule-N/{images,mask-0..3}/slice-S.png; returns the expected arrays."""
    expected = {}
    for p in patients:
        for n in range(nodules):
            for s in range(slices):
                img = RNG.integers(0, 256, (size, size))
                masks = RNG.integers(0, 2, (4, size, size)) * 255
                masks[3] = 0  # a radiologist who did not outline the nodule
                nod = root / f"LIDC-IDRI-{p}" / f"nodule-{n}"
                _png(nod / "images" / f"slice-{s}.png", img)
                for r in range(4):
                    _png(nod / f"mask-{r}" / f"slice-{s}.png", masks[r])
                expected[f"LIDC-IDRI-{p}_n{n}_s{s}"] = (img, masks // 255)
    return expected


def test_registry_and_option_errors(tmp_path):
    assert IMPORTERS.names() == ["folder", "lidc", "nnunet", "qubiq"]
    with pytest.raises(UnknownNameError, match="did you mean 'qubiq'"):
        import_dataset("qubik", tmp_path, tmp_path / "out")
    with pytest.raises(ConfigError, match="did you mean 'limit_patients'"):
        import_dataset("lidc", tmp_path, tmp_path / "out", limit_patient=3)
    with pytest.raises(ConfigError, match="option 'test_patients' expects int, got 'many'"):
        import_dataset("lidc", tmp_path, tmp_path / "out", test_patients="many")
    with pytest.raises(DataError, match="nowhere: source folder not found"):
        import_dataset("lidc", tmp_path / "nowhere", tmp_path / "out")


def test_lidc_fixture_from_parent_folder(tmp_path):
    expected = _lidc_fixture(tmp_path / "src" / "LIDC-IDRI-slices")
    nod = tmp_path / "src" / "LIDC-IDRI-slices" / "LIDC-IDRI-0001" / "nodule-0"
    for sub in ["images"] + [f"mask-{r}" for r in range(4)]:  # slice numbers sort numerically: 2 < 10
        (nod / sub / "slice-10.png").write_bytes((nod / sub / "slice-0.png").read_bytes())
    out = import_dataset("lidc", tmp_path / "src", tmp_path / "ds", limit_patients=4, seed=0)
    ds = load_dataset(out)
    assert ds.ids[2:4] == ["LIDC-IDRI-0001_n0_s2", "LIDC-IDRI-0001_n0_s10"]
    np.testing.assert_array_equal(ds["LIDC-IDRI-0001_n0_s10"].labels, expected["LIDC-IDRI-0001_n0_s0"][1])
    assert (ds.num_classes, ds.classes, ds.raters, ds.spatial_dims, ds.file_ext) == (
        2,
        ["background", "nodule"],
        ["rater0", "rater1", "rater2", "rater3"],
        2,
        ".png",
    )
    assert len(ds) == 4 * 2 * 3 + 1
    assert ds.ids[:3] == ["LIDC-IDRI-0001_n0_s0", "LIDC-IDRI-0001_n0_s1", "LIDC-IDRI-0001_n0_s2"]
    c = ds["LIDC-IDRI-0002_n1_s2"]
    img, masks = expected[c.case_id]
    np.testing.assert_array_equal(c.image[0], img)
    np.testing.assert_array_equal(c.labels, masks)
    assert c.group == "LIDC-IDRI-0002"
    # 4 patients: the last 4 // 5 = 0 are test; train/val by patient
    assert ds.split("test") == []
    groups = dict(zip(ds.ids, ds.groups))
    assert not {groups[i] for i in ds.split("train")} & {groups[i] for i in ds.split("val")}


def test_lidc_test_patients_and_missing_mask(tmp_path):
    _lidc_fixture(tmp_path / "LIDC-IDRI-slices", patients=[f"{i:04d}" for i in range(1, 11)], nodules=1, slices=1)
    src = tmp_path / "LIDC-IDRI-slices"
    ds = load_dataset(import_dataset("lidc", src, tmp_path / "ds", test_patients="60", progress="false"))  # CLI strings
    test_groups = sorted({g for i, g in zip(ds.ids, ds.groups) if i in ds.split("test")})
    assert test_groups == ["LIDC-IDRI-0009", "LIDC-IDRI-0010"]  # min(60, 10 // 5) = 2 last patients
    (tmp_path / "LIDC-IDRI-slices" / "LIDC-IDRI-0003" / "nodule-0" / "mask-2" / "slice-0.png").unlink()
    with pytest.raises(DataError, match=r"LIDC-IDRI-0003/nodule-0/mask-2/slice-0\.png: file not found"):
        import_dataset("lidc", tmp_path / "LIDC-IDRI-slices", tmp_path / "ds", overwrite=True)
    assert len(load_dataset(tmp_path / "ds")) == 10  # the earlier import is intact


def test_qubiq_fixture(tmp_path):
    src = tmp_path / "qubiq" / "brain-growth"
    truth = {}
    for c in (1, 2, 3, 4):
        img = RNG.normal(size=(9, 7)).astype(np.float32)
        segs = RNG.integers(0, 2, (3, 9, 7)).astype(np.uint8)
        _nii(src / f"case{c:02d}" / "image.nii.gz", img)
        for r in range(3):
            _nii(src / f"case{c:02d}" / f"task01_seg{r + 1:02d}.nii.gz", segs[r])
        _nii(src / f"case{c:02d}" / "task02_seg01.nii.gz", segs[0])  # another task: ignored
        truth[f"case{c:02d}"] = (img, segs)
    ds = load_dataset(import_dataset("qubiq", tmp_path / "qubiq", tmp_path / "ds", classes="bg,brain"))
    assert ds.raters == ["seg01", "seg02", "seg03"] and ds.classes == ["bg", "brain"] and len(ds) == 4
    c = ds["case03"]
    np.testing.assert_array_equal(c.image[0], truth["case03"][0])
    np.testing.assert_array_equal(c.labels, truth["case03"][1])
    assert c.spacing == pytest.approx((0.8, 0.9))
    (src / "case02" / "task01_seg03.nii.gz").unlink()
    with pytest.raises(DataError, match=r"case 'case02' \(.*case02\): raters .* \(missing \['seg03'\]\)"):
        import_dataset("qubiq", src, tmp_path / "ds2")
    assert not (tmp_path / "ds2").exists()


@pytest.mark.parametrize("pattern", ["folders", "suffix"])
def test_nnunet_fixture(tmp_path, pattern):
    src = tmp_path / "Dataset001_Toy"
    truth = {}
    for cid in ("toy_001", "toy_002", "toy_003"):
        chans = RNG.normal(size=(2, 5, 6, 4)).astype(np.float32)
        labs = RNG.integers(0, 3, (2, 5, 6, 4)).astype(np.uint8)
        for ch in range(2):
            _nii(src / "imagesTr" / f"{cid}_{ch:04d}.nii.gz", chans[ch])
        for r in range(2):
            folders = pattern == "folders"
            name = f"labelsTr_rater{r + 1}/{cid}.nii.gz" if folders else f"labelsTr/{cid}_rater{r + 1}.nii.gz"
            _nii(src / name, labs[r])
        truth[cid] = (chans, labs)
    if pattern == "folders":
        (src / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1, "tumour": 2}}))
    ds = load_dataset(import_dataset("nnunet", src, tmp_path / "ds"))
    assert ds.name == "Dataset001_Toy" and ds.channels == 2 and ds.spatial_dims == 3
    assert ds.raters == ["rater1", "rater2"]
    named = ["background", "liver", "tumour"] if pattern == "folders" else ["background", "class1", "class2"]
    assert ds.classes == named
    c = ds["toy_002"]
    np.testing.assert_array_equal(c.image, truth["toy_002"][0])
    np.testing.assert_array_equal(c.labels, truth["toy_002"][1])
    assert c.spacing == pytest.approx((0.8, 0.9, 1.0))


def test_nnunet_v1_labels_and_errors(tmp_path):
    src = tmp_path / "Task01"
    _nii(src / "imagesTr" / "a_0000.nii.gz", np.zeros((4, 4, 3), np.float32))
    _nii(src / "labelsTr" / "a.nii.gz", np.ones((4, 4, 3), np.uint8))
    (src / "dataset.json").write_text(json.dumps({"labels": {"0": "background", "1": "organ"}}))
    ds = load_dataset(import_dataset("nnunet", src, tmp_path / "ds"))
    assert ds.classes == ["background", "organ"] and ds.raters == ["rater0"]
    _nii(src / "labelsTr" / "a.nii.gz", np.full((4, 4, 3), 4, np.uint8))
    with pytest.raises(DataError, match=r"case 'a' \(.*a_0000\.nii\.gz\): label values \[4\] outside"):
        import_dataset("nnunet", src, tmp_path / "ds", overwrite=True)
    _nii(src / "imagesTr" / "b_0000.nii.gz", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(DataError, match=r"labelsTr: case 'b' has no rater label"):
        import_dataset("nnunet", src, tmp_path / "ds", overwrite=True)


@pytest.mark.parametrize("pattern", ["case_major", "rater_major", "single"])
def test_folder_fixture(tmp_path, pattern):
    src = tmp_path / "src"
    raters = ["alice", "bob"] if pattern != "single" else ["rater0"]
    truth = {}
    for cid in ("x1", "x2", "x3"):
        img = RNG.integers(0, 256, (10, 11)).astype(np.float32)
        labs = RNG.integers(0, 2, (len(raters), 10, 11))
        write_image(src / "images" / f"{cid}.png", img)
        for r, rater in enumerate(raters):
            rel = {"case_major": f"{cid}/{rater}", "rater_major": f"{rater}/{cid}", "single": cid}[pattern]
            (src / "labels" / rel).parent.mkdir(parents=True, exist_ok=True)
            write_label(src / "labels" / f"{rel}.npy", labs[r])
        truth[cid] = (img, labs)
    ds = load_dataset(import_dataset("folder", src, tmp_path / "ds", classes=["bg", "lesion"]))
    assert ds.raters == raters and ds.classes == ["bg", "lesion"] and ds.file_ext == ".png"
    c = ds["x2"]
    np.testing.assert_array_equal(c.image[0], truth["x2"][0])
    np.testing.assert_array_equal(c.labels, truth["x2"][1])
    # classes from the label values when not given
    assert load_dataset(import_dataset("folder", src, tmp_path / "ds2", ext=".nii.gz")).num_classes == 2


def test_folder_errors(tmp_path):
    src = tmp_path / "src"
    write_image(src / "images" / "a.png", np.zeros((4, 4), np.float32))
    (src / "images" / "b.png").write_bytes(b"garbage")
    write_label(src / "labels" / "a.png", np.zeros((4, 4), np.int64))
    with pytest.raises(DataError, match=r"images/b\.png.*case 'b' has no rater label"):
        import_dataset("folder", src, tmp_path / "ds", classes=["bg", "fg"])
    write_label(src / "labels" / "b.png", np.zeros((4, 5), np.int64))
    with pytest.raises(DataError, match=r"images/b\.png: cannot read"):
        import_dataset("folder", src, tmp_path / "ds", classes=["bg", "fg"])
    write_image(src / "images" / "b.png", np.zeros((4, 4), np.float32))
    with pytest.raises(DataError, match=r"labels/b\.png: label shape \(4, 5\) does not match image \(4, 4\)"):
        import_dataset("folder", src, tmp_path / "ds", classes=["bg", "fg"])
    assert not (tmp_path / "ds").exists()


# ------------------------------------------------------------------------------------------- real data (optional)
@pytest.mark.shared_data
def test_lidc_real_data(lidc_root, tmp_path):
    ds = load_dataset(import_dataset("lidc", lidc_root, tmp_path / "lidc", limit_patients=3))
    assert set(ds.groups) == {"LIDC-IDRI-0001", "LIDC-IDRI-0002", "LIDC-IDRI-0003"}
    assert ds.num_raters == 4 and ds.spatial_dims == 2 and ds.channels == 1
    c = ds[0]
    assert c.image.shape == (1, 128, 128) and c.labels.shape == (4, 128, 128)
    assert set(np.unique(c.labels)) <= {0, 1} and c.labels.sum() > 0 and 0 <= c.image.min() and c.image.max() <= 255
    raw = np.asarray(Image.open(lidc_root / "LIDC-IDRI-0001" / "nodule-0" / "mask-0" / "slice-0.png"))
    np.testing.assert_array_equal(ds["LIDC-IDRI-0001_n0_s0"].labels[0], raw // 255)


@pytest.mark.shared_data
def test_qubiq_real_data(qubiq_root, tmp_path):
    ds = load_dataset(import_dataset("qubiq", qubiq_root, tmp_path / "qubiq"))
    assert len(ds) == 39 and ds.num_raters == 7 and ds.spatial_dims == 2
    c = ds["case01"]
    assert c.image.shape == (1, 128, 128) and c.labels.shape == (7, 128, 128)
    # raters agree closely: soft label takes few values, disagreement is on a thin boundary band
    assert 0 < c.rater_variance(2).mean() < 0.05
    assert sorted(len(ds.split(p)) for p in ("train", "val", "test")) == sorted([27, 6, 6]) and ds.num_folds == 5


def test_folder_group_by_keeps_a_patients_cases_in_one_split_part(tmp_path, capsys):
    src = tmp_path / "src"
    ids = [f"Image_{p:02d}{eye}" for p in range(1, 11) for eye in "LR"]  # left and right eye of 10 patients
    for cid in ids:
        write_image(src / "images" / f"{cid}.png", RNG.integers(0, 256, (6, 6)).astype(np.float32))
        write_label(src / "labels" / f"{cid}.png", RNG.integers(0, 2, (6, 6)))
    out = tmp_path / "ds"
    assert main(["import", "folder", str(src), "--out", str(out), "--group-by", r"Image_(\d+)"]) == 0
    ds = load_dataset(out)
    groups = dict(zip(ds.ids, ds.groups))
    assert groups["Image_03L"] == groups["Image_03R"] == "03" and len(set(groups.values())) == 10
    part_of = {cid: part for part in ("train", "val", "test") for cid in ds.split(part)}
    for p in range(1, 11):
        assert part_of[f"Image_{p:02d}L"] == part_of[f"Image_{p:02d}R"]
    for k in range(ds.num_folds):
        _, val = ds.fold(k)
        assert all((cid[:-1] + ("R" if cid.endswith("L") else "L")) in val for cid in val)
    assert load_dataset(import_dataset("folder", src, tmp_path / "ds2")).groups[0] == "Image_01L"  # default
    with pytest.raises(DataError, match="does not match --group-by"):
        import_dataset("folder", src, tmp_path / "ds3", group_by=r"Patient(\d+)")
    assert main(["import", "folder", str(src), "--out", str(tmp_path / "ds4"), "--group-by", "("]) == 2
    assert "not a regular expression" in capsys.readouterr().err
