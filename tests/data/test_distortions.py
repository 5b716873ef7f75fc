"""Tests of the graded distortions and SURE's additive noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from trustseg.core.errors import UnknownNameError
from trustseg.data.distortions import (
    DISTORTIONS,
    LEVELS,
    SEVERITIES,
    add_gaussian_noise,
    distort,
    distort_case,
)
from trustseg.data.normalization import NormConfig, fit_normalization
from trustseg.data.synthetic import SynthConfig, generate_case

NAMES = ["noise", "blur", "contrast", "bias", "ghosting"]


@pytest.fixture(scope="module")
def case2d():
    return generate_case(0, SynthConfig(size=48, cases=1))


@pytest.fixture(scope="module")
def image3d():
    return generate_case(1, SynthConfig(dims=3, size=24, cases=1)).image


def test_all_five_distortions_registered():
    assert DISTORTIONS.names() == sorted(NAMES)
    assert set(LEVELS) == set(NAMES)
    assert all(len(v) == 5 for v in LEVELS.values())


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_finite_and_severity_monotone(name, case2d, image3d):
    for image in (case2d.image, image3d):
        change = []
        for s in SEVERITIES:
            out = distort(image, name, s, seed=3)
            assert out.shape == image.shape and out.dtype == image.dtype
            assert np.isfinite(out).all()
            change.append(float(np.abs(out - image).mean()))
        assert change[0] > 0
        assert all(a < b for a, b in zip(change, change[1:])), change


@pytest.mark.parametrize("name", NAMES)
def test_seed_determinism_and_torch_input(name, case2d):
    a = distort(case2d.image, name, 3, seed=5)
    b = distort(case2d.image, name, 3, seed=5)
    np.testing.assert_array_equal(a, b)
    t = distort(torch.from_numpy(case2d.image), name, 3, seed=5)
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == case2d.image.shape
    np.testing.assert_allclose(t.numpy(), a, rtol=0, atol=1e-6)
    t64 = distort(torch.from_numpy(case2d.image).double(), name, 3, seed=5)
    assert t64.dtype == torch.float64


@pytest.mark.parametrize("name", ["noise", "bias", "ghosting"])
def test_random_distortions_change_with_seed(name, case2d):
    assert not np.array_equal(distort(case2d.image, name, 3, seed=0), distort(case2d.image, name, 3, seed=1))


def test_noise_is_relative_to_the_image_std(case2d):
    scaled = case2d.image * 10.0
    diff = distort(scaled, "noise", 5, seed=0) - scaled
    assert diff.std() == pytest.approx(10.0 * LEVELS["noise"][4] * case2d.image.std(), rel=0.05)


def test_contrast_and_blur_match_their_definitions(case2d):
    img = case2d.image.astype(np.float64)
    c = LEVELS["contrast"][1]
    np.testing.assert_allclose(distort(img, "contrast", 2), img.mean() + c * (img - img.mean()), atol=1e-12)
    ref = ndimage.gaussian_filter(img[0], LEVELS["blur"][2], mode="nearest")
    np.testing.assert_allclose(distort(img, "blur", 3)[0], ref, atol=1e-12)


def test_ghosting_is_a_kspace_cosine_modulation(case2d):
    img = case2d.image.astype(np.float64)
    out = distort(img, "ghosting", 4, seed=2)
    g = LEVELS["ghosting"][3]
    # find the axis and shift the generator used, then compare with the k-space formula
    rng = np.random.default_rng(2)
    axis = int(rng.integers(1, img.ndim))
    n = img.shape[axis]
    shift = int(round(rng.uniform(0.2, 0.4) * n))
    k = np.fft.fftfreq(n) * n
    mod = 1.0 + g * np.cos(2 * np.pi * k * shift / n)
    shape = [1] * img.ndim
    shape[axis] = n
    centred = img - img.mean()
    ref = np.real(np.fft.ifft(np.fft.fft(centred, axis=axis) * mod.reshape(shape), axis=axis)) + img.mean()
    np.testing.assert_allclose(out, ref, atol=1e-10)


def test_bias_field_is_multiplicative_and_smooth(case2d):
    img = case2d.image.astype(np.float64)
    out = distort(img, "bias", 5, seed=0)
    low = img.min()
    ratio = (out - low)[img > low + 0.5] / (img - low)[img > low + 0.5]
    assert ratio.min() > 0
    log_field = np.log(ratio)
    assert log_field.std() == pytest.approx(LEVELS["bias"][4], rel=0.3)


def test_errors():
    img = np.zeros((1, 8, 8), dtype=np.float32)
    with pytest.raises(UnknownNameError, match="did you mean 'noise'"):
        distort(img, "nosie", 1)
    for bad in (0, 6, 2.5, True):
        with pytest.raises(ValueError, match="1–5"):
            distort(img, "blur", bad)
    with pytest.raises(ValueError, match="spatial"):
        distort(np.zeros((8,)), "blur", 1)


def test_constant_image_stays_finite():
    img = np.full((2, 8, 8), 3.0, dtype=np.float32)
    for name in NAMES:
        assert np.isfinite(distort(img, name, 5)).all()


def test_distort_case(case2d):
    out = distort_case(case2d, "noise", 3, seed=1)
    assert out.case_id == f"{case2d.case_id}_noise3" and out.group == case2d.group
    np.testing.assert_array_equal(out.labels, case2d.labels)
    assert out.labels is not case2d.labels
    np.testing.assert_array_equal(out.image, distort(case2d.image, "noise", 3, seed=1))
    assert out.meta["distortion"] == "noise" and out.meta["severity"] == 3
    assert "distortion" not in case2d.meta


def test_add_gaussian_noise(case2d):
    img = case2d.image
    noisy = add_gaussian_noise(img, mu=0.5, sigma=0.3, seed=0)
    diff = (noisy - img).astype(np.float64)
    assert noisy.dtype == img.dtype and noisy.shape == img.shape
    assert diff.mean() == pytest.approx(0.5, abs=0.02)
    assert diff.std() == pytest.approx(0.3, rel=0.05)
    t = add_gaussian_noise(torch.from_numpy(img), mu=0.5, sigma=0.3, seed=0)
    np.testing.assert_allclose(t.numpy(), noisy, atol=1e-6)
    np.testing.assert_allclose(add_gaussian_noise(img, 0.1, 0.0), img + 0.1, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="sigma"):
        add_gaussian_noise(img, 0.1, -1.0)


# ------------------------------------------------------------------------------------- severities in normalised units
@pytest.fixture(scope="module")
def raw_and_stats(case2d):
    """A 2-channel raw image (two different intensity ranges) and z-score statistics fitted on other raw images."""
    rng = np.random.default_rng(7)
    base = case2d.image.astype(np.float64)
    raw = np.concatenate([100.0 + 40.0 * base, -1000.0 + 900.0 * base[::-1, ::-1]])
    train = [raw + rng.normal(0, 5.0, raw.shape) for _ in range(3)]
    return raw, fit_normalization(train, None, NormConfig("zscore"))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("use_scale", [True, False])
def test_distorting_raw_then_normalising_equals_normalising_then_distorting(name, use_scale, raw_and_stats):
    raw, stats = raw_and_stats
    severity = 4
    if use_scale:  # severities in normalised units: raw with scale = stats.scale, normalised with scale 1
        a = stats.apply(distort(raw, name, severity, seed=2, scale=stats.scale))
        b = distort(stats.apply(raw).astype(np.float64), name, severity, seed=2, scale=1.0)
    else:  # relative to the image's own statistics: commutes with the affine z-score as well
        a = stats.apply(distort(raw, name, severity, seed=2))
        b = distort(stats.apply(raw).astype(np.float64), name, severity, seed=2)
    assert np.abs(b - stats.apply(raw)).mean() > 0.01  # the distortion does something
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-5)


def test_noise_scale_sets_the_std_in_raw_units(raw_and_stats):
    raw, stats = raw_and_stats
    sigma = LEVELS["noise"][2]
    diff = distort(raw, "noise", 3, seed=0, scale=stats.scale) - raw
    np.testing.assert_allclose(diff.std(axis=(1, 2)), sigma * np.asarray(stats.scale), rtol=0.05)
    # the same draws as without a scale: only the per-channel factor differs
    plain = distort(raw, "noise", 3, seed=0) - raw
    own_std = raw.std(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(diff / np.asarray(stats.scale)[:, None, None], plain / own_std, atol=1e-9)
    # scale-free distortions ignore the scale
    for name in ("blur", "contrast", "bias", "ghosting"):
        np.testing.assert_array_equal(distort(raw, name, 3, seed=1, scale=stats.scale), distort(raw, name, 3, seed=1))


def test_scale_none_keeps_todays_noise(case2d):
    img = case2d.image.astype(np.float64)
    rng = np.random.default_rng(4)
    ref = img + img.std(axis=(1, 2), keepdims=True) * LEVELS["noise"][1] * rng.standard_normal(img.shape)
    np.testing.assert_array_equal(distort(img, "noise", 2, seed=4), ref)
    np.testing.assert_array_equal(
        add_gaussian_noise(img, 0.3, 0.3, seed=4), img + np.random.default_rng(4).normal(0.3, 0.3, img.shape)
    )


def test_add_gaussian_noise_scale_commutes_with_zscore(raw_and_stats):
    raw, stats = raw_and_stats
    a = stats.apply(add_gaussian_noise(raw, 0.5, 0.3, seed=1, scale=stats.scale))
    b = add_gaussian_noise(stats.apply(raw).astype(np.float64), 0.5, 0.3, seed=1)
    np.testing.assert_allclose(a, b, rtol=0, atol=2e-5)
    # batched (B, C, *spatial) with the channel axis 1
    batch = np.stack([raw, raw])
    out = add_gaussian_noise(batch, 0.5, 0.3, seed=1, scale=stats.scale, channel_axis=1) - batch
    noise = np.random.default_rng(1).normal(0.5, 0.3, batch.shape)
    np.testing.assert_allclose(out, noise * np.asarray(stats.scale)[None, :, None, None], rtol=1e-12)


def test_bad_scale():
    img = np.ones((2, 8, 8))
    for bad in ([1.0, 2.0, 3.0], [1.0, 0.0], [np.nan, 1.0], -1.0):
        with pytest.raises(ValueError, match="scale"):
            distort(img, "noise", 1, scale=bad)
    with pytest.raises(ValueError, match="scale"):
        add_gaussian_noise(img, 0.1, 0.3, scale=[1.0, 2.0, 3.0])
