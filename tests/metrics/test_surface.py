"""Hausdorff / HD95 / ASSD / NSD in the surface and voxel-set conventions, against MONAI and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist

from trustseg.core.errors import DataError
from trustseg.metrics import METRICS
from trustseg.metrics.surface import (
    assd,
    directed_distances,
    hausdorff,
    hd95,
    nsd,
    surface_metrics,
    surface_voxels,
)


def blob(shape, seed, sigma=2.0, level=0.6):
    """A smooth random binary blob (several components, may touch the border)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random(shape), sigma)
    return field > np.quantile(field, level)


CASES = [((40, 36), (1.0, 1.0), 0), ((40, 36), (0.7, 1.3), 1), ((14, 16, 12), (2.0, 0.8, 1.1), 2)]


def _monai_in(mask):
    return torch.as_tensor(mask, dtype=torch.float32)[None, None]


@pytest.mark.parametrize("shape,spacing,seed", CASES)
def test_surface_convention_matches_monai(shape, spacing, seed):
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    a, b = blob(shape, seed), blob(shape, seed + 10)
    ma, mb = _monai_in(a), _monai_in(b)
    sp = list(spacing)
    ref95 = compute_hausdorff_distance(ma, mb, include_background=True, percentile=95, spacing=sp).item()
    ref100 = compute_hausdorff_distance(ma, mb, include_background=True, spacing=sp).item()
    ref_asd = compute_average_surface_distance(ma, mb, include_background=True, symmetric=True, spacing=sp).item()
    ref_nsd = compute_surface_dice(ma, mb, [1.5], include_background=True, spacing=sp).item()
    assert hd95(a, b, spacing, pooling="max").item() == pytest.approx(ref95, rel=1e-5)
    assert hausdorff(a, b, spacing).item() == pytest.approx(ref100, rel=1e-5)
    assert assd(a, b, spacing).item() == pytest.approx(ref_asd, rel=1e-5)
    assert nsd(a, b, 1.5, spacing).item() == pytest.approx(ref_nsd, rel=1e-5)


def _brute(a, b, spacing, convention):
    sp = np.asarray(spacing, dtype=float)
    if convention == "surface":
        a = a & ~ndimage.binary_erosion(a, border_value=0)
        b = b & ~ndimage.binary_erosion(b, border_value=0)
    pa, pb = np.argwhere(a) * sp, np.argwhere(b) * sp
    d = cdist(pa, pb)
    return d.min(1), d.min(0)


@pytest.mark.parametrize("convention", ["surface", "voxelset"])
@pytest.mark.parametrize("shape,spacing,seed", [((12, 11), (1.0, 1.5), 3), ((7, 8, 6), (1.2, 0.9, 2.0), 4)])
def test_against_brute_force_cdist(convention, shape, spacing, seed):
    a, b = blob(shape, seed, sigma=1.0, level=0.55), blob(shape, seed + 1, sigma=1.0, level=0.55)
    d_ab, d_ba = _brute(a, b, spacing, convention)
    pooled = np.concatenate([d_ab, d_ba])
    for backend in ("edt", "kdtree"):
        ours = directed_distances(a, b, spacing, convention, backend)
        np.testing.assert_allclose(np.sort(ours[0]), np.sort(d_ab), atol=1e-9)
        np.testing.assert_allclose(np.sort(ours[1]), np.sort(d_ba), atol=1e-9)
    assert hd95(a, b, spacing, convention).item() == pytest.approx(np.percentile(pooled, 95))
    assert hausdorff(a, b, spacing, 50, convention, pooling="max").item() == pytest.approx(
        max(np.median(d_ab), np.median(d_ba))
    )
    assert assd(a, b, spacing, convention).item() == pytest.approx(pooled.mean())
    assert assd(a, b, spacing, convention, average="directed_mean").item() == pytest.approx(
        (d_ab.mean() + d_ba.mean()) / 2
    )
    assert nsd(a, b, 1.0, spacing, convention).item() == pytest.approx((pooled <= 1.0).mean())


def test_backends_agree_3d():
    a, b = blob((30, 28, 26), 5, sigma=3.0), blob((30, 28, 26), 6, sigma=3.0)
    for conv in ("surface", "voxelset"):
        e = directed_distances(a, b, (1.0, 0.5, 2.0), conv, "edt")
        k = directed_distances(a, b, (1.0, 0.5, 2.0), conv, "kdtree")
        for x, y in zip(e, k):
            np.testing.assert_allclose(np.sort(x), np.sort(y), atol=1e-9)


def test_surface_voxels_matches_scipy_erosion():
    a = blob((15, 13, 9), 7, sigma=1.5)
    np.testing.assert_array_equal(surface_voxels(a), a ^ ndimage.binary_erosion(a, border_value=0))


def test_shifted_squares_hand_case():
    a = np.zeros((12, 12), bool)
    b = np.zeros((12, 12), bool)
    a[2:6, 2:6] = True
    b[4:8, 2:6] = True  # shifted by 2 rows; row spacing 0.5 -> every distance is 0 or 1
    assert hausdorff(a, b, (0.5, 1.0)).item() == pytest.approx(1.0)
    # voxel-set: the 8 non-overlapping voxels of each mask are 0.5 or 1.0 away, the 8 shared ones 0
    assert assd(a, b, (0.5, 1.0), "voxelset").item() == pytest.approx((4 * 0.5 + 4 * 1.0) * 2 / 32)
    assert hausdorff(a, a, 1.0).item() == 0.0
    assert nsd(a, b, 0.99, (0.5, 1.0)).item() < 1.0 == nsd(a, b, 1.0, (0.5, 1.0)).item()


def test_empty_masks():
    z = np.zeros((6, 6), bool)
    a = z.copy()
    a[2:4, 2:4] = True
    assert hd95(z, z).item() == 0.0
    assert math.isnan(hd95(z, z, empty_both="nan").item())
    assert hd95(a, z).item() == math.inf and hd95(z, a).item() == math.inf
    assert math.isnan(assd(z, a, empty_one="nan").item())
    assert nsd(z, z, 1.0).item() == 1.0 and nsd(a, z, 1.0).item() == 0.0
    assert math.isnan(nsd(a, z, 1.0, empty_one="nan").item())


def test_surface_metrics_per_class_and_torch_input():
    rng = np.random.default_rng(8)
    shape = (20, 18)
    lab_a = np.zeros(shape, np.int64)
    lab_b = np.zeros(shape, np.int64)
    lab_a[blob(shape, 9)] = 1
    lab_a[blob(shape, 10, level=0.85)] = 2
    lab_b[blob(shape, 11)] = 1
    lab_b[rng.random(shape) > 0.97] = 2
    out = surface_metrics(torch.as_tensor(lab_a), torch.as_tensor(lab_b), 4, spacing=(1.0, 2.0), tolerance=2.0)
    assert set(out) == {"hd", "hd95", "assd", "nsd"}
    assert out["hd95"].shape == (3,)
    for k in (1, 2):
        a, b = lab_a == k, lab_b == k
        assert out["hd95"][k - 1].item() == pytest.approx(hd95(a, b, (1.0, 2.0)).item())
        assert out["hd"][k - 1].item() == pytest.approx(hausdorff(a, b, (1.0, 2.0)).item())
        assert out["assd"][k - 1].item() == pytest.approx(assd(a, b, (1.0, 2.0)).item())
        assert out["nsd"][k - 1].item() == pytest.approx(nsd(a, b, 2.0, (1.0, 2.0)).item())
    assert out["hd95"][2].item() == 0.0  # class 3 absent from both: "best"
    assert surface_metrics(lab_a, lab_b, 3, include_background=True, percentile=90)["hd90"].shape == (3,)


def test_bad_input():
    a = np.zeros((4, 4), bool)
    with pytest.raises(DataError):
        hd95(a, np.zeros((4, 5), bool))
    with pytest.raises(DataError):
        hd95(a, a, spacing=(1.0, 2.0, 3.0))
    with pytest.raises(DataError):
        hd95(np.full((4, 4), 2), a)
    with pytest.raises(ValueError):
        directed_distances(a, a, convention="chamfer")


def test_registered_with_conventions():
    for name in ("hd95_surface", "hd95_voxelset", "assd_surface", "assd_voxelset", "nsd_surface", "nsd_voxelset"):
        assert name in METRICS
    a, b = blob((16, 16), 12), blob((16, 16), 13)
    assert METRICS.get("hd95_voxelset")(a, b).item() == pytest.approx(hd95(a, b, convention="voxelset").item())
