"""Resampling on import: hand-computed known answers for area, linear and nearest, spacing/origin, refusals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from trustseg.core.errors import ConfigError
from trustseg.data.case import Case
from trustseg.data.resample import Resample, nearest, parse_axes, resample_case, resample_image


def test_downsizing_averages_blocks_and_labels_take_the_voxel_at_the_centre():
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    lab = np.arange(16).reshape(1, 4, 4) % 3
    case = Case("a", img, lab, spacing=(0.5, 2.0), origin=(10.0, 0.0))
    out = resample_case(case, Resample(size=(2, 2)))
    # 2x2 block means 2.5, 4.5, 10.5, 12.5; the source is whole-numbered, so they are rounded (half to even)
    np.testing.assert_array_equal(out.image[0], [[2.0, 4.0], [10.0, 12.0]])
    # nearest: output i takes input floor((i + 0.5) * 4 / 2) = 1, 3
    np.testing.assert_array_equal(out.labels[0], lab[0][np.ix_([1, 3], [1, 3])])
    assert out.spacing == (1.0, 4.0)
    assert out.origin == (10.25, 1.0)  # o + (s' - s) / 2
    assert out.labels.dtype == np.int64 and out.image.dtype == np.float32


def test_non_integral_image_is_not_rounded_and_upsizing_is_linear():
    img = np.array([[[0.0, 1.0]]], dtype=np.float32) + 0.25  # (1, 1, 2)
    up = resample_image(img, (1, 4))
    # align_corners=False: centres at x = (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25 -> clamped linear
    np.testing.assert_allclose(up[0, 0], [0.25, 0.5, 1.0, 1.25])
    case = Case("a", img, np.zeros((2, 1, 2), np.int64))
    out = resample_case(case, Resample(size=(1, 4)))
    np.testing.assert_allclose(out.image[0, 0], [0.25, 0.5, 1.0, 1.25])
    assert out.labels.shape == (2, 1, 4) and out.spacing == (1.0, 0.5)


def test_nearest_matches_scipy_zoom_grid_mode_and_spacing_target():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, (3, 6, 9))
    ref = ndimage.zoom(lab, (1, 4 / 6, 3 / 9), order=0, mode="grid-constant", grid_mode=True)
    np.testing.assert_array_equal(nearest(lab, (4, 3)), ref)
    assert Resample(spacing=(1.5, 3.0)).grid((6, 9), (1.0, 1.0)) == ((4, 3), (1.5, 3.0))
    # 5 voxels of 1 mm at 2 mm: round(2.5) = 2 voxels of exactly 2.5 mm (the extent is kept)
    assert Resample(spacing=(2.0, 1.0)).grid((5, 4), (1.0, 1.0)) == ((2, 4), (2.5, 1.0))
    vol = Case("v", np.ones((1, 4, 4, 4), np.float32), np.ones((1, 4, 4, 4), np.int64), spacing=(2.0, 1.0, 1.0))
    out = resample_case(vol, Resample(spacing=(2.0, 2.0, 2.0)))
    assert out.spatial_shape == (4, 2, 2) and out.spacing == (2.0, 2.0, 2.0)


def test_refusals_name_the_option():
    with pytest.raises(ConfigError, match="either --size or --spacing, not both"):
        Resample(size=(4, 4), spacing=(1.0, 1.0))
    with pytest.raises(ConfigError, match=r"--size needs 2 \(H,W\) or 3"):
        Resample(size=(4,))
    with pytest.raises(ConfigError, match="--spacing values must be positive"):
        Resample(spacing=(1.0, 0.0))
    with pytest.raises(ConfigError, match="--size has 3 values but the images have 2 spatial axes"):
        Resample(size=(2, 4, 4)).grid((8, 8), (1.0, 1.0))
    with pytest.raises(ConfigError, match="--spacing expects comma-separated floats"):
        parse_axes("1,x", "--spacing", float)
    assert parse_axes(64, "--size", int) == (64,) and parse_axes(None, "--size", int) is None
