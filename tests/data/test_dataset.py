"""The trustseg dataset layout: write/load round trips, splits, views and every bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trustseg.core.errors import DataError
from trustseg.core.lock import exclusive
from trustseg.data.case import Case
from trustseg.data.dataset import load_dataset, write_dataset, writing_lock
from trustseg.data.importers import import_dataset
from trustseg.data.io import read_image, write_image, write_label
from trustseg.data.paths import outside_allowed
from trustseg.data.synthetic import SynthConfig, make_synthetic_dataset
from trustseg.data.validate import check_names, check_unique_ids, validate_case


def _cases(n=8, shape=(12, 10), channels=1, raters=2, k=3, seed=0, groups=None):
    rng = np.random.default_rng(seed)
    return [
        Case(
            f"case{i:02d}",
            rng.normal(size=(channels, *shape)).astype(np.float32),
            rng.integers(0, k, (raters, *shape)),
            spacing=tuple(0.5 + 0.25 * a for a in range(len(shape))),
            origin=tuple(float(i + a) for a in range(len(shape))),
            group=None if groups is None else groups[i],
        )
        for i in range(n)
    ]


@pytest.mark.parametrize(
    ("shape", "channels", "ext"),
    [((12, 10), 1, ".nii.gz"), ((12, 10), 2, ".npz"), ((4, 6, 5), 1, ".nii.gz"), ((12, 10), 1, ".tif")],
)
def test_write_load_round_trip(tmp_path, shape, channels, ext):
    cases = _cases(shape=shape, channels=channels)
    root = write_dataset(cases, tmp_path / "ds", ["bg", "a", "b"], name="toy", ext=ext)
    ds = load_dataset(root)
    assert (ds.name, ds.classes, ds.num_classes, ds.spatial_dims, ds.channels) == (
        "toy",
        ["bg", "a", "b"],
        3,
        len(shape),
        channels,
    )
    assert ds.raters == ["rater0", "rater1"] and ds.num_raters == 2 and len(ds) == 8
    assert ds.ids == [c.case_id for c in cases] and ds.groups == ds.ids
    for i, c in enumerate(cases):
        got = ds[i] if i % 2 else ds[c.case_id]
        np.testing.assert_array_equal(got.image, c.image)
        np.testing.assert_array_equal(got.labels, c.labels)
        assert got.labels.dtype == np.int64 and got.image.dtype == np.float32
        assert got.spacing == pytest.approx(c.spacing) and got.origin == pytest.approx(c.origin)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["format_version"] == 1 and meta["file_ext"] == ext
    assert meta["cases"][0]["labels"]["rater1"] == f"labels/case00/rater1{ext}"
    assert (root / "images" / f"case00{ext}").is_file()


def test_rater_ids_from_meta_splits_folds_and_subset(tmp_path):
    groups = [f"p{i // 3}" for i in range(12)]  # 4 patients of 3 cases
    cases = _cases(n=12, groups=groups)
    for c in cases:
        c.meta["raters"] = ["anna", "ben"]
    ds = load_dataset(write_dataset(cases, tmp_path / "ds", ["bg", "a", "b"], seed=1))
    assert ds.raters == ["anna", "ben"]
    parts = [ds.split(p) for p in ("train", "val", "test")]
    assert sorted(sum(parts, [])) == sorted(ds.ids)
    by_group = dict(zip(ds.ids, ds.groups))
    assert len({frozenset(by_group[i] for i in p) for p in parts if p}) == sum(1 for p in parts if p)
    assert ds.num_folds == len({by_group[i] for i in parts[0] + parts[1]})  # 3 non-test patients -> 3 folds
    for k in range(ds.num_folds):
        train, val = ds.fold(k)
        assert not set(train) & set(val) and not set(val) & set(parts[2])
        assert sorted(train + val) == sorted(parts[0] + parts[1])
    sub = ds.subset(parts[0])
    assert len(sub) == len(parts[0]) and sub.split("test") == [] and sub.split("train") == parts[0]
    np.testing.assert_array_equal(sub[0].labels, ds[parts[0][0]].labels)
    with pytest.raises(DataError, match="unknown split 'tran'; did you mean 'train'"):
        ds.split("tran")
    with pytest.raises(DataError, match="fold 9 out of range"):
        ds.fold(9)
    with pytest.raises(KeyError, match="no case 'case1' in dataset; did you mean 'case"):
        ds["case1"]


def test_given_splits_are_kept_and_checked(tmp_path):
    cases = _cases(n=4)
    fixed = {"train": ["case00", "case01"], "val": ["case02"], "test": ["case03"]}
    ds = load_dataset(write_dataset(cases, tmp_path / "ds", ["bg", "a", "b"], splits={"fixed": fixed}))
    assert ds.split("train") == ["case00", "case01"] and ds.split("test") == ["case03"]
    assert ds.num_folds == 3
    bad = {"fixed": {"train": ["case00"], "val": [], "test": ["case03"]}}
    with pytest.raises(DataError, match="exactly one of train/val/test"):
        write_dataset(cases, tmp_path / "bad", ["bg", "a", "b"], splits=bad)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: setattr(c, "labels", c.labels[:, :5]), r"case 'case03': image/label shape mismatch"),
        (lambda c: c.labels.__setitem__((0, 0, 0), 5), r"case 'case03': label values \[5\] outside .*\[0, 3\)"),
        (lambda c: c.image.__setitem__((0, 1, 1), np.nan), r"case 'case03': image has non-finite intensities \(1 NaN"),
        (lambda c: c.image.__setitem__((0, 1, 1), np.inf), r"case 'case03': image has non-finite .*1 Inf"),
        (lambda c: setattr(c, "labels", c.labels[:0]), r"case 'case03': case has no rater"),
        (lambda c: setattr(c, "case_id", "case01"), r"duplicate case id 'case01'"),
        (lambda c: setattr(c, "labels", c.labels[:1]), r"'case03': raters \['rater0'\] differ .*missing \['rater1'\]"),
        (lambda c: setattr(c, "case_id", "a/b"), r"cannot be used as a file name"),
    ],
)
def test_bad_cases_fail_and_leave_nothing(tmp_path, mutate, message):
    cases = _cases(n=5)
    mutate(cases[3])
    with pytest.raises(DataError, match=message):
        write_dataset(cases, tmp_path / "ds", ["bg", "a", "b"])
    assert list(tmp_path.iterdir()) == []  # no partial dataset, no temporary folder


def test_failing_write_keeps_existing_dataset(tmp_path):
    root = write_dataset(_cases(n=4), tmp_path / "ds", ["bg", "a", "b"], name="old")
    bad = _cases(n=4, seed=1)
    bad[2].labels[0, 0, 0] = 7
    with pytest.raises(DataError, match="outside the declared classes"):
        write_dataset(bad, root, ["bg", "a", "b"], name="new", overwrite=True)
    ds = load_dataset(root)
    assert ds.name == "old" and len(ds) == 4
    np.testing.assert_array_equal(ds[2].labels, _cases(n=4)[2].labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    # and a successful rewrite replaces it as a whole
    write_dataset(_cases(n=2, seed=2), root, ["bg", "a", "b"], name="new", overwrite=True)
    assert load_dataset(root).name == "new" and len(load_dataset(root)) == 2


def test_empty_and_unstorable(tmp_path):
    with pytest.raises(DataError, match="empty dataset"):
        write_dataset([], tmp_path / "ds", ["bg", "fg"])
    with pytest.raises(DataError, match=r"case 'case00': cannot store the image as \.png"):
        write_dataset(_cases(n=2), tmp_path / "ds", ["bg", "a", "b"], ext=".png")
    with pytest.raises(DataError, match="unsupported dataset file extension"):
        write_dataset(_cases(n=2), tmp_path / "ds", ["bg", "a", "b"], ext=".bmp")
    assert list(tmp_path.iterdir()) == []


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"dataset\.json: dataset\.json not found"):
        load_dataset(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match=r"dataset\.json: cannot parse"):
        load_dataset(tmp_path)
    root = write_dataset(_cases(n=4), tmp_path / "ds", ["bg", "a", "b"])
    (root / "labels" / "case02" / "rater1.nii.gz").unlink()
    ds = load_dataset(root)
    with pytest.raises(DataError, match=r"labels/case02/rater1\.nii\.gz: file not found"):
        ds["case02"]
    (root / "images" / "case01.nii.gz").write_bytes(b"\x1f\x8b truncated")
    with pytest.raises(DataError, match=r"images/case01\.nii\.gz: cannot read"):
        ds[1]
    meta = json.loads((root / "dataset.json").read_text())
    meta["cases"].append(dict(meta["cases"][0]))
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"dataset\.json: duplicate case ids: 'case00'"):
        load_dataset(root)
    meta["cases"] = []
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"dataset\.json: empty dataset"):
        load_dataset(root)


def test_label_outside_classes_on_read(tmp_path):
    root = write_dataset(_cases(n=3), tmp_path / "ds", ["bg", "a", "b"])
    meta = json.loads((root / "dataset.json").read_text())
    meta["classes"] = ["bg", "a"]  # files hold class 2
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"labels/case00/rater\d\.nii\.gz: label values \[2\] outside"):
        load_dataset(root)[0]


def test_validate_helpers_directly():
    c = _cases(n=1)[0]
    validate_case(c, 3)
    with pytest.raises(DataError, match="img.png: label values"):
        validate_case(c, 2, source="img.png")
    with pytest.raises(DataError, match="duplicate case ids: 'a'"):
        check_unique_ids(["a", "b", "a"], "x")
    with pytest.raises(DataError, match="empty dataset"):
        check_unique_ids([])


def _edit(root, fn):
    meta = json.loads((root / "dataset.json").read_text())
    fn(meta)
    (root / "dataset.json").write_text(json.dumps(meta))


@pytest.fixture
def outside(tmp_path):
    """``tmp_path/outside/secret.nii.gz``: an image of case00's shape holding other values, outside the dataset."""
    secret = tmp_path / "outside" / "secret.nii.gz"
    secret.parent.mkdir()
    write_image(secret, np.full((1, 12, 10), 7.0, np.float32), spatial_dims=2)
    return secret


@pytest.mark.parametrize("how", ["dotdot", "absolute"])
def test_case_files_outside_the_dataset_are_refused_unless_allowed(tmp_path, outside, how):
    root = write_dataset(_cases(n=3), tmp_path / "work" / "ds", ["bg", "a", "b"])
    rel = "../../outside/secret.nii.gz" if how == "dotdot" else str(outside)

    def point(meta):
        meta["cases"][1]["image"] = rel

    _edit(root, point)
    with pytest.raises(DataError, match="lies outside") as e:
        load_dataset(root)
    assert e.value.path == root / "dataset.json"
    assert "case 'case01' image" in e.value.problem and repr(rel) in e.value.problem
    for ds in (load_dataset(root, allow_outside=True), load_dataset(root, allow_outside=True).subset(["case01"])):
        np.testing.assert_array_equal(ds["case01"].image, read_image(outside).array)
        np.testing.assert_array_equal(ds.image("case01"), read_image(outside).array)
    with outside_allowed():  # what the CLI's --allow-outside does
        assert load_dataset(root)["case01"].image.max() == 7.0


def test_label_files_outside_and_symlinks_leaving_the_dataset_are_refused(tmp_path, outside):
    root = write_dataset(_cases(n=3), tmp_path / "work" / "ds", ["bg", "a", "b"])
    secret_label = tmp_path / "outside" / "rater1.nii.gz"
    (root / "labels" / "case02" / "rater1.nii.gz").rename(secret_label)
    _edit(root, lambda m: m["cases"][2]["labels"].update(rater1=str(secret_label)))
    with pytest.raises(DataError, match=r"case 'case02' labels\['rater1'\]: file .* lies outside"):
        load_dataset(root)
    assert load_dataset(root, allow_outside=True)["case02"].labels.shape == (2, 12, 10)
    _edit(root, lambda m: m["cases"][2]["labels"].update(rater1="labels/case02/rater1.nii.gz"))
    (root / "labels" / "case02" / "rater1.nii.gz").symlink_to(secret_label)  # the index looks harmless
    with pytest.raises(DataError, match=r"case 'case02' labels\['rater1'\]: file 'labels/case02/rater1.nii.gz' lies"):
        load_dataset(root)
    (root / "images" / "case00.nii.gz").unlink()
    (root / "images" / "case00.nii.gz").symlink_to(outside)
    with pytest.raises(DataError, match="case 'case00' image: file 'images/case00.nii.gz' lies outside"):
        load_dataset(root)


def test_symlinks_inside_dangling_or_looping_keep_their_errors(tmp_path):
    root = write_dataset(_cases(n=3), tmp_path / "ds", ["bg", "a", "b"])
    img = root / "images"
    (img / "case00.nii.gz").unlink()
    (img / "case00.nii.gz").symlink_to(img / "case01.nii.gz")  # inside: fine
    (img / "case01.nii.gz").rename(img / "moved.nii.gz")
    (img / "case01.nii.gz").symlink_to(img / "gone.nii.gz")  # dangling
    (img / "case02.nii.gz").unlink()
    (img / "loop.nii.gz").symlink_to(img / "case02.nii.gz")
    (img / "case02.nii.gz").symlink_to(img / "loop.nii.gz")  # a loop
    ds = load_dataset(root)
    with pytest.raises(DataError, match=r"images/case01\.nii\.gz: file not found"):
        ds["case01"]
    with pytest.raises(DataError, match=r"images/case02\.nii\.gz"):
        ds["case02"]
    (img / "case01.nii.gz").unlink()
    (img / "moved.nii.gz").rename(img / "case01.nii.gz")
    np.testing.assert_array_equal(ds["case00"].image, ds["case01"].image)
    _edit(root, lambda m: m["cases"][0].update(id="../evil"))
    with pytest.raises(DataError, match=r"case id '\.\./evil' cannot be used as a file name"):
        load_dataset(root)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("classes", "abc", r"'classes' must be a list of names, got the str 'abc'"),  # ds_json_type_classes_str_abc
        ("classes", ["bg", "a", "a"], r"'classes' names must be distinct; repeated: \['a'\]"),  # ds_json2_classes_dup
        ("classes", ["bg", ""], r"'classes' entries must be non-empty strings"),
        ("classes", ["bg", 1], r"'classes' entries must be non-empty strings, got \[1\]"),
        ("classes", ["bg"], r"'classes' needs at least 2 names"),
        ("raters", "rater0", r"'raters' must be a list of names, got the str 'rater0'"),  # ds_raters_string
        ("raters", ["rater0", "rater0"], r"'raters' names must be distinct"),
        ("file_ext", 5, r"'file_ext' must be one of .*, got 5"),  # pd_json_type_file_ext_int_5
        ("file_ext", ".bmp", r"'file_ext' must be one of .*, got '\.bmp'"),
    ],
)
def test_loose_values_in_dataset_json_are_refused(tmp_path, field, value, message):
    root = write_dataset(_cases(n=3, raters=1), tmp_path / "ds", ["bg", "a", "b"])
    _edit(root, lambda m: m.update({field: value}))
    with pytest.raises(DataError, match=message) as e:
        load_dataset(root)
    assert e.value.path == root / "dataset.json"


def test_writer_refuses_a_class_string_and_duplicate_classes(tmp_path):
    with pytest.raises(DataError, match="got the string 'abc'"):
        write_dataset(_cases(n=2), tmp_path / "ds", "abc")
    with pytest.raises(DataError, match="'classes' names must be distinct"):
        write_dataset(_cases(n=2), tmp_path / "ds", ["bg", "a", "a"])
    assert check_names(("x", "y"), "raters") == ["x", "y"]


# --- outputs are never destroyed (audit F2: synth_into_nonempty, import_out_eq_src) ---


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_synth_into_nonempty_folder_is_refused_even_with_overwrite(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(DataError, match=r"mine: exists, is not empty and is not a trustseg dataset.*--overwrite"):
            make_synthetic_dataset(out, SynthConfig(cases=3, size=16), ext=".npy", overwrite=overwrite)
    assert _tree(out) == {"notes.txt": b"precious"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary folder left behind
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="file: exists and is not a folder"):
        write_dataset(_cases(n=2), tmp_path / "file", ["bg", "a", "b"], overwrite=True)


def test_existing_dataset_is_replaced_only_with_overwrite(tmp_path):
    root = write_dataset(_cases(n=3), tmp_path / "ds", ["bg", "a", "b"], name="old")
    before = _tree(root)
    with pytest.raises(DataError, match=r"ds: is an existing trustseg dataset; pass --overwrite"):
        write_dataset(_cases(n=2, seed=1), root, ["bg", "a", "b"], name="new")
    assert _tree(root) == before
    write_dataset(_cases(n=2, seed=1), root, ["bg", "a", "b"], name="new", overwrite=True)
    assert load_dataset(root).name == "new" and len(load_dataset(root)) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(load_dataset(write_dataset(_cases(n=2), empty, ["bg", "a", "b"]))) == 2  # an empty folder is fine


def _folder_source(src):
    rng = np.random.default_rng(0)
    for cid in ("x1", "x2"):
        write_image(src / "images" / f"{cid}.npy", rng.normal(size=(6, 5)).astype(np.float32))
        (src / "labels").mkdir(parents=True, exist_ok=True)
        write_label(src / "labels" / f"{cid}.npy", rng.integers(0, 2, (6, 5)))
    (src / "README.txt").write_text("the source")
    return src


def test_import_out_equal_to_or_inside_the_source_is_refused(tmp_path):
    src = _folder_source(tmp_path / "src")
    before = _tree(src)
    for out in (src, src / "converted", src / "images"):
        for overwrite in (False, True):
            with pytest.raises(DataError, match=r"import source .*choose an --out outside it"):
                import_dataset("folder", src, out, overwrite=overwrite, classes=["bg", "fg"])
    assert _tree(src) == before


def test_import_replaces_an_earlier_dataset_only_with_overwrite(tmp_path):
    src = _folder_source(tmp_path / "src")
    out = write_dataset(_cases(n=3), tmp_path / "ds", ["bg", "a", "b"], name="old")
    before = _tree(out)
    with pytest.raises(DataError, match="pass --overwrite"):
        import_dataset("folder", src, out, classes=["bg", "fg"])
    (src / "labels" / "x2.npy").write_bytes(b"broken")  # a failing import with overwrite keeps the old one
    with pytest.raises(DataError):
        import_dataset("folder", src, out, overwrite=True, classes=["bg", "fg"])
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "src"]
    _folder_source(src)
    ds = load_dataset(import_dataset("folder", src, out, overwrite=True, classes=["bg", "fg"]))
    assert ds.classes == ["bg", "fg"] and len(ds) == 2


def test_a_second_concurrent_synth_into_one_folder_fails_fast(tmp_path):
    out = tmp_path / "d"
    with exclusive(writing_lock(out), "dataset"):  # another synth/import is writing there
        with pytest.raises(DataError, match="lock"):
            make_synthetic_dataset(out, SynthConfig(cases=4, size=16), ext=".npy")
        assert not out.exists()
    make_synthetic_dataset(out, SynthConfig(cases=4, size=16), ext=".npy")
    assert (out / "dataset.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["d"]
