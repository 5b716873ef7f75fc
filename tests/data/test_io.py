"""Round trips and error messages of the image/label readers and writers."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from trustseg.core.errors import DataError
from trustseg.data.io import default_affine, read_image, read_label, split_ext, write_image, write_label

RNG = np.random.default_rng(0)


def _img(*shape):
    return RNG.normal(size=shape).astype(np.float32)


def _lab(*shape, k=3):
    return RNG.integers(0, k, shape)


@pytest.mark.parametrize("ext", [".nii", ".nii.gz"])
def test_nifti_3d_round_trip_keeps_spacing_origin(tmp_path, ext):
    x = _img(1, 5, 6, 7)
    p = write_image(tmp_path / f"a{ext}", x, spacing=(0.5, 0.7, 2.0), origin=(-10.0, 3.0, 4.5))
    d = read_image(p)
    assert d.array.shape == (1, 5, 6, 7) and d.array.dtype == np.float32
    np.testing.assert_array_equal(d.array, x)
    np.testing.assert_allclose(d.spacing, (0.5, 0.7, 2.0), rtol=1e-6)
    np.testing.assert_allclose(d.origin, (-10.0, 3.0, 4.5))
    np.testing.assert_allclose(d.affine, default_affine((0.5, 0.7, 2.0), (-10.0, 3.0, 4.5)), rtol=1e-6)
    y = _lab(5, 6, 7)
    lp = write_label(tmp_path / f"l{ext}", y, spacing=(0.5, 0.7, 2.0))
    lab, sp, org = read_label(lp)
    assert lab.dtype == np.int64 and sp == pytest.approx((0.5, 0.7, 2.0))
    np.testing.assert_array_equal(lab, y)


def test_nifti_2d_read_as_2d_and_multichannel(tmp_path):
    x = _img(1, 8, 9)
    d = read_image(write_image(tmp_path / "a.nii.gz", x, spacing=(0.8, 1.2), origin=(1.0, 2.0)))
    assert d.array.shape == (1, 8, 9) and d.spacing == pytest.approx((0.8, 1.2)) and d.origin == (1.0, 2.0)
    np.testing.assert_array_equal(d.array, x)
    # stored (X, Y, 1) by another tool -> still 2D
    nib.save(nib.Nifti1Image(x[0][:, :, None], np.eye(4)), str(tmp_path / "b.nii.gz"))
    np.testing.assert_array_equal(read_image(tmp_path / "b.nii.gz").array, x)
    y = _lab(8, 9).astype(np.uint8)
    nib.save(nib.Nifti1Image(y[:, :, None], np.eye(4)), str(tmp_path / "by.nii.gz"))
    np.testing.assert_array_equal(read_label(tmp_path / "by.nii.gz")[0], y)
    # 2D with 3 channels: the spacing says 2D
    m = _img(3, 8, 9)
    d = read_image(write_image(tmp_path / "c.nii.gz", m, spacing=(1.0, 1.0)))
    np.testing.assert_array_equal(d.array, m)
    # 3D with 2 channels (4D array)
    v = _img(2, 4, 5, 6)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "d.nii.gz", v)).array, v)


def test_png_gray_rgb_16bit_and_rescale(tmp_path):
    g = RNG.integers(0, 256, (1, 10, 12)).astype(np.float32)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "g.png", g)).array, g)
    rgb = RNG.integers(0, 256, (3, 10, 12)).astype(np.uint8)
    d = read_image(write_image(tmp_path / "rgb.png", rgb))
    assert d.array.shape == (3, 10, 12) and d.spacing == (1.0, 1.0)
    np.testing.assert_array_equal(d.array, rgb)
    w = RNG.integers(0, 60000, (10, 12)).astype(np.float32)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "w.png", w)).array[0], w)
    f = _img(1, 10, 12)
    with pytest.raises(DataError, match="f.png.*rescale=True"):
        write_image(tmp_path / "f.png", f)
    r = read_image(write_image(tmp_path / "f.png", f, rescale=True)).array
    assert r.min() == 0 and r.max() == 255
    assert np.all(np.diff(r.ravel()[np.argsort(f.ravel())]) >= 0)  # monotone in the original intensities


def test_tiff_float_and_multipage(tmp_path):
    f = _img(1, 7, 9)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "f.tif", f)).array, f)
    v = RNG.integers(0, 200, (1, 3, 7, 9)).astype(np.uint8)
    d = read_image(write_image(tmp_path / "v.tiff", v))
    assert d.array.shape == (1, 3, 7, 9)
    np.testing.assert_array_equal(d.array, v)


def test_jpeg_is_lossy_within_tolerance(tmp_path):
    yy, xx = np.mgrid[0:32, 0:32]
    smooth = (100 + 50 * np.sin(xx / 6.0) + 40 * np.cos(yy / 7.0)).astype(np.float32)[None]
    d = read_image(write_image(tmp_path / "a.jpg", smooth.round()))
    assert d.array.shape == (1, 32, 32)
    assert np.abs(d.array - smooth.round()).mean() < 2.0
    with pytest.raises(DataError, match="JPEG"):
        write_label(tmp_path / "l.jpeg", _lab(4, 4))


@pytest.mark.parametrize("ext", [".npy", ".npz"])
def test_numpy_round_trip(tmp_path, ext):
    x = _img(2, 5, 6)
    d = read_image(write_image(tmp_path / f"a{ext}", x, spacing=(0.5, 2.0)))
    np.testing.assert_array_equal(d.array, x)
    if ext == ".npz":
        assert d.spacing == (0.5, 2.0)
    v = _img(4, 5, 6)  # a single-channel volume: inferred as (D, H, W)
    d = read_image(write_image(tmp_path / f"v{ext}", v))
    assert d.array.shape == (1, 4, 5, 6)
    for shape in [(5, 6), (4, 5, 6)]:
        y = _lab(*shape)
        np.testing.assert_array_equal(read_label(write_label(tmp_path / f"l{len(shape)}{ext}", y))[0], y)


def test_label_255_masks_map_to_one(tmp_path):
    m = np.zeros((6, 6), np.uint8)
    m[2:4, 2:4] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    lab = read_label(tmp_path / "m.png")[0]
    assert set(np.unique(lab)) == {0, 1} and lab.sum() == 4
    Image.fromarray(np.full((3, 3), 255, np.uint8)).save(tmp_path / "full.png")
    assert read_label(tmp_path / "full.png")[0].tolist() == [[1] * 3] * 3
    # other integer values stay as they are (also 255 beside other classes)
    m[0, 0] = 2
    Image.fromarray(m).save(tmp_path / "multi.png")
    assert set(np.unique(read_label(tmp_path / "multi.png")[0])) == {0, 2, 255}
    y = _lab(6, 7, k=300)
    lab = read_label(write_label(tmp_path / "big.png", y))[0]  # 16-bit PNG
    np.testing.assert_array_equal(lab, y)


def test_split_ext():
    assert split_ext("dir/a.b.nii.gz") == ("a.b", ".nii.gz")
    assert split_ext("X.PNG") == ("X", ".png")


def test_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"a\.bmp: unknown file type"):
        read_image(tmp_path / "a.bmp")
    with pytest.raises(DataError, match=r"missing\.png: file not found"):
        read_image(tmp_path / "missing.png")
    good = write_image(tmp_path / "t.nii.gz", _img(1, 16, 16, 16))
    raw = good.read_bytes()
    (tmp_path / "trunc.nii.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"trunc\.nii\.gz: cannot read"):
        read_image(tmp_path / "trunc.nii.gz")
    (tmp_path / "bad.nii.gz").write_bytes(gzip.compress(b"not a nifti header" * 30))
    with pytest.raises(DataError, match=r"bad\.nii\.gz: cannot read"):
        read_label(tmp_path / "bad.nii.gz")
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG garbage bytes")
    with pytest.raises(DataError, match=r"garbage\.png: cannot read"):
        read_image(tmp_path / "garbage.png")
    (tmp_path / "bad.npy").write_bytes(b"nope")
    with pytest.raises(DataError, match=r"bad\.npy: cannot read"):
        read_image(tmp_path / "bad.npy")
    np.save(tmp_path / "frac.npy", np.array([[0.5, 1.0]], np.float32))
    with pytest.raises(DataError, match=r"frac\.npy: label values must be integers"):
        read_label(tmp_path / "frac.npy")
    rgb = RNG.integers(0, 256, (3, 4, 4)).astype(np.uint8)
    write_image(tmp_path / "rgb.png", rgb)
    with pytest.raises(DataError, match=r"rgb\.png: a label map must have one channel"):
        read_label(tmp_path / "rgb.png")
    with pytest.raises(DataError, match=r"neg\.png: label values must be integers in \[0, 65535\]"):
        write_label(tmp_path / "neg.png", -np.ones((3, 3), np.int64))
