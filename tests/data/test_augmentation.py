"""Training augmentation: identity when off, numpy references for flips and quarter turns, label values and
image/label alignment preserved, seeded determinism, 2D and 3D, intensity steps, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from trustseg.core.errors import ConfigError, DataError
from trustseg.data.augmentation import AugmentConfig, Augmenter, augment

NONE = {"flip_prob": 0.0, "rot90_prob": 0.0, "rotate_prob": 0.0, "scale_prob": 0.0, "shift_prob": 0.0}


def _case(shape, seed=0):
    """A smooth random image (C = 2) and R = 2 rater labels thresholded from its first channel (K = 3)."""
    rng = np.random.default_rng(seed)
    # smooth, so thresholds give blobs (bilinear and nearest resampling then agree away from the edges)
    img = ndimage.gaussian_filter(rng.random((2, *shape)), (0,) + (2.5,) * len(shape)).astype(np.float32)
    labels = np.stack([_threshold(img), (img[0] > np.median(img[0])).astype(np.int64)])
    return img, labels


def _threshold(img):
    q1, q2 = np.quantile(img[0], [0.4, 0.75])
    return (img[0] > q1).astype(np.int64) + (img[0] > q2).astype(np.int64)


@pytest.mark.parametrize("shape", [(24, 24), (12, 12, 10)])
def test_disabled_is_the_identity(shape):
    img, lab = _case(shape)
    out_img, out_lab = Augmenter(AugmentConfig(enabled=False))(img, lab, seed=3)
    np.testing.assert_array_equal(out_img, img)
    np.testing.assert_array_equal(out_lab, lab)
    out_img, out_lab = augment(img, lab, AugmentConfig(**NONE), seed=3)  # every probability 0
    np.testing.assert_array_equal(out_img, img)
    np.testing.assert_array_equal(out_lab, lab)


@pytest.mark.parametrize("shape", [(24, 20), (12, 10, 8)])
def test_flip_every_axis_matches_numpy(shape):
    img, lab = _case(shape)
    aug = Augmenter(AugmentConfig(**{**NONE, "flip_prob": 1.0}))
    axes = tuple(range(1, img.ndim))
    out_img, out_lab = aug(img, lab, seed=0)
    np.testing.assert_array_equal(out_img, np.flip(img, axes))
    np.testing.assert_array_equal(out_lab, np.flip(lab, axes))
    out_img, _ = Augmenter(AugmentConfig(**{**NONE, "flip_prob": 1.0, "flip_axes": (1,)}))(img, lab, seed=0)
    np.testing.assert_array_equal(out_img, np.flip(img, 2))


@pytest.mark.parametrize(("shape", "plane"), [((16, 16), (0, 1)), ((16, 16, 6), (0, 1)), ((6, 16, 16), (1, 2))])
def test_quarter_turns_match_numpy_and_cover_k_1_to_3(shape, plane):
    img, lab = _case(shape)
    aug = Augmenter(AugmentConfig(**{**NONE, "rot90_prob": 1.0, "plane": plane}))
    axes = (1 + plane[0], 1 + plane[1])
    seen = set()
    for seed in range(20):
        out_img, out_lab = aug(img, lab, seed)
        ks = [k for k in (1, 2, 3) if np.array_equal(out_img, np.rot90(img, k, axes))]
        assert len(ks) == 1, seed
        np.testing.assert_array_equal(out_lab, np.rot90(lab, ks[0], axes))
        seen.add(ks[0])
    assert seen == {1, 2, 3}


def test_quarter_turns_skipped_on_a_non_square_plane():
    img, lab = _case((16, 12))
    out_img, out_lab = Augmenter(AugmentConfig(**{**NONE, "rot90_prob": 1.0}))(img, lab, seed=0)
    assert out_img.shape == img.shape and out_lab.shape == lab.shape
    np.testing.assert_array_equal(out_img, img)


@pytest.mark.parametrize("shape", [(20, 20), (10, 10, 8)])
def test_flips_and_quarter_turns_keep_labels_aligned_with_the_image(shape):
    img, lab = _case(shape)
    aug = Augmenter(AugmentConfig(**{**NONE, "flip_prob": 0.5, "rot90_prob": 0.75}))
    results = set()
    for seed in range(12):
        out_img, out_lab = aug(img, lab, seed)
        np.testing.assert_array_equal(out_lab[0], _threshold(out_img))  # the label still thresholds the image
        results.add(out_img.tobytes())
    assert len(results) > 3


@pytest.mark.parametrize("shape", [(32, 32), (16, 16, 12)])
@pytest.mark.parametrize("elastic", [0.0, 1.0])
def test_full_pipeline_preserves_label_values_shapes_and_rough_alignment(shape, elastic):
    img, lab = _case(shape)
    cfg = AugmentConfig(rotate_prob=1.0, rotate_degrees=20.0, elastic_prob=elastic, scale_prob=0.0, shift_prob=0.0)
    aug = Augmenter(cfg)
    q1, q2 = np.quantile(img[0], [0.4, 0.75])
    aligned, unaligned = [], []
    for seed in range(4):
        out_img, out_lab = aug(img, lab, seed)
        assert out_img.shape == img.shape and out_img.dtype == np.float32
        assert out_lab.shape == lab.shape and out_lab.dtype == np.int64
        assert set(np.unique(out_lab)) <= set(np.unique(lab))  # nearest: no mixed class indices
        assert len(np.unique(out_lab[0])) == 3
        # bilinear image vs nearest labels agree away from class edges (zero padding is background in both),
        # better than the transformed image agrees with the untransformed labels
        thr = (out_img[0] > q1).astype(np.int64) + (out_img[0] > q2)
        aligned.append(np.mean(thr == out_lab[0]))
        unaligned.append(np.mean(thr == lab[0]))
    assert min(aligned) > 0.7 and np.mean(aligned) > np.mean(unaligned) + 0.1, (aligned, unaligned)


@pytest.mark.parametrize("shape", [(24, 24), (12, 12, 10)])
def test_same_seed_same_result_whatever_came_before(shape):
    img, lab = _case(shape)
    cfg = AugmentConfig(rotate_prob=0.5, elastic_prob=0.5, scale_prob=0.5, shift_prob=0.5)
    a = Augmenter(cfg)
    first = a(img, lab, seed=11)
    a(img, lab, seed=12)
    a(img[:, ::-1].copy(), lab, seed=13)
    again = a(img, lab, seed=11)
    fresh = Augmenter(cfg)(img, lab, seed=11)  # a new pipeline (a resumed run)
    for x, y in itertools.chain(zip(first, again), zip(first, fresh)):
        np.testing.assert_array_equal(x, y)
    others = [a(img, lab, seed=s)[0] for s in range(5)]
    assert any(not np.array_equal(first[0], o) for o in others)


def test_intensity_scale_and_shift_touch_the_image_only():
    img, lab = _case((16, 16))
    for seed in range(5):
        out, out_lab = Augmenter(AugmentConfig(**{**NONE, "scale_prob": 1.0, "scale_range": 0.25}))(img, lab, seed)
        ratio = out / img
        assert np.ptp(ratio) < 1e-5 and 0.75 <= ratio.mean() <= 1.25 and ratio.mean() != 1.0
        np.testing.assert_array_equal(out_lab, lab)
        out, _ = Augmenter(AugmentConfig(**{**NONE, "shift_prob": 1.0, "shift_range": 0.1}))(img, lab, seed)
        diff = out - img
        assert np.ptp(diff) < 1e-5 and abs(diff.mean()) <= 0.1 and diff.mean() != 0.0


def test_errors():
    img, lab = _case((8, 8))
    with pytest.raises(DataError, match="same 2D/3D grid"):
        augment(img, lab[:, :4], AugmentConfig(), seed=0)
    with pytest.raises(DataError, match="plane"):
        augment(img, lab, AugmentConfig(plane=(1, 2)), seed=0)
    bad = [
        {"flip_prob": 1.5},
        {"rotate_degrees": -1.0},
        {"scale_range": 1.0},
        {"plane": (1, 1)},
        {"flip_axes": (0, 0)},
        {"elastic_sigma": (8.0, 5.0)},
    ]
    for kwargs in bad:
        with pytest.raises(ConfigError, match="train.augment"):
            AugmentConfig(**kwargs)


@pytest.mark.parametrize("plane", [(0, 1), (0, 2), (1, 2)])
def test_3d_small_rotations_stay_in_their_plane(plane):
    # a volume constant along the axis outside the plane stays so: every slice across that axis rotates alike
    img2d, _ = _case((14, 14))
    other = ({0, 1, 2} - set(plane)).pop()
    img = np.expand_dims(img2d, 1 + other).repeat(6, axis=1 + other)
    lab = (img[:1] > np.median(img[0])).astype(np.int64)
    cfg = AugmentConfig(**{**NONE, "rotate_prob": 1.0, "rotate_degrees": 30.0, "plane": plane})
    out_img, out_lab = Augmenter(cfg)(img, lab, seed=1)
    assert not np.allclose(out_img, img, atol=1e-3)
    ref_img, ref_lab = np.take(out_img, [0], axis=1 + other), np.take(out_lab, [0], axis=1 + other)
    np.testing.assert_allclose(out_img, np.broadcast_to(ref_img, img.shape), atol=1e-5)
    np.testing.assert_array_equal(out_lab, np.broadcast_to(ref_lab, lab.shape))
