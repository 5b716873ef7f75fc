"""`trustseg import folder` on the layouts users have: templates, the source's split, masks, resampling, and
refusals that name the option that fixes them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from trustseg.cli.main import main
from trustseg.core.errors import ConfigError, DataError
from trustseg.data.dataset import load_dataset
from trustseg.data.importers import import_dataset
from trustseg.data.importers.templates import Template
from trustseg.data.io import read_image, write_image, write_label

RNG = np.random.default_rng(0)
RETINAL = ("Image_01L", "Image_01R", "Image_02L", "Image_02R")


def _save(path, arr, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr, np.uint8)).save(path, **kw)


def _retinal(root, size=8):
    """CHASE-like: {training,test}/images/<id>.jpg, {1st,2nd}_manual/<id>_{1st,2nd}HO.png (0/255),
    mask/<id>_mask.png (0/255); returns id -> (decoded image, labels (2, H, W) 0/1, mask bool)."""
    truth = {}
    for cid in RETINAL:
        split = "training" if cid.startswith("Image_01") else "test"
        img = RNG.integers(0, 256, (size, size, 3))
        _save(root / split / "images" / f"{cid}.jpg", img, quality=90)
        labs = RNG.integers(0, 2, (2, size, size))
        for r, obs in enumerate(("1st", "2nd")):
            _save(root / split / f"{obs}_manual" / f"{cid}_{obs}HO.png", labs[r] * 255)
        mask = np.ones((size, size), bool)
        mask[:2, :] = False  # the dark border outside the field of view
        _save(root / split / "mask" / f"{cid}_mask.png", mask * 255)
        decoded = read_image(root / split / "images" / f"{cid}.jpg").array
        truth[cid] = (decoded, labs, mask)
    return truth


def test_retinal_layout_in_one_command(tmp_path):
    """Two observers, JPEG images, training/test folders, FOV masks, patients with two eyes, resized on import."""
    truth = _retinal(tmp_path / "CHASE")
    out = tmp_path / "ds"
    args = ["import", "folder", str(tmp_path / "CHASE"), "--out", str(out)]
    args += ["--image-pattern", "images/{case}.jpg", "--label-pattern", "{rater}_manual/{case}_{rater}HO.png"]
    args += ["--mask-pattern", "mask/{case}_mask.png", "--group-by", r"Image_(\d+)", "--size", "4,4"]
    assert main(args) == 0
    ds = load_dataset(out)
    assert ds.ids == list(RETINAL) and ds.raters == ["1st", "2nd"] and ds.classes == ["background", "class1"]
    assert ds.file_ext == ".png" and ds.channels == 3  # JPEG images are stored losslessly as PNG
    assert ds.split("train") == ["Image_01L", "Image_01R"] and ds.split("test") == ["Image_02L", "Image_02R"]
    assert ds.split("val") == []  # the training folder holds one patient: no group to carve a val part from
    assert dict(zip(ds.ids, ds.groups)) == {c: c[6:8] for c in RETINAL}
    meta = json.loads((out / "dataset.json").read_text())
    assert [c["mask"] for c in meta["cases"]] == [f"masks/{c}.png" for c in RETINAL]
    for cid in RETINAL:
        img, labs, mask = truth[cid]
        c = ds[cid]
        assert c.spatial_shape == (4, 4) and c.spacing == (2.0, 2.0) and c.origin == (0.5, 0.5)
        # area: 2x2 block means of the decoded JPEG, rounded; nearest: rows/columns 1, 3, 5, 7
        blocks = np.rint(img.reshape(3, 4, 2, 4, 2).mean(axis=(2, 4)))
        np.testing.assert_allclose(c.image, blocks, atol=1e-4)
        np.testing.assert_array_equal(c.labels, labs[:, 1::2, 1::2])
        np.testing.assert_array_equal(c.mask, mask[1::2, 1::2])
        assert c.mask.dtype == bool and c.mask[0].tolist() == [False] * 4 and c.mask[1:].all()


def test_retinal_layout_without_size_keeps_values_and_carves_val_by_group(tmp_path):
    truth = _retinal(tmp_path / "CHASE")
    for extra in ("Image_03L", "Image_03R"):  # a second training patient: val can be carved from train
        for sub, name in (("images", f"{extra}.jpg"), ("1st_manual", f"{extra}_1stHO.png")):
            src = {"images": "Image_01L.jpg", "1st_manual": "Image_01L_1stHO.png"}[sub]
            (tmp_path / "CHASE" / "training" / sub / name).write_bytes(
                (tmp_path / "CHASE" / "training" / sub / src).read_bytes()
            )
        (tmp_path / "CHASE" / "training" / "2nd_manual" / f"{extra}_2ndHO.png").write_bytes(
            (tmp_path / "CHASE" / "training" / "2nd_manual" / "Image_01L_2ndHO.png").read_bytes()
        )
    ds = load_dataset(
        import_dataset(
            "folder",
            tmp_path / "CHASE",
            tmp_path / "ds",
            image_pattern="images/{case}.*",
            label_pattern="{rater}_manual/{case}_{rater}HO.*",
            group_by=r"Image_(\d+)",
            val_fraction=0.5,
        )
    )
    c = ds["Image_02R"]
    np.testing.assert_array_equal(c.image, truth["Image_02R"][0])  # the decoded JPEG pixels, exactly
    np.testing.assert_array_equal(c.labels, truth["Image_02R"][1])
    assert c.mask is None and c.spacing == (1.0, 1.0)
    assert ds.split("test") == ["Image_02L", "Image_02R"]
    train, val = ds.split("train"), ds.split("val")
    assert sorted(train + val) == ["Image_01L", "Image_01R", "Image_03L", "Image_03R"]
    assert len(train) == len(val) == 2 and train[0][6:8] == train[1][6:8]  # one patient each, never split


@pytest.mark.parametrize(
    "layout",
    ["train_val_test", "nnunet", "named"],
)
def test_source_split_folders(tmp_path, layout):
    src = tmp_path / "src"
    where = {
        "train_val_test": {"a": "train/images/a.png", "b": "val/images/b.png", "c": "test/images/c.png"},
        "nnunet": {"a": "imagesTr/a.png", "b": "imagesTr/b.png", "c": "imagesTs/c.png"},
        "named": {"a": "fold_A/images/a.png", "b": "fold_B/images/b.png", "c": "fold_C/images/c.png"},
    }[layout]
    for rel in where.values():
        write_image(src / rel, RNG.integers(0, 256, (4, 4)).astype(np.float32))
        lab_rel = rel.replace("images", "labels")
        write_label(src / lab_rel, np.eye(4, dtype=np.int64))
    opts = {"split_dirs": "fold_A=train,fold_B=val,fold_C=test"} if layout == "named" else {}
    ds = load_dataset(import_dataset("folder", src, tmp_path / "ds", **opts))
    expect_val = [] if layout == "nnunet" else ["b"]  # nnunet: a single-case train part cannot lose a val case
    if layout == "nnunet":
        assert sorted(ds.split("train") + ds.split("val")) == ["a", "b"] and len(ds.split("val")) == 1
    else:
        assert (ds.split("train"), ds.split("val")) == (["a"], expect_val)
    assert ds.split("test") == ["c"] and ds.raters == ["rater0"]
    # read as one unsplit folder: --split-dirs none (needs the images/ folder at the top)
    if layout == "train_val_test":
        with pytest.raises(DataError, match=r"no images/ folder; .*--image-pattern"):
            import_dataset("folder", src, tmp_path / "ds2", split_dirs="none")
        flat = load_dataset(
            import_dataset(
                "folder",
                src,
                tmp_path / "ds3",
                split_dirs="none",
                image_pattern="*/images/{case}.png",
                label_pattern="*/labels/{case}.png",
            )
        )
        assert flat.ids == ["c", "a", "b"]  # sorted by path: test/, train/, val/


def test_label_pattern_case_major_rater_files_and_templates():
    t = Template("labels/{case}/{rater}.nii.gz", "--label-pattern", ("case", "rater"))
    assert t.match("labels/x1/alice.nii.gz") == {"case": "x1", "rater": "alice"}
    assert t.match("labels/x1/sub/alice.nii.gz") is None
    t = Template("{case}_{rater}.*", "--label-pattern", ("case", "rater"))
    assert t.match("Image_01_x_1st.png", cases=["Image_01", "Image_01_x"]) == {"case": "Image_01_x", "rater": "1st"}
    assert t.match("Image_01_1st.nii.gz", cases=["Image_01", "Image_01_x"]) == {"case": "Image_01", "rater": "1st"}
    assert t.match("Image_01_1st.txt", cases=["Image_01"]) is None  # .* = an extension trustseg reads
    assert Template("**/img_{case}.png", "--image-pattern").match("a/b/img_7.png") == {"case": "7"}
    with pytest.raises(ConfigError, match=r"--label-pattern 'l/\{id\}\.png': unknown placeholder \{id\}"):
        Template("l/{id}.png", "--label-pattern", ("case", "rater"))
    with pytest.raises(ConfigError, match=r"must contain \{case\}"):
        Template("images/*.png", "--image-pattern")
    with pytest.raises(ConfigError, match="relative to the source folder"):
        Template("../x/{case}.png", "--image-pattern")


def test_label_pattern_missing_rater_names_case_rater_and_path(tmp_path):
    src = tmp_path / "src"
    for cid in ("a", "b"):
        write_image(src / "images" / f"{cid}.png", np.zeros((4, 4), np.float32))
        for r in ("r1", "r2"):
            if (cid, r) != ("b", "r2"):
                write_label(src / "labels" / f"{cid}" / f"{r}.png", np.ones((4, 4), np.int64))
    with pytest.raises(DataError, match=r"case 'b' has no label of rater 'r2': expected .*labels/b/r2\.\* "):
        import_dataset("folder", src, tmp_path / "ds", label_pattern="labels/{case}/{rater}.*")
    write_label(src / "labels" / "b" / "r2.png", np.ones((4, 4), np.int64))
    ds = load_dataset(import_dataset("folder", src, tmp_path / "ds", label_pattern="labels/{case}/{rater}.*"))
    assert ds.raters == ["r1", "r2"] and ds["b"].labels.tolist() == np.ones((2, 4, 4)).tolist()


def test_mask_pattern_refusals(tmp_path):
    src = tmp_path / "src"
    write_image(src / "images" / "a.png", np.zeros((4, 4), np.float32))
    write_label(src / "labels" / "a.png", np.ones((4, 4), np.int64))
    with pytest.raises(DataError, match=r"case 'a' has no mask: expected fov/a\.png \(from --mask-pattern"):
        import_dataset("folder", src, tmp_path / "ds", mask_pattern="fov/{case}.png")
    write_label(src / "fov" / "a.png", np.zeros((4, 4), np.int64))
    with pytest.raises(DataError, match=r"fov/a\.png: the field-of-view mask is empty"):
        import_dataset("folder", src, tmp_path / "ds", mask_pattern="fov/{case}.png")
    write_label(src / "fov" / "a.png", np.ones((4, 5), np.int64))
    with pytest.raises(DataError, match=r"fov/a\.png: mask shape \(4, 5\) does not match image \(4, 4\)"):
        import_dataset("folder", src, tmp_path / "ds", mask_pattern="fov/{case}.png")
    assert not (tmp_path / "ds").exists()


def test_refusals_name_the_fixing_option(tmp_path):
    src = tmp_path / "src"
    write_image(src / "img" / "a.png", np.zeros((4, 4), np.float32))
    with pytest.raises(DataError, match="no images/ folder; .*--image-pattern"):
        import_dataset("folder", src, tmp_path / "ds")
    with pytest.raises(DataError, match="no labels/ folder; .*--label-pattern"):
        import_dataset("folder", src, tmp_path / "ds", image_pattern="img/{case}.png")
    write_label(src / "seg" / "a_gt.png", np.ones((4, 4), np.int64))
    (src / "labels").mkdir()
    with pytest.raises(DataError, match=r"img/a\.png: case 'a' has no rater label.*pass --label-pattern"):
        import_dataset("folder", src, tmp_path / "ds", image_pattern="img/{case}.png")
    with pytest.raises(DataError, match=r"no images match --image-pattern 'img/\{case\}\.jpg'"):
        import_dataset("folder", src, tmp_path / "ds", image_pattern="img/{case}.jpg")
    write_image(src / "img" / "a.tif", np.zeros((4, 4), np.float32))
    with pytest.raises(DataError, match=r"two files for case 'a' .*--image-pattern .*'img/\{case\}\.(png|tif)'"):
        import_dataset("folder", src, tmp_path / "ds", image_pattern="img/{case}.*")
    ok = {"image_pattern": "img/{case}.png", "label_pattern": "seg/{case}_gt.png"}
    with pytest.raises(ConfigError, match=r"--opt ext=\.png"):
        import_dataset("folder", src, tmp_path / "ds", ext=".jpg", **ok)
    with pytest.raises(ConfigError, match=r"'\.bmp' is not a file type trustseg writes; pass --opt ext="):
        import_dataset("folder", src, tmp_path / "ds", ext="bmp", **ok)
    with pytest.raises(ConfigError, match="either --size or --spacing"):
        import_dataset("folder", src, tmp_path / "ds", size="2,2", spacing="1,1", **ok)
    with pytest.raises(ConfigError, match="--spacing has 3 values but the images have 2 spatial axes"):
        import_dataset("folder", src, tmp_path / "ds", spacing="1,1,1", **ok)
    with pytest.raises(ConfigError, match="unknown part 'tets'; did you mean 'test'"):
        import_dataset("folder", src, tmp_path / "ds", split_dirs="img=train,seg=tets", **ok)
    with pytest.raises(DataError, match=r"--split-dirs names 'training', which is not a folder here"):
        import_dataset("folder", src, tmp_path / "ds", split_dirs="training=train", **ok)
    assert load_dataset(import_dataset("folder", src, tmp_path / "ds", **ok)).ids == ["a"]


def test_split_refusals(tmp_path):
    src = tmp_path / "src"
    for split, cid in (("train", "p1_a"), ("training", "p2_a"), ("test", "p1_b")):
        write_image(src / split / "images" / f"{cid}.png", np.zeros((4, 4), np.float32))
        write_label(src / split / "labels" / f"{cid}.png", np.ones((4, 4), np.int64))
    with pytest.raises(DataError, match=r"name one part twice; .*--split-dirs training=train,test=test"):
        import_dataset("folder", src, tmp_path / "ds")
    with pytest.raises(DataError, match=r"group 'p1' has cases in the source's train and test .*--group-by"):
        import_dataset("folder", src, tmp_path / "ds", split_dirs="train=train,test=test", group_by=r"(p\d)_")
    write_image(src / "test" / "images" / "p2_a.png", np.zeros((4, 4), np.float32))
    write_label(src / "test" / "labels" / "p2_a.png", np.ones((4, 4), np.int64))
    with pytest.raises(DataError, match=r"case id 'p2_a' is in two split folders"):
        import_dataset("folder", src, tmp_path / "ds", split_dirs="training=train,test=test")


def test_label_values_jpeg_labels_and_binarize(tmp_path):
    src = tmp_path / "src"
    write_image(src / "images" / "a.png", np.zeros((4, 4), np.float32))
    _save(src / "labels" / "a.png", np.array([[0, 254, 255, 255]] * 4))  # a 0/255 mask, resaved with noise
    with pytest.raises(DataError, match=r"labels/a\.png: label values \[0, 254, 255\] would make 256 classes.*"
                       r"--opt binarize=128"):  # fmt: skip
        import_dataset("folder", src, tmp_path / "ds")
    with pytest.raises(DataError, match=r"label values \[254, 255\] outside the classes .*--opt binarize=128"):
        import_dataset("folder", src, tmp_path / "ds", classes=["bg", "fg"])
    ds = load_dataset(import_dataset("folder", src, tmp_path / "ds", binarize=128))
    assert ds.classes == ["background", "class1"] and ds["a"].labels[0].tolist() == [[0, 1, 1, 1]] * 4
    exact = tmp_path / "exact"  # exact 0/255 masks need no option: read as 0/1
    write_image(exact / "images" / "a.png", np.zeros((4, 4), np.float32))
    _save(exact / "labels" / "a.png", np.array([[0, 255, 255, 0]] * 4))
    assert load_dataset(import_dataset("folder", exact, tmp_path / "ds2"))["a"].labels.max() == 1
    (src / "labels" / "a.png").unlink()
    _save(src / "labels" / "a.jpg", np.array([[0, 255, 255, 255]] * 4))
    with pytest.raises(DataError, match=r"labels/a\.jpg: labels stored as JPEG are lossy.*--opt binarize=128"):
        import_dataset("folder", src, tmp_path / "ds3")
    assert main(["import", "folder", str(src), "--out", str(tmp_path / "ds3"), "--opt", "binarize=128"]) == 0
    assert load_dataset(tmp_path / "ds3")["a"].labels[0].tolist() == [[0, 1, 1, 1]] * 4


def test_cli_flags_reach_the_importer_and_refusals_exit_2(tmp_path, capsys):
    src = tmp_path / "src"
    write_image(src / "scans" / "a.png", np.arange(16, dtype=np.float32).reshape(4, 4))
    write_label(src / "gt" / "a_r1.png", np.eye(4, dtype=np.int64))
    base = ["import", "folder", str(src), "--image-pattern", "scans/{case}.png"]
    assert main([*base, "--out", str(tmp_path / "x"), "--label-pattern", "gt/{case}_{rater}.png", "--size", "4"]) == 2
    assert "--size needs 2 (H,W) or 3" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "x")]) == 2
    assert "--label-pattern" in capsys.readouterr().err
    ok = [*base, "--out", str(tmp_path / "ds"), "--label-pattern", "gt/{case}_{rater}.png", "--spacing", "2,0.5"]
    assert main(ok) == 0
    c = load_dataset(tmp_path / "ds")["a"]
    assert c.spatial_shape == (2, 8) and c.spacing == (2.0, 0.5) and load_dataset(tmp_path / "ds").raters == ["r1"]
    assert main([*ok[:-2], "--size", "2,2", "--overwrite"]) == 0
    assert load_dataset(tmp_path / "ds")["a"].image[0].tolist() == [[2.0, 4.0], [10.0, 12.0]]


def test_drive_like_gif_labels_and_masks(tmp_path):
    """DRIVE as published: {training,test}/images/21_training.tif, 1st_manual/21_manual1.gif,
    mask/21_training_mask.gif. GIF is read (0/255 -> 0/1) for labels and masks; the case id is the number."""
    src = tmp_path / "DRIVE"
    truth = {}
    for split, num in (("training", "21"), ("test", "01")):
        write_image(src / split / "images" / f"{num}_{split}.tif", RNG.integers(0, 256, (3, 6, 6)).astype(np.float32))
        lab = RNG.integers(0, 2, (6, 6))
        _save(src / split / "1st_manual" / f"{num}_manual1.gif", lab * 255)
        mask = np.ones((6, 6), bool)
        mask[0, 0] = False
        _save(src / split / "mask" / f"{num}_{split}_mask.gif", mask * 255)
        truth[num] = (lab, mask)
    args = ["import", "folder", str(src), "--out", str(tmp_path / "ds"), "--image-pattern", "images/{case}_*.tif"]
    assert main([*args, "--label-pattern", "1st_manual/*_manual1.gif"]) == 2  # {case} is required
    args += ["--label-pattern", "1st_manual/{case}_manual1.gif", "--mask-pattern", "mask/{case}_*_mask.gif"]
    assert main(args) == 0
    ds = load_dataset(tmp_path / "ds")
    assert ds.split("train") == ["21"] and ds.split("test") == ["01"] and ds.raters == ["rater0"]
    for num, (lab, mask) in truth.items():
        np.testing.assert_array_equal(ds[num].labels[0], lab)
        np.testing.assert_array_equal(ds[num].mask, mask)
    assert ds.file_ext == ".tif" and ds.channels == 3


def test_colour_labels_and_unstorable_images_name_the_fix(tmp_path):
    src = tmp_path / "src"
    write_image(src / "images" / "a.png", np.zeros((4, 4), np.float32))
    _save(src / "labels" / "a.png", np.stack([np.eye(4) * 255, np.zeros((4, 4)), np.zeros((4, 4))], -1))
    with pytest.raises(DataError, match=r"labels/a\.png: a label map must have one channel.*colour-coded.*grayscale"):
        import_dataset("folder", src, tmp_path / "ds")
    write_image(src / "images" / "a.nii.gz", np.full((4, 4), 0.5, np.float32))
    (src / "images" / "a.png").unlink()
    write_label(src / "labels" / "a.png", np.eye(4, dtype=np.int64))
    with pytest.raises(DataError, match=r"cannot store the image as \.png: .*--opt ext=\.nii\.gz"):
        import_dataset("folder", src, tmp_path / "ds", ext=".png")
    assert load_dataset(import_dataset("folder", src, tmp_path / "ds")).file_ext == ".nii.gz"
