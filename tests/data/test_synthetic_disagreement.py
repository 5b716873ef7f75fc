"""Per-case disagreement level of the synthetic generator (``SynthConfig.disagreement_spread``, issue 13)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from scipy import stats

from trustseg.core.errors import ConfigError
from trustseg.data.synthetic import SynthConfig, disagreement_level, generate_case


def _digest(cfg: SynthConfig, indices: list[int]) -> str:
    h = hashlib.sha256()
    for i in indices:
        c, t = generate_case(i, cfg, return_truth=True)
        for a in (c.image, c.labels, t.labels, t.faintness, t.distance, t.rater_offsets):
            h.update(a.tobytes())
    return h.hexdigest()


def _disagreement(case) -> float:
    """Σ over pixels of the raters' disagreement Σ_k ȳ_k(1 − ȳ_k)."""
    y = np.stack([(case.labels == k).mean(0) for k in range(3)])
    return float((y * (1 - y)).sum())


def test_off_by_default_and_bit_identical_to_the_generator_before_the_option():
    # digests of the generator before disagreement_spread existed (numpy 2 / scipy 1.1x of this repository's lock)
    assert SynthConfig().disagreement_spread == 0.0
    assert _digest(SynthConfig(size=32), [0, 1, 2]) == (
        "19523918cb745fa9ec3ec0c5a2de911c68822f653afe3e2555cd221695eadbcb"
    )
    cfg3 = SynthConfig(size=16, dims=3, raters=2, num_classes=4, seed=7)
    assert _digest(cfg3, [0, 5]) == "434077c639dce74adf14054bd9206bbd0231ffe408f86f9992976a9419694f10"
    case, truth = generate_case(0, SynthConfig(size=32), return_truth=True)
    assert "disagreement_level" not in case.meta and truth.level == 1.0


def test_wide_spread_of_per_image_disagreement_and_tied_to_the_level():
    n = 16
    off = [_disagreement(generate_case(i, SynthConfig(size=32))) for i in range(n)]
    cfg = SynthConfig(size=32, disagreement_spread=1.0)
    pairs = [generate_case(i, cfg, return_truth=True) for i in range(n)]
    on = np.array([_disagreement(c) for c, _ in pairs])
    levels = np.array([t.level for _, t in pairs])
    cv_off, cv_on = np.std(off) / np.mean(off), on.std() / on.mean()
    assert cv_on > 0.6 and cv_on > 2 * cv_off, (cv_on, cv_off)  # measured: 0.80 vs 0.30
    assert stats.spearmanr(levels, on)[0] > 0.7  # measured 0.88
    assert all(c.meta["disagreement_level"] == t.level for c, t in pairs)
    assert levels.min() >= 0.0 and levels.max() <= 2.0


def test_level_is_visible_in_the_image():
    """Higher level: blurrier, lower-contrast edges where the image is faint (what a network can see)."""
    cfg = SynthConfig(size=32, disagreement_spread=1.0)
    levels, sharpness = [], []
    for i in range(16):
        case, truth = generate_case(i, cfg, return_truth=True)
        g = np.hypot(*np.gradient(case.image[0]))
        band = (truth.boundary_distance <= 1) & (truth.faintness > 0.5)
        if band.any():
            levels.append(truth.level)
            sharpness.append(g[band].mean())
    assert len(levels) >= 10
    assert stats.spearmanr(levels, sharpness)[0] < -0.4  # measured −0.62


def test_reproducible_by_seed_and_shapes_kept():
    cfg = SynthConfig(size=32, disagreement_spread=0.8, seed=3)
    a, b = generate_case(4, cfg), generate_case(4, cfg)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert disagreement_level(4, cfg) == a.meta["disagreement_level"]
    assert disagreement_level(4, cfg) != disagreement_level(4, SynthConfig(disagreement_spread=0.8, seed=4))
    # the level has its own stream: the true shapes are those of the case without the option
    _, t_on = generate_case(4, cfg, return_truth=True)
    _, t_off = generate_case(4, SynthConfig(size=32, seed=3), return_truth=True)
    assert np.array_equal(t_on.labels, t_off.labels) and np.array_equal(t_on.faintness, t_off.faintness)


def test_rater_shifts_scale_with_the_level():
    """ℓ·f·(b_r + rater_noise·z_r): the offsets are the option-free ones times ℓ (ℓ = 0: the raters agree)."""
    on, off = SynthConfig(size=32, disagreement_spread=1.0), SynthConfig(size=32)
    for i in (0, 1, 2):
        _, t_on = generate_case(i, on, return_truth=True)
        _, t_off = generate_case(i, off, return_truth=True)
        np.testing.assert_allclose(t_on.rater_offsets, t_on.level * t_off.rater_offsets, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_spread_validated(value):
    with pytest.raises(ConfigError, match="disagreement_spread"):
        SynthConfig(disagreement_spread=value)
