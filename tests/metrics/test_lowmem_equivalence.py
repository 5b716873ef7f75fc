"""The low-memory rewrites (issue 11, F7 evaluate side) against the formulas they replace, on seeded inputs with
small forced chunks: same numbers up to float round-off (integers exactly)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from trustseg.metrics import curvas, geometry, overlap, voxel_stats
from trustseg.metrics.uncertainty_quality import (
    band_ucc_gradient,
    band_ur_gradient,
    gradient_band,
    pair_order_rate,
    spearman,
    ucc_gradient,
    ur_gradient,
)


def _case(seed: int = 0, shape=(6, 9, 8), k: int = 3, r: int = 3):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(2 * torch.randn(k, *shape, generator=g), 0)
    labels = torch.randint(0, k, (r, *shape), generator=g)
    labels[:, :2] = 0  # some consensus background
    labels[:, -2:, 2:6, 2:6] = 1  # some consensus foreground
    return probs, labels


def _old_gradient(image, spacing=None):
    kw = {} if spacing is None else {"spacing": [float(s) for s in spacing]}
    grads = torch.gradient(image, dim=tuple(range(1, image.dim())), **kw)
    return torch.sqrt(sum(gg * gg for gg in grads)).mean(0)


def _old_band(labels, width, spacing=None):
    b = geometry.boundary_mask(labels).numpy()
    d = ndimage.distance_transform_edt(~b, sampling=None if spacing is None else list(spacing))
    return torch.from_numpy(d <= width)


def test_chunked_argmax_and_masked_mean_match_torch():
    probs, _ = _case(1)
    probs[0, 0, 0, 0] = probs[1, 0, 0, 0]  # a tie: the lower class
    got = voxel_stats.chunked_argmax(probs, chunk=7)
    assert got.dtype == torch.uint8 and torch.equal(got.long(), probs.argmax(0))
    mask = probs[1] > 0.3
    assert voxel_stats.masked_mean(probs[2], mask, chunk=5) == pytest.approx(float(probs[2].double()[mask].mean()))
    assert math.isnan(voxel_stats.masked_mean(probs[2], torch.zeros_like(mask), chunk=5))


@pytest.mark.parametrize("width", [0.0, 1.0, 1.5, 2.0])
@pytest.mark.parametrize("spacing", [None, (1.0, 1.0, 1.0), (2.0, 1.0, 0.7)])
def test_boundary_band_is_the_distance_test(width, spacing):
    _, labels = _case(2)
    lab = labels[0]
    assert torch.equal(geometry.boundary_band(lab, width, spacing), _old_band(lab, width, spacing))


def test_boundary_band_wide_and_empty():
    _, labels = _case(3)
    assert torch.equal(geometry.boundary_band(labels[0], 5.0), _old_band(labels[0], 5.0))  # distance-transform path
    assert not geometry.boundary_band(torch.zeros(4, 5, 6, dtype=torch.long), 1.0).any()  # no boundary


@pytest.mark.parametrize("spacing", [None, (1.0, 2.0, 0.5)])
def test_gradient_magnitude_matches_the_all_axes_formula(spacing):
    g = torch.Generator().manual_seed(4)
    one = torch.randn(1, 6, 9, 8, generator=g)
    assert torch.equal(geometry.gradient_magnitude(one, spacing), _old_gradient(one, spacing))  # one channel: exact
    two = torch.randn(2, 6, 9, 8, generator=g)
    torch.testing.assert_close(geometry.gradient_magnitude(two, spacing), _old_gradient(two, spacing))


def test_sure_gradient_metrics_match_the_float64_distance_path():
    probs, labels = _case(5)
    g = torch.Generator().manual_seed(6)
    image, u = torch.randn(1, *labels.shape[1:], generator=g), probs[1]
    lab, sp = labels[0], (1.0, 1.5, 1.0)
    d = geometry.boundary_distance(lab, sp)
    near = d <= 1.0
    gg = _old_gradient(image, sp).to(torch.float64)
    old_ucc = float(spearman(gg[near], u.double()[near]))
    old_ur = float(pair_order_rate(gg[near], u.double()[near]))
    assert float(ucc_gradient(u, image, lab, spacing=sp)) == pytest.approx(old_ucc, rel=1e-6)
    assert float(ur_gradient(u, image, lab, spacing=sp)) == pytest.approx(old_ur, rel=1e-6)
    nb, gb = gradient_band(image, lab, spacing=sp)
    assert torch.equal(nb, near)
    assert float(band_ucc_gradient(u, nb, gb)) == pytest.approx(old_ucc, rel=1e-6)
    assert float(band_ur_gradient(u, nb, gb)) == pytest.approx(old_ur, rel=1e-6)


def test_overlap_counts_of_uint8_maps_are_the_int64_counts():
    probs, labels = _case(7)
    hard = voxel_stats.chunked_argmax(probs)
    a = overlap.confusion_counts(hard, labels[0].to(torch.uint8), 3, chunk=11)
    assert torch.equal(a, overlap.confusion_counts(hard.long(), labels[0], 3))
    got = overlap.dice_vs_raters(hard, labels.to(torch.uint8), 3, empty="nan")
    ref = overlap.dice_vs_raters(hard.long(), labels, 3, empty="nan")
    for key, value in ref.items():
        torch.testing.assert_close(got[key], value, equal_nan=True)


def _old_consensus_dice_challenge(pred, labels, cls):
    fg, _, dis = curvas.consensus_regions(labels, cls)
    p, g = (pred & ~dis)[:, 1:].double(), fg[:, 1:].double()
    inter, size_g, size_p = (p * g).sum(-1), g.sum(-1), p.sum(-1)
    rows = size_g > 0
    dice = torch.where(rows, 2 * inter / (size_g + size_p).clamp_min(1), torch.zeros_like(inter))
    n_rows = rows.sum(-1)
    slices = n_rows > 0
    return float((dice.sum(-1)[slices] / n_rows[slices]).mean()) if bool(slices.any()) else 0.0


@pytest.mark.parametrize("seed", [8, 9])
def test_curvas_pieces_match_the_previous_formulas(seed):
    probs, labels = _case(seed)
    pred = probs.argmax(0)
    for c in (1, 2):
        old_vol = float(overlap.consensus_dice((pred == c).long(), (labels == c).long(), 2, empty="nan")[0])
        new_vol = curvas.consensus_dice(pred == c, labels, c)
        assert new_vol == pytest.approx(old_vol, nan_ok=True)
        old_ch = _old_consensus_dice_challenge(pred == c, labels, c)
        assert curvas.consensus_dice(pred == c, labels, c, mode="challenge") == pytest.approx(old_ch)
        fg, bg, _ = curvas.consensus_regions(labels, c)
        p64 = probs[c].double()
        old_conf = 0.5 * ((1 - float(p64[bg].mean())) + float(p64[fg].mean()))
        assert curvas.consensus_confidence(probs[c], labels, c) == pytest.approx(old_conf, rel=1e-12)
        old_vols = (labels == c).flatten(1).sum(1).double() * 2.0
        assert torch.equal(curvas.rater_volumes(labels, c, 2.0), old_vols)
        v = curvas.volume_crps(probs[c], labels, c, spacing=(2.0, 1.0, 1.0))
        assert v["predicted_volume"] == pytest.approx(float(probs[c].sum(dtype=torch.float64)) * 2.0, rel=1e-12)


def test_ball_offsets_anisotropic():
    ball = geometry.ball_offsets(2.0, (2.0, 1.0))
    assert ball.shape == (3, 5) and bool(ball[1].all()) and int(ball.sum()) == 7
    assert np.array_equal(geometry.ball_offsets(0.5, (1.0, 1.0)), np.ones((1, 1), dtype=bool))
