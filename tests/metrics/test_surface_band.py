"""The boundary-band distances (``backend="band"``, the default) against the whole-crop EDT, the KD-tree and brute
force: every stage (band, KD-tree outside it, feature transform outside it), 2D and 3D, anisotropic spacing, empty
classes, one-voxel objects, objects touching the border, and hand-built known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist

from trustseg.metrics import surface_distance as sd
from trustseg.metrics.surface import class_box, directed_distances, surface_metrics, surface_voxels


def blob(shape, seed, sigma=2.0, level=0.6):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), sigma)
    return field > np.quantile(field, level)


def noisy(mask, seed, p=0.1):
    """Salt-and-pepper flips: many boundary voxels far from the other mask (the fallback stages)."""
    return mask ^ (np.random.default_rng(seed).random(mask.shape) < p)


CASES = [
    ((40, 36), (1.0, 1.0), 0),
    ((33, 41), (0.7, 1.3), 1),
    ((14, 16, 12), (2.0, 0.8, 1.1), 2),
    ((20, 18, 22), (1.0, 1.0, 3.0), 3),
]


def assert_same_sets(x, y):
    for u, v in zip(x, y):
        assert u.shape == v.shape
        np.testing.assert_allclose(np.sort(u), np.sort(v), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("convention", ["surface", "voxelset"])
@pytest.mark.parametrize("shape,spacing,seed", CASES)
@pytest.mark.parametrize("make", ["smooth", "noisy"])
def test_band_equals_edt_and_kdtree(shape, spacing, seed, convention, make):
    a, b = blob(shape, seed), blob(shape, seed + 10)
    if make == "noisy":
        a = noisy(a, seed)
    band = directed_distances(a, b, spacing, convention, "band")
    assert_same_sets(band, directed_distances(a, b, spacing, convention, "edt"))
    assert_same_sets(band, directed_distances(a, b, spacing, convention, "kdtree"))
    assert_same_sets(band, directed_distances(a, b, spacing, convention, "auto"))


@pytest.mark.parametrize("stage", ["band_only", "kdtree", "feature_transform", "early_stop"])
@pytest.mark.parametrize("shape,spacing,seed", CASES)
def test_every_stage_matches_brute_force(monkeypatch, stage, shape, spacing, seed):
    q, t = noisy(blob(shape, seed, level=0.8), seed, 0.05), surface_voxels(blob(shape, seed + 5, level=0.7))
    sp = np.asarray(spacing)
    radius = sd.BAND_RADIUS
    if stage == "band_only":
        box = (slice(0, 6),) * q.ndim
        q, t = q[box], t[box].copy()
        t[(0,) * t.ndim] = True
        radius = 6.0 * math.hypot(*spacing) / min(spacing)  # the whole crop is band: no fallback
        monkeypatch.setattr(sd, "BAND_WORK_PER_VOXEL", 10**9)
    elif stage == "kdtree":
        radius = 0.5  # only the zero offset, everything else by the KD-tree
        monkeypatch.setattr(sd, "FT_DENSITY", 0)
    elif stage == "feature_transform":
        radius = 1.0
        monkeypatch.setattr(sd, "FT_DENSITY", 10**9)
    else:
        monkeypatch.setattr(sd, "BAND_WORK_PER_VOXEL", 0)
    ref = cdist(np.argwhere(q) * sp, np.argwhere(t) * sp).min(axis=1)
    np.testing.assert_allclose(sd.band_distances(q, t, sp, radius), ref, rtol=1e-12, atol=1e-12)


def test_band_offsets_sorted_and_complete():
    off, d = sd.band_offsets((1.0, 0.5, 2.0), 3.0)
    assert (np.diff(d) >= 0).all() and d[0] == 0.0 and d.max() <= 1.5 + 1e-12
    # every integer offset within the ball is present: count against brute force
    g = np.stack(np.meshgrid(*[np.arange(-8, 9)] * 3, indexing="ij"), -1).reshape(-1, 3)
    inside = np.sqrt(((g * [1.0, 0.5, 2.0]) ** 2).sum(1)) <= 1.5 + 1e-12
    assert off.shape[0] == int(inside.sum())


def test_known_answer_two_single_voxels():
    # one-voxel objects: inside the band (sqrt(1 + 16) = 4.12 < 6) and outside it (sqrt(9 + 64) = 8.54)
    sp = (1.0, 2.0, 3.0)
    for offset, dist in (((1, 2, 0), math.sqrt(17.0)), ((3, 4, 0), math.sqrt(73.0))):
        p = np.zeros((8, 9, 4), np.uint8)
        t = np.zeros_like(p)
        p[1, 1, 1] = 1
        t[1 + offset[0], 1 + offset[1], 1 + offset[2]] = 1
        out = surface_metrics(p, t, 2, spacing=sp, tolerance=dist)
        for key in ("hd", "hd95", "assd"):
            assert out[key][0].item() == pytest.approx(dist, rel=1e-15)
        assert out["nsd"][0].item() == 1.0
        assert surface_metrics(p, t, 2, spacing=sp, tolerance=dist * 0.999)["nsd"][0].item() == 0.0


def test_known_answer_shifted_cubes_touching_border():
    # cube of side 4 at the corner (touching the border) and the same cube shifted by 2 along axis 0, spacing 1.5
    a = np.zeros((10, 6, 6), bool)
    b = np.zeros_like(a)
    a[0:4, 0:4, 0:4] = True
    b[2:6, 0:4, 0:4] = True
    d_ab, d_ba = directed_distances(a, b, (1.5, 1.0, 1.0))
    ref = directed_distances(a, b, (1.5, 1.0, 1.0), backend="kdtree")
    assert_same_sets((d_ab, d_ba), ref)
    # a's 56 boundary voxels: row 0 (16, on the image border) are 2 rows = 3.0 from b's face at row 2; the ring of
    # row 1 (12) 1.5; the rings of rows 2 and 3 (24) lie on b's boundary (0); the 4 inner voxels of row 3 are inside
    # b, 1.0 from its side faces. b -> a is the mirror image.
    known = np.array([0.0] * 24 + [1.0] * 4 + [1.5] * 12 + [3.0] * 16)
    np.testing.assert_allclose(np.sort(d_ab), known)
    np.testing.assert_allclose(np.sort(d_ba), known)
    out = surface_metrics(a.astype(np.uint8), b.astype(np.uint8), 2, (1.5, 1.0, 1.0), tolerance=1.0)
    assert out["hd"][0].item() == 3.0
    assert out["assd"][0].item() == pytest.approx(2 * (4 * 1.0 + 12 * 1.5 + 16 * 3.0) / 112)
    assert out["nsd"][0].item() == pytest.approx(2 * 28 / 112)
    assert out["hd95"][0].item() == pytest.approx(np.percentile(np.concatenate([known, known]), 95))


def test_surface_metrics_equals_reference_per_class():
    rng = np.random.default_rng(4)
    shape = (18, 20, 16)
    p = np.zeros(shape, np.uint8)
    t = np.zeros(shape, np.uint8)
    p[blob(shape, 1)] = 1
    p[noisy(np.zeros(shape, bool), 2, 0.02)] = 2
    t[blob(shape, 3)] = 1
    t[rng.random(shape) > 0.995] = 2
    p[0, 0, 0] = 3  # class 3: one voxel, in pred only -> NaN under empty_one="nan"
    sp = (1.2, 0.8, 2.5)
    for conv in ("surface", "voxelset"):
        fast = surface_metrics(torch.as_tensor(p), torch.as_tensor(t), 5, sp, conv, 1.5, empty_one="nan")
        ref = surface_metrics(p, t, 5, sp, conv, 1.5, empty_one="nan", backend="kdtree")
        for key in fast:
            np.testing.assert_allclose(fast[key].numpy(), ref[key].numpy(), rtol=1e-12, equal_nan=True)
        assert math.isnan(fast["hd95"][2].item())  # class 3 in pred only
        assert fast["hd95"][3].item() == 0.0  # class 4 in neither: "best"


def test_class_box():
    p = np.zeros((5, 6, 7), np.uint8)
    t = np.zeros_like(p)
    p[1, 2, 3] = 2
    t[4, 0, 6] = 2
    assert class_box(p, t, 2) == (slice(1, 5), slice(0, 3), slice(3, 7))
    assert class_box(p, t, 1) is None
    assert class_box(p[0, 0], t[0, 0], 2) is None
