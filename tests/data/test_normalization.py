"""Intensity normalisation: fitted statistics against numpy, the schemes' formulas, the reservoir, JSON, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trustseg.core.errors import ConfigError, DataError
from trustseg.data.case import Case
from trustseg.data.normalization import (
    NormConfig,
    NormFitter,
    NormStats,
    fit_case_normalization,
    fit_normalization,
)


@pytest.fixture(scope="module")
def training():
    """Three 2-channel cases of different sizes, raw-looking intensities, and their rater labels (R = 2)."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for shape in [(20, 24), (16, 16), (30, 10)]:
        img = np.stack([rng.normal(100.0, 40.0, shape), rng.gamma(2.0, 300.0, shape)])
        lab = np.stack([(img[0] > 120).astype(np.int64), (img[0] > 140).astype(np.int64) * 2])
        images.append(img)
        labels.append(lab)
    return images, labels


def _flat(images, masks=None):
    if masks is None:
        return np.concatenate([im.reshape(im.shape[0], -1) for im in images], axis=1)
    return np.concatenate(
        [im.reshape(im.shape[0], -1)[:, (m > 0).any(0).reshape(-1)] for im, m in zip(images, masks)], axis=1
    )


def test_zscore_matches_numpy_over_all_training_voxels(training):
    images, _ = training
    stats = fit_normalization(images, None, NormConfig("zscore"))
    flat = _flat(images)
    np.testing.assert_allclose(stats.mean, flat.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats.std, flat.std(axis=1), rtol=1e-10)
    assert stats.count == flat.shape[1] and stats.channels == 2 and stats.low is None
    out = np.concatenate([stats.apply(im).reshape(2, -1) for im in images], axis=1).astype(np.float64)
    assert out.dtype == np.float64 and stats.apply(images[0]).dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(stats.scale, flat.std(axis=1), rtol=1e-10)


def test_zscore_analytic():
    stats = fit_normalization([np.array([[[1.0, 3.0]]]), np.array([[[5.0, 7.0, 9.0]]])])
    assert stats.scheme == "zscore" and stats.mean == (5.0,) and stats.std[0] == pytest.approx(np.sqrt(8.0))
    np.testing.assert_allclose(stats.apply(np.array([[[5.0, 5.0 + np.sqrt(8.0)]]])), [[[0.0, 1.0]]], atol=1e-6)


def test_ct_uses_foreground_percentiles_mean_and_std(training):
    images, labels = training
    cfg = NormConfig("ct", percentiles=(0.5, 99.5))
    stats = fit_normalization(images, labels, cfg)
    fg = _flat(images, labels)  # foreground = any rater > 0
    assert fg.shape[1] < _flat(images).shape[1] and stats.count == fg.shape[1]
    lo, hi = np.percentile(fg, [0.5, 99.5], axis=1)  # the reservoir holds every voxel: exact
    np.testing.assert_array_equal(stats.low, lo)
    np.testing.assert_array_equal(stats.high, hi)
    np.testing.assert_allclose(stats.mean, fg.mean(axis=1), rtol=1e-12)  # of the unclipped foreground (nnU-Net)
    np.testing.assert_allclose(stats.std, fg.std(axis=1), rtol=1e-10)
    x = images[1]
    ref = (np.clip(x, lo[:, None, None], hi[:, None, None]) - fg.mean(1)[:, None, None]) / fg.std(1)[:, None, None]
    np.testing.assert_allclose(stats.apply(x), ref, rtol=1e-5, atol=1e-5)
    # (*spatial) boolean masks give the same as the label maps they come from
    masks = [(lab > 0).any(0) for lab in labels]
    assert fit_normalization(images, masks, cfg) == stats
    # masks are ignored by the other schemes; without masks ct uses every voxel
    assert fit_normalization(images, labels, NormConfig("zscore")) == fit_normalization(images, None)
    everything = fit_normalization(images, None, cfg)
    np.testing.assert_array_equal(everything.low, np.percentile(_flat(images), 0.5, axis=1))


def test_ct_reservoir_estimates_percentiles_when_the_foreground_is_larger():
    rng = np.random.default_rng(1)
    images = [rng.standard_normal((1, 100, 100)) for _ in range(20)]  # 200 000 voxels, reservoir 20 000
    cfg = NormConfig("ct", percentiles=(0.5, 99.5), reservoir=20_000, seed=3)
    stats = fit_normalization(images, None, cfg)
    lo, hi = np.percentile(_flat(images), [0.5, 99.5])
    # standard error of the 0.5 % quantile from 20 000 samples: sqrt(.005 * .995 / 2e4) / phi(2.576) = 0.034
    assert stats.low[0] == pytest.approx(lo, abs=0.15) and stats.high[0] == pytest.approx(hi, abs=0.15)
    assert stats.low[0] != lo  # a sample, not every voxel
    np.testing.assert_allclose(stats.mean, _flat(images).mean(1), rtol=1e-10, atol=1e-12)  # mean/std stay exact
    assert fit_normalization(images, None, cfg) == stats  # seeded
    assert fit_normalization(images, None, NormConfig("ct", reservoir=20_000, seed=4)).low != stats.low


def test_reservoir_keeps_every_item_with_equal_probability():
    # Algorithm R: each of N stream items ends in a reservoir of n with probability n / N, chunks notwithstanding
    n_items, capacity, trials = 40, 8, 3000
    counts = np.zeros(n_items)
    for seed in range(trials):
        fitter = NormFitter(NormConfig("ct", reservoir=capacity, seed=seed))
        for part in np.split(np.arange(n_items, dtype=np.float64), [5, 6, 20]):
            fitter.add(part.reshape(1, 1, -1))
        kept = fitter._reservoir.sample()[0]
        assert len(np.unique(kept)) == capacity
        counts[kept.astype(int)] += 1
    freq = counts / trials
    # binomial std of each frequency: sqrt(.2 * .8 / 3000) = 0.0073
    np.testing.assert_allclose(freq, capacity / n_items, atol=0.035)


def test_percentile_scheme_is_per_image(training):
    images, _ = training
    stats = fit_normalization(images, None, NormConfig("percentile", percentiles=(2.0, 98.0)))
    x = images[2]
    ref = []
    for c in range(2):
        lo, hi = np.percentile(x[c], [2.0, 98.0])
        y = np.clip(x[c], lo, hi)
        ref.append((y - y.mean()) / y.std())
    np.testing.assert_allclose(stats.apply(x), np.stack(ref), rtol=1e-5, atol=1e-5)
    # invariant to a positive affine change of the image (it uses the image's own statistics only)
    np.testing.assert_allclose(stats.apply(3.0 * x + 50.0), stats.apply(x), atol=1e-5)
    np.testing.assert_allclose(stats.scale, _flat(images).std(1), rtol=1e-10)


def test_none_is_the_identity_with_unit_scale(training):
    images, _ = training
    stats = fit_normalization(images, None, NormConfig("none"))
    np.testing.assert_array_equal(stats.apply(images[0]), images[0].astype(np.float32))
    assert stats.scale == (1.0, 1.0)


def test_constant_channel_gets_unit_scale():
    images = [np.stack([np.full((4, 4), 7.0), np.arange(16.0).reshape(4, 4)])]
    stats = fit_normalization(images)
    assert stats.std[0] == 0.0 and stats.scale[0] == 1.0
    out = stats.apply(images[0])
    assert np.isfinite(out).all() and (out[0] == 0).all()


@pytest.mark.parametrize("scheme", ["zscore", "ct", "percentile", "none"])
def test_json_round_trip(scheme, training):
    images, labels = training
    stats = fit_normalization(images, labels, NormConfig(scheme))
    back = NormStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert back == stats
    np.testing.assert_array_equal(back.apply(images[0]), stats.apply(images[0]))


def test_fit_case_normalization_reads_labels_as_masks(training):
    images, labels = training
    cases = {f"c{i}": Case(f"c{i}", im, lab) for i, (im, lab) in enumerate(zip(images, labels))}
    reads = []

    def get(cid):
        reads.append(cid)
        return cases[cid]

    stats = fit_case_normalization(get, list(cases), NormConfig("ct"))
    assert reads == list(cases)  # each case read once
    assert stats == fit_normalization(images, labels, NormConfig("ct"))


@pytest.mark.parametrize("scheme", ["zscore", "ct", "percentile", "none"])
def test_fit_case_normalization_reads_only_images_when_no_mask_is_needed(scheme, training):
    images, labels = training
    cases = {f"c{i}": Case(f"c{i}", im, lab) for i, (im, lab) in enumerate(zip(images, labels))}
    full, alone = [], []

    def get_case(cid):
        full.append(cid)
        return cases[cid]

    def get_image(cid):
        alone.append(cid)
        return cases[cid].image

    stats = fit_case_normalization(get_case, list(cases), NormConfig(scheme), get_image=get_image)
    assert stats == fit_normalization(images, labels, NormConfig(scheme))
    assert (full, alone) == ((list(cases), []) if scheme == "ct" else ([], list(cases)))


def test_bad_input_errors(training):
    images, labels = training
    bad = images[1].copy()
    bad[0, 3, 3] = np.nan
    with pytest.raises(DataError, match="case-b.*NaN"):
        fit_normalization([images[0], bad], ids=["case-a", "case-b"])
    with pytest.raises(DataError, match="3 channels.*fitted on 2"):
        fit_normalization([images[0], np.zeros((3, 4, 4))])
    with pytest.raises(DataError, match="no training images"):
        fit_normalization([])
    with pytest.raises(DataError, match="does not match"):
        fit_normalization(images[:1], [np.zeros((5, 5))], NormConfig("ct"))
    with pytest.raises(DataError, match="fewer masks"):
        fit_normalization(images, labels[:2], NormConfig("ct"))
    with pytest.raises(DataError, match="no foreground"):
        fit_normalization(images, [np.zeros_like(lab) for lab in labels], NormConfig("ct"))
    stats = fit_normalization(images)
    with pytest.raises(DataError, match="scan.nii.*1 channels"):
        stats.apply(np.zeros((1, 4, 4)), where="scan.nii")
    with pytest.raises(DataError, match="NaN/Inf"):
        stats.apply(np.full((2, 4, 4), np.inf))
    with pytest.raises(DataError, match="run.json.*missing keys \\['std'\\]"):
        NormStats.from_dict({"scheme": "zscore", "mean": [0.0]}, where="run.json")
    with pytest.raises(DataError, match="clip range"):
        NormStats.from_dict({"scheme": "ct", "mean": [0.0], "std": [1.0]})
    with pytest.raises(DataError, match="unknown scheme"):
        NormStats.from_dict({"scheme": "z", "mean": [0.0], "std": [1.0]})


def test_config_validation():
    assert NormConfig() == NormConfig("zscore", (0.5, 99.5))
    for bad in ({"percentiles": (99.0, 1.0)}, {"percentiles": (-1.0, 50.0)}, {"reservoir": 0}, {"scheme": "minmax"}):
        with pytest.raises(ConfigError):
            NormConfig(**bad)
