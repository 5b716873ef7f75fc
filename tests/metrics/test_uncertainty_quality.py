"""Uncertainty-quality metrics against scipy/scikit-learn and hand-built cases; geometry helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from trustseg.core.errors import ConfigError, DataError
from trustseg.metrics import METRICS
from trustseg.metrics.geometry import boundary_band, boundary_distance, gradient_magnitude
from trustseg.metrics.uncertainty_quality import (
    error_mask,
    image_correlation,
    image_disagreement,
    pair_order_rate,
    pearson,
    pixel_correlation,
    spearman,
    ucc_distance,
    ucc_gradient,
    ucc_mu,
    ueo,
    uncertainty_error_auprc,
    uncertainty_error_auroc,
    ur_distance,
    ur_gradient,
    ur_mu,
)


def square_labels(n=9, lo=3, hi=6) -> torch.Tensor:
    lab = torch.zeros(n, n, dtype=torch.long)
    lab[lo:hi, lo:hi] = 1
    return lab


# -- geometry -----------------------------------------------------------------------------------------------------
def test_boundary_distance_of_a_square_face_connectivity():
    d = boundary_distance(square_labels(), connectivity="face")
    assert d[4, 4] == 1.0  # centre of the 3x3 square; its ring is the inner boundary
    assert d[3, 3] == 0 and d[2, 4] == 0  # inner and outer boundary pixels
    # (2, 2) touches the square only diagonally, so it is not boundary: the corner's nearest is (2, 3)
    assert d[0, 4] == 2.0 and math.isclose(float(d[0, 0]), math.hypot(2, 3)) and d[2, 2] == 1.0
    assert int(boundary_band(square_labels(), 0, connectivity="face").sum()) == 8 + 12  # inner ring + outer faces
    assert int(boundary_band(square_labels(), 1, connectivity="face").sum()) == 20 + 1 + 12 + 4
    assert float(boundary_distance(square_labels(), spacing=(2.0, 2.0), connectivity="face")[0, 4]) == 4.0


def test_boundary_distance_of_a_square_full_connectivity():
    d = boundary_distance(square_labels())  # boundary = the 5x5 block [2:7, 2:7] minus the centre
    assert int((d == 0).sum()) == 24 and d[4, 4] == 1.0 and d[2, 2] == 0
    assert d[0, 4] == 2.0 and math.isclose(float(d[0, 0]), math.hypot(2, 2))
    assert int(boundary_band(square_labels(), 1).sum()) == 24 + 1 + 20  # + centre and the face-adjacent ring
    assert torch.isinf(boundary_distance(torch.zeros(4, 4, dtype=torch.long))).all()
    vol = torch.zeros(5, 5, 5, dtype=torch.long)
    vol[2, 2, 2] = 1
    dv = boundary_distance(vol)  # boundary = the 3x3x3 cube around the voxel, minus the voxel itself
    assert float(dv[2, 2, 0]) == 1.0 and math.isclose(float(dv[0, 0, 0]), math.sqrt(3))
    with pytest.raises(ConfigError, match="connectivity"):
        boundary_distance(vol, connectivity="diagonal")
    with pytest.raises(DataError, match="integer"):
        boundary_distance(vol.float())


def test_boundary_distance_agrees_with_sure_training_loss():
    sure_losses = pytest.importorskip("trustseg.methods.sure_losses")
    g = torch.Generator().manual_seed(5)
    lab = (torch.rand(12, 12, generator=g) > 0.6).long() + (torch.rand(12, 12, generator=g) > 0.8).long()
    onehot = torch.nn.functional.one_hot(lab, 3).permute(2, 0, 1)[None].float()
    assert torch.allclose(boundary_distance(lab).float(), sure_losses.boundary_distance(onehot)[0])


def test_gradient_of_a_ramp():
    h, w = 5, 6
    ramp = (3.0 * torch.arange(w, dtype=torch.float64)).repeat(h, 1)
    img = torch.stack([ramp, 2 * ramp])  # channel magnitudes 3 and 6 -> mean 4.5
    assert torch.allclose(gradient_magnitude(img), torch.full((h, w), 4.5, dtype=torch.float64))
    diag = torch.arange(h, dtype=torch.float64)[:, None] + torch.arange(w, dtype=torch.float64)[None]
    assert torch.allclose(gradient_magnitude(diag[None]), torch.full((h, w), math.sqrt(2), dtype=torch.float64))
    step = torch.zeros(1, 4, 4)
    step[0, :, 2:] = 1
    g = gradient_magnitude(step)
    assert torch.allclose(g[0], torch.tensor([0.0, 0.5, 0.5, 0.0]))  # central inside, one-sided at edges
    with pytest.raises(DataError):
        gradient_magnitude(torch.zeros(1, 1, 4))


# -- correlations --------------------------------------------------------------------------------------------------
def test_pearson_spearman_match_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, generator=g, dtype=torch.float64)
    y = x + torch.randn(200, generator=g, dtype=torch.float64)
    yt = torch.round(y * 2) / 2  # many ties
    assert math.isclose(float(pearson(x, y)), scipy.stats.pearsonr(x.numpy(), y.numpy())[0], rel_tol=1e-9)
    assert math.isclose(float(spearman(x, yt)), scipy.stats.spearmanr(x.numpy(), yt.numpy())[0], rel_tol=1e-9)
    assert torch.isnan(pearson(x, torch.ones(200))) and torch.isnan(spearman(torch.ones(3), x[:3]))


def test_pixel_correlation_per_image_mean_pooled():
    g = torch.Generator().manual_seed(1)
    u = torch.rand(3, 6, 6, generator=g, dtype=torch.float64)
    t = u + 0.5 * torch.rand(3, 6, 6, generator=g, dtype=torch.float64)
    t[2] = 0.3  # constant target: undefined, skipped in the mean
    for method, ref in (("pearson", scipy.stats.pearsonr), ("spearman", scipy.stats.spearmanr)):
        out = pixel_correlation(u, t, method=method)
        per = [ref(u[b].flatten().numpy(), t[b].flatten().numpy())[0] for b in range(2)]
        assert np.allclose(out["per_image"][:2].numpy(), per) and torch.isnan(out["per_image"][2])
        assert math.isclose(float(out["mean"]), float(np.mean(per)), rel_tol=1e-12)
        assert int(out["n_images"]) == 2
        pooled = ref(u.flatten().numpy(), t.flatten().numpy())[0]
        assert math.isclose(float(out["pooled"]), pooled, rel_tol=1e-9)
    mask = torch.zeros(3, 6, 6, dtype=torch.bool)
    mask[:, :3] = True
    masked = pixel_correlation(u, t, mask=mask)
    ref0 = scipy.stats.pearsonr(u[0, :3].flatten().numpy(), t[0, :3].flatten().numpy())[0]
    assert math.isclose(float(masked["per_image"][0]), ref0, rel_tol=1e-9)
    bad = u.clone()
    bad[0, 0, 0] = math.nan
    with pytest.raises(DataError, match="NaN"):
        pixel_correlation(bad, t)
    assert METRICS["uq_pixel_correlation"] is pixel_correlation


def test_image_correlation_with_disagreement():
    lab = torch.zeros(4, 3, 4, 4, dtype=torch.long)  # (B, R, H, W)
    for b in range(4):
        lab[b, 0, : b + 1] = 1  # rater 0 marks b+1 rows: disagreement grows with b
    target = image_disagreement(lab, 2, spatial_dims=2)
    assert torch.allclose(target, torch.tensor([1, 2, 3, 4]) * 4 * 2 * (1 / 3) * (2 / 3))
    scores = torch.tensor([0.1, 0.2, 0.25, 0.9])
    assert math.isclose(float(image_correlation(scores, target, method="spearman")), 1.0)
    ref = scipy.stats.pearsonr(scores.numpy(), target.numpy())[0]
    assert math.isclose(float(image_correlation(scores, target)), ref, rel_tol=1e-6)


# -- SURE ----------------------------------------------------------------------------------------------------------
def test_ucc_and_ur_gradient_on_hand_built_case():
    lab = square_labels()
    d = boundary_distance(lab)
    band = d <= 1
    img = torch.rand(1, 9, 9, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    g = gradient_magnitude(img)
    follows = 1 - g / g.max()  # sharper edge -> lower uncertainty everywhere
    assert math.isclose(float(ucc_gradient(follows, img, lab)), -1.0, abs_tol=1e-12)
    assert float(ur_gradient(follows, img, lab)) == 1.0
    assert float(ur_gradient(g, img, lab)) == 0.0
    assert math.isclose(float(ucc_gradient(g, img, lab)), 1.0, abs_tol=1e-12)
    flat = torch.zeros(9, 9)
    assert float(ur_gradient(flat, img, lab)) == 0.0 and float(ur_gradient(flat, img, lab, tie=0.5)) == 0.5
    assert torch.isnan(ucc_gradient(flat, img, lab))
    # sampled pairs agree with all pairs on a perfectly ordered map
    assert float(ur_gradient(follows, img, lab, max_pairs=500, seed=3)) == 1.0
    assert int(band.sum()) > 0


def test_pair_order_rate_counts():
    ref = torch.tensor([0.0, 1.0, 2.0, 2.0])
    u = torch.tensor([3.0, 2.0, 1.0, 0.0])
    # pairs with distinct ref: (0,1),(0,2),(0,3),(1,2),(1,3) -> all ordered oppositely
    assert float(pair_order_rate(ref, u)) == 1.0
    u2 = torch.tensor([3.0, 2.0, 2.0, 0.0])  # pair (1,2) tied in u
    assert math.isclose(float(pair_order_rate(ref, u2)), 4 / 5)
    assert math.isclose(float(pair_order_rate(ref, u2, tie=0.5)), 4.5 / 5)
    assert torch.isnan(pair_order_rate(torch.ones(4), u))


def test_distance_metrics_and_ur_mu():
    lab = square_labels(n=13, lo=4, hi=9)
    d = boundary_distance(lab)
    u_low = torch.zeros(13, 13, dtype=torch.float64)
    u_high = torch.exp(-d)  # increase largest at the boundary, decaying with distance
    assert math.isclose(float(ucc_distance(u_low, u_high, lab)), -1.0, abs_tol=1e-12)
    assert float(ur_distance(u_low, u_high, lab)) == 1.0
    assert float(ur_distance(u_high, u_low, lab)) == 0.0
    assert float(ur_mu(u_low, u_high, lab)) == 1.0
    half = u_high.clone()
    half[:, :7] = 0  # left half gains nothing
    near = d <= 4
    expect = float(((half > 0) & near).sum()) / float(near.sum())
    assert math.isclose(float(ur_mu(u_low, half, lab)), expect)
    assert torch.isnan(ur_mu(u_low, u_high, torch.zeros(13, 13, dtype=torch.long)))


def official_count_corr_sigma(u1: np.ndarray, u2: np.ndarray, sigma1: float, sigma2: float, d: np.ndarray, threshold=4):
    """SURE's utilities/count_pixels.py:count_corr_sigma re-implemented as written: per near-boundary pixel, the
    Spearman correlation (ordinal ranks argsort().argsort(), np.corrcoef) of (u at σ1, u at σ2) with (σ1, σ2), in
    float32 as the official code casts each value, averaged over the pixels."""

    def spearman_correlation(x, y):
        return np.corrcoef(x.argsort().argsort(), y.argsort().argsort())[0, 1]

    a, b = u1[d <= threshold], u2[d <= threshold]
    sigma_np = np.array([sigma1, sigma2])
    corr = 0.0
    for i in range(len(a)):
        corr += spearman_correlation(np.array([a[i], b[i]], dtype=np.float32), sigma_np)
    return corr / len(a)


def test_ucc_mu_analytic():
    lab = square_labels(n=13, lo=4, hi=9)
    d = boundary_distance(lab)
    u_low = torch.zeros(13, 13, dtype=torch.float64)
    assert float(ucc_mu(u_low, torch.exp(-d), lab)) == 1.0  # every near pixel rises
    assert float(ucc_mu(torch.exp(-d), u_low, lab)) == -1.0  # every near pixel falls
    assert float(ucc_mu(u_low, u_low, lab)) == 1.0  # ties count +1, as the official ordinal ranks give them
    assert float(ur_mu(u_low, u_low, lab)) == 0.0  # ... while UR_μ counts them as failures
    half = torch.exp(-d)
    half[:, :7] = -1.0  # left half falls
    near = d <= 4
    p_rise = float(((half > 0) & near).sum()) / float(near.sum())
    assert math.isclose(float(ucc_mu(u_low, half, lab)), 2 * p_rise - 1)
    assert torch.isnan(ucc_mu(u_low, u_low, torch.zeros(13, 13, dtype=torch.long)))
    assert METRICS.get("ucc_mu") is ucc_mu


def test_ucc_mu_equals_the_official_formula_and_is_affine_in_ur_mu():
    g = torch.Generator().manual_seed(3)
    for seed in range(4):
        lab = torch.zeros(24, 26, dtype=torch.long)
        lab[4 + seed : 15, 5:17] = 1
        lab[15:21, 10 + seed : 22] = 2
        d = boundary_distance(lab)
        u_low = (torch.rand(24, 26, generator=g) * 4).round() / 4  # few levels: many ties
        u_high = (torch.rand(24, 26, generator=g) * 4).round() / 4
        ours = float(ucc_mu(u_low, u_high, lab, max_distance=4.0))
        ref = official_count_corr_sigma(u_low.numpy(), u_high.numpy(), 0.1, 0.9, d.numpy(), threshold=4)
        assert math.isclose(ours, ref, abs_tol=1e-12)
        near = d <= 4
        ties = float((u_high[near] == u_low[near]).double().mean())
        assert ties > 0.1
        assert math.isclose(ours, 2 * (float(ur_mu(u_low, u_high, lab)) + ties) - 1, abs_tol=1e-12)


# -- error detection -----------------------------------------------------------------------------------------------
def test_ueo():
    g = torch.Generator().manual_seed(0)
    err = torch.rand(8, 8, generator=g) > 0.7
    val, t = ueo(err.double(), err)
    assert float(val) == 1.0 and float(t) == 0.0
    u = torch.rand(8, 8, generator=g, dtype=torch.float64)
    val, t = ueo(u, err, thresholds=torch.tensor([0.25, 0.5]))
    dices = [2 * ((u > s) & err).sum() / ((u > s).sum() + err.sum()) for s in (0.25, 0.5)]
    assert math.isclose(float(val), float(max(dices)), rel_tol=1e-6)
    assert float(t) == (0.25 if dices[0] >= dices[1] else 0.5)
    empty, t_empty = ueo(u, torch.zeros(8, 8, dtype=torch.bool))
    assert torch.isnan(empty) and torch.isnan(t_empty)
    assert float(ueo(u, torch.zeros(8, 8, dtype=torch.bool), empty_error=1.0)[0]) == 1.0


def test_auroc_auprc_match_sklearn_with_ties():
    g = torch.Generator().manual_seed(4)
    hard = torch.randint(0, 3, (2, 10, 10), generator=g)
    lab = torch.randint(0, 3, (2, 10, 10), generator=g)
    err = error_mask(hard, lab)
    for u in (torch.rand(2, 10, 10, generator=g), torch.randint(0, 4, (2, 10, 10), generator=g).float() / 3):
        e, s = err.flatten().numpy(), u.flatten().numpy()
        assert math.isclose(float(uncertainty_error_auroc(u, err)), roc_auc_score(e, s), rel_tol=1e-12)
        assert math.isclose(float(uncertainty_error_auprc(u, err)), average_precision_score(e, s), rel_tol=1e-12)
    mask = torch.zeros(2, 10, 10, dtype=torch.bool)
    mask[0] = True
    ref = roc_auc_score(err[0].flatten().numpy(), u[0].flatten().numpy())
    assert math.isclose(float(uncertainty_error_auroc(u, err, mask=mask)), ref, rel_tol=1e-12)
    none = torch.zeros(2, 10, 10, dtype=torch.bool)
    assert torch.isnan(uncertainty_error_auroc(u, none)) and torch.isnan(uncertainty_error_auprc(u, none))
    assert math.isclose(float(uncertainty_error_auroc(err.float(), err)), 1.0)
    bad = u.clone()
    bad[0, 0, 0] = math.inf
    with pytest.raises(DataError, match="NaN or infinite"):
        uncertainty_error_auroc(bad, err)
