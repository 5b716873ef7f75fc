"""SURE's losses penalise exactly the pairs their principles forbid (hand-built cases), and their helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trustseg.methods.sure_losses import (
    boundary_distance,
    far_loss,
    gradient_uncertainty_loss,
    image_gradient,
    noise_distance_loss,
    noise_mu_loss,
    sure_ramp,
)
from trustseg.methods.sure_patches import add_patch_noise, gather_centres, select_patch_centres


def _row(*v):
    return torch.tensor([v], dtype=torch.float64)  # (B=1, W)


# -- L_gu -------------------------------------------------------------------------------------------------------
D_BAND = _row(0, 1, 0.5, 5)  # the last pixel lies outside the band d <= 1
G = _row(1, 2, 3, 9)


def test_gu_zero_when_sharper_edge_is_more_certain():
    u = _row(0.3, 0.2, 0.1, 0.9)  # the out-of-band pixel (g=9, u=0.9) would violate if it were counted
    assert float(gradient_uncertainty_loss(u, G, D_BAND, num_pairs=None)) == 0.0
    gen = torch.Generator().manual_seed(0)
    assert float(gradient_uncertainty_loss(u, G, D_BAND, num_pairs=500, generator=gen)) == 0.0


def test_gu_exact_value_on_violations():
    # pairs (0,1): (1-2)(.1-.2)=.1, (0,2): (1-3)(.1-.4)=.6, (1,2): (2-3)(.2-.4)=.2 -> mean .3
    u = _row(0.1, 0.2, 0.4, 0.0)
    assert float(gradient_uncertainty_loss(u, G, D_BAND, num_pairs=None)) == pytest.approx(0.3)
    # mixed: (0,1): .2, (0,2): .2, (1,2): (-1)(.1) < 0 -> 0; mean .4/3
    u = _row(0.1, 0.3, 0.2, 0.0)
    assert float(gradient_uncertainty_loss(u, G, D_BAND, num_pairs=None)) == pytest.approx(0.4 / 3)


def test_gu_random_pairs_estimate_the_exact_mean():
    u = _row(0.1, 0.2, 0.4, 0.0)
    gen = torch.Generator().manual_seed(0)
    est = float(gradient_uncertainty_loss(u, G, D_BAND, num_pairs=40000, generator=gen))
    assert est == pytest.approx(0.3, abs=0.01)


def test_gu_batch_mean_skips_images_without_pairs_and_gradient_hits_violators():
    u = torch.tensor([[0.1, 0.2, 0.4, 0.0], [0.5, 0.5, 0.5, 0.5]], dtype=torch.float64, requires_grad=True)
    g = torch.cat([G, G])
    d = torch.cat([D_BAND, _row(0, 7, 7, 7)])  # the second image has a single band pixel
    loss = gradient_uncertainty_loss(u, g, d, num_pairs=None)
    assert float(loss.detach()) == pytest.approx(0.3)
    loss.backward()
    # d/du_i of mean_{pairs} (g_i - g_j)(u_i - u_j) over the violating pairs: u0: (-1 - 2)/3, u1: (1 - 1)/3, u2: 3/3
    np.testing.assert_allclose(u.grad[0].numpy(), [-1.0, 0.0, 1.0, 0.0])
    assert (u.grad[1] == 0).all()


def test_gu_no_band_is_zero_with_graph():
    u = torch.rand(1, 5, requires_grad=True)
    loss = gradient_uncertainty_loss(u, torch.rand(1, 5), torch.full((1, 5), 9.0))
    assert float(loss.detach()) == 0.0
    loss.backward()


# -- L_mu, L_d, L_far ----------------------------------------------------------------------------------------------
CENTRES = [torch.tensor([[1, 1], [4, 4]])]


def _maps(v0, v1, v2):
    """u0, u1, u2 (1, 6, 6) filled with distracting values, with the given values at the two centres."""
    gen = torch.Generator().manual_seed(3)
    out = []
    for vals in (v0, v1, v2):
        u = torch.rand(1, 6, 6, generator=gen, dtype=torch.float64)
        u[0, 1, 1], u[0, 4, 4] = vals
        out.append(u)
    return out


def test_mu_zero_when_uncertainty_rises_with_noise():
    u0, u1, u2 = _maps((0.1, 0.2), (0.2, 0.3), (0.3, 0.35))
    assert float(noise_mu_loss(u0, u1, u2, CENTRES)) == 0.0


def test_mu_exact_value():
    # centre A: u0 .3 > u1 .2 -> .1 ; u1 .2 < u2 .25 -> 0.  centre B: u0 .1 < u1 .5 ; u1 .5 > u2 .2 -> .3
    u0, u1, u2 = _maps((0.3, 0.1), (0.2, 0.5), (0.25, 0.2))
    assert float(noise_mu_loss(u0, u1, u2, CENTRES)) == pytest.approx(0.2)


def test_mu_without_centres_is_zero():
    u0, u1, u2 = _maps((0.3, 0.1), (0.2, 0.5), (0.25, 0.2))
    assert float(noise_mu_loss(u0, u1, u2, [torch.zeros(0, 2, dtype=torch.long)])) == 0.0


def _d_case(delta1, delta2):
    centres = [torch.tensor([[1, 1], [3, 3], [4, 4]])]
    d = torch.zeros(1, 6, 6, dtype=torch.float64)
    d[0, 1, 1], d[0, 3, 3], d[0, 4, 4] = 1.0, 2.0, 6.0  # the third centre lies beyond d <= 4
    u0 = torch.full((1, 6, 6), 0.1, dtype=torch.float64)
    u1, u2 = u0.clone(), u0.clone()
    for um, deltas in ((u1, delta1), (u2, delta2)):
        for (y, x), dv in zip(centres[0].tolist(), deltas):
            um[0, y, x] += dv
    return u0, u1, u2, d, centres


def test_d_zero_when_nearer_centre_gains_more():
    u0, u1, u2, d, centres = _d_case((0.5, 0.2, 0.9), (0.4, 0.1, 0.9))  # far centre would violate if counted
    assert float(noise_distance_loss(u0, u1, u2, d, centres)) == 0.0


def test_d_exact_value():
    # mu1: nearer gains .5 > .2 -> 0 ; mu2: nearer gains .1 < .4 -> (1 - 2)(.1 - .4) = .3
    u0, u1, u2, d, centres = _d_case((0.5, 0.2, 0.0), (0.1, 0.4, 0.0))
    assert float(noise_distance_loss(u0, u1, u2, d, centres)) == pytest.approx(0.3)


def test_far_is_mean_beyond_threshold():
    u = torch.rand(2, 5, 5, dtype=torch.float64)
    d = torch.rand(2, 5, 5, dtype=torch.float64) * 8
    d[0, 0, 0] = math.inf
    mask = d > 4
    assert float(far_loss(u, d)) == pytest.approx(float(u[mask].sum() / mask.sum()))
    assert float(far_loss(u, torch.zeros_like(d))) == 0.0


# -- helpers -------------------------------------------------------------------------------------------------------
def _brute_distance(lab: np.ndarray) -> np.ndarray:
    pad = np.pad(lab, 1, mode="edge")
    edge = np.zeros(lab.shape, bool)
    for idx in np.ndindex(*lab.shape):
        window = pad[tuple(slice(i, i + 3) for i in idx)]
        edge[idx] = (window != lab[idx]).any()
    pts = np.argwhere(edge)
    out = np.empty(lab.shape)
    for idx in np.ndindex(*lab.shape):
        out[idx] = np.sqrt(((pts - np.array(idx)) ** 2).sum(1)).min()
    return out


@pytest.mark.parametrize("dims", [2, 3])
def test_boundary_distance_matches_brute_force(dims):
    gen = torch.Generator().manual_seed(dims)
    sp = (10, 9) if dims == 2 else (6, 7, 5)
    lab = torch.zeros(sp, dtype=torch.long)
    lab[tuple(slice(1, s - 2) for s in sp)] = 1
    lab[tuple(slice(2, 4) for _ in sp)] = 2
    lab.view(-1)[torch.randint(lab.numel(), (3,), generator=gen)] = 1
    y = torch.nn.functional.one_hot(lab, 3).movedim(-1, 0)[None].float()
    d = boundary_distance(y)
    assert d.shape == (1, *sp) and d.dtype == torch.float32
    np.testing.assert_allclose(d[0].numpy(), _brute_distance(lab.numpy()), rtol=1e-6)


def test_boundary_distance_single_class_is_inf():
    y = torch.zeros(1, 2, 4, 4)
    y[:, 0] = 1
    assert torch.isinf(boundary_distance(y)).all()


def test_image_gradient_ramp_and_numpy():
    ii, jj = torch.meshgrid(torch.arange(5.0), torch.arange(6.0), indexing="ij")
    x = torch.stack([3 * ii + 2 * jj, torch.zeros_like(ii)])[None]  # (1, 2, 5, 6); second channel flat
    torch.testing.assert_close(image_gradient(x), torch.full((1, 5, 6), math.sqrt(13.0) / 2))
    x = torch.rand(2, 1, 4, 5, 6, dtype=torch.float64)
    gz, gy, gx = np.gradient(x.numpy(), axis=(2, 3, 4))
    np.testing.assert_allclose(image_gradient(x).numpy(), np.sqrt(gz**2 + gy**2 + gx**2)[:, 0])


def test_sure_ramp_schedule():
    assert sure_ramp(0, 100) == 0.0 and sure_ramp(29, 100) == 0.0
    assert sure_ramp(30, 100) == pytest.approx(0.01)
    assert sure_ramp(99, 100) == pytest.approx(1.0)
    assert sure_ramp(64, 100) == pytest.approx(0.01 ** (1 - 34 / 69))
    values = [sure_ramp(e, 100) for e in range(30, 100)]
    assert all(a < b for a, b in zip(values, values[1:]))
    assert sure_ramp(0, 1) == 1.0  # one epoch, no warm-up: on at once
    assert sure_ramp(5, 10, warmup_frac=1.0) == 0.0


@pytest.mark.parametrize("dims", [2, 3])
def test_select_patch_centres(dims):
    sp = (16, 16) if dims == 2 else (10, 10, 10)
    k = 3
    lab = torch.zeros(sp, dtype=torch.long)
    lab[tuple(slice(3, 9) for _ in sp)] = 1
    y = torch.nn.functional.one_hot(lab, 2).movedim(-1, 0)[None].float()
    d = boundary_distance(y)
    active = torch.zeros(1, *sp, dtype=torch.bool)
    hard = (3,) * dims  # one active pixel of class 1, on the boundary
    active[(0, *hard)] = True
    gen = torch.Generator().manual_seed(0)
    (centres,) = select_patch_centres(d, active, lab[None], 2, k=k, per_class=3, near=4.0, generator=gen)
    assert centres.shape == (6, dims)
    assert tuple(hard) in [tuple(c) for c in centres.tolist()]  # the active sample is taken first
    occupied = torch.zeros(sp, dtype=torch.int)
    for c in centres.tolist():
        assert all(k // 2 <= ci <= s - 1 - k // 2 for ci, s in zip(c, sp))  # patch fully inside
        assert float(d[(0, *c)]) <= 4.0
        occupied[tuple(slice(ci - 1, ci + 2) for ci in c)] += 1
    assert occupied.max() == 1  # non-overlapping
    assert sorted(int(lab[tuple(c)]) for c in centres.tolist()) == [0, 0, 0, 1, 1, 1]


def test_select_patch_centres_image_too_small():
    d = torch.zeros(1, 3, 3)
    (c,) = select_patch_centres(d, d.bool(), d.long(), 2, k=5)
    assert c.shape == (0, 2)


def test_add_patch_noise_only_inside_patches():
    x = torch.rand(2, 2, 8, 8)
    centres = [torch.tensor([[2, 2], [5, 5]]), torch.zeros(0, 2, dtype=torch.long)]
    out = add_patch_noise(x, centres, k=3, mu=0.7, sigma=0.0)
    inside = torch.zeros(8, 8, dtype=torch.bool)
    inside[1:4, 1:4] = inside[4:7, 4:7] = True
    torch.testing.assert_close(out[0][:, inside], x[0][:, inside] + 0.7)
    torch.testing.assert_close(out[0][:, ~inside], x[0][:, ~inside])
    torch.testing.assert_close(out[1], x[1])
    gen = torch.Generator().manual_seed(0)
    noisy = add_patch_noise(x, centres, k=3, mu=0.0, sigma=0.3, generator=gen)
    assert not torch.equal(noisy[0, 0, 1:4, 1:4], noisy[0, 0, 4:7, 4:7] - x[0, 0, 4:7, 4:7] + x[0, 0, 1:4, 1:4])
    vals = gather_centres(out[:, 0], centres)
    assert [v.shape[0] for v in vals] == [2, 0]
