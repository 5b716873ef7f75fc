"""SURE's UR/UCC with the official code's tie and rank rules (utilities/count_pixels.py), selectable by keyword.

The references are the official formulas re-implemented here in numpy as written (upper-triangle matrices of
differences, argsort().argsort() ranks with a stable sort), independent of trustseg's pair enumeration.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from trustseg.core.errors import ConfigError
from trustseg.metrics.geometry import boundary_distance, gradient_magnitude
from trustseg.metrics.uncertainty_quality import (
    band_ur_gradient,
    gradient_band,
    ordinal_ranks,
    pair_order_rate,
    spearman,
    ucc_distance,
    ucc_gradient,
    ur_distance,
    ur_gradient,
)


def official_ratio(ref: np.ndarray, u: np.ndarray) -> float:
    """count_pixels_d / count_pixels_grad: ((Δref·Δu < 0) + (Δref = 0 ∧ Δu = 0) − L(L+1)/2) / (L(L−1)/2) over the
    upper triangle (diagonal included, which the subtraction removes)."""
    n = len(ref)
    dd = np.triu(ref[None, :] - ref[:, None])
    du = np.triu(u[None, :] - u[:, None])
    num = (dd * du < 0).sum() + ((dd == 0) & (du == 0)).sum() - n * (n + 1) / 2
    return float(num / (n * (n - 1) / 2))


def official_chunk_ratio(ref: np.ndarray, u: np.ndarray, chunk: int = 100) -> float:
    """count_pixels_d_chunk for one image: Σ over consecutive chunks of the chunk ratio / ⌈L / chunk⌉."""
    loop = math.ceil(len(ref) / chunk)
    total = 0.0
    for s in range(0, len(ref), chunk):
        if len(ref[s : s + chunk]) >= 2:
            total += official_ratio(ref[s : s + chunk], u[s : s + chunk]) / loop
    return total


def official_spearman(x: np.ndarray, y: np.ndarray) -> float:
    """spearman_correlation: np.corrcoef of argsort().argsort() ranks (stable sort: ties by position)."""
    return float(np.corrcoef(x.argsort(kind="stable").argsort(), y.argsort(kind="stable").argsort())[0, 1])


# -- tie rule --------------------------------------------------------------------------------------------------------
def test_pair_order_rate_official_ties_known_answer():
    ref = torch.tensor([1.0, 1.0, 2.0, 3.0])
    u = torch.tensor([0.5, 0.5, 0.3, 0.3])
    # (0,1) equal ref and u: skipped / success; (0,2) (0,3) (1,2) (1,3) ordered; (2,3) distinct ref, equal u: 0
    assert float(pair_order_rate(ref, u)) == pytest.approx(4 / 5)
    assert float(pair_order_rate(ref, u, ref_ties="official")) == pytest.approx(5 / 6)
    u = torch.tensor([0.5, 0.4, 0.3, 0.3])  # (0,1): equal ref, u differs -> a failure in the official rule
    assert float(pair_order_rate(ref, u)) == pytest.approx(4 / 5)
    assert float(pair_order_rate(ref, u, ref_ties="official")) == pytest.approx(4 / 6)
    # all references equal: ours has no pair (NaN), the official counts the equal-u pairs
    assert torch.isnan(pair_order_rate(torch.ones(3), torch.tensor([1.0, 1.0, 2.0])))
    assert float(pair_order_rate(torch.ones(3), torch.tensor([1.0, 1.0, 2.0]), ref_ties="official")) == 1 / 3
    with pytest.raises(ConfigError, match="reference-tie rule"):
        pair_order_rate(ref, u, ref_ties="drop")  # type: ignore[arg-type]


def _noisy_case(seed: int):
    g = torch.Generator().manual_seed(seed)
    lab = torch.zeros(20, 22, dtype=torch.long)
    lab[4:15, 5:17] = 1
    lab[9:13, 8:12] = 2
    u_low = (torch.rand(20, 22, generator=g) * 5).round() / 5  # few levels: ties in Δu as well as in d
    u_high = (torch.rand(20, 22, generator=g) * 5).round() / 5
    return lab, u_low.double(), u_high.double()


@pytest.mark.parametrize("seed", [0, 1])
def test_ur_distance_official_rule_and_chunks_match_the_official_formula(seed):
    lab, u_low, u_high = _noisy_case(seed)
    d = boundary_distance(lab)
    near = d <= 4
    dn, du = d[near].numpy(), (u_high - u_low)[near].numpy()
    assert len(dn) > 200 and len(np.unique(dn)) < len(dn) / 10  # many ties in d
    official = ur_distance(u_low, u_high, lab, ref_ties="official")
    assert float(official) == pytest.approx(official_ratio(dn, du), abs=1e-12)
    assert abs(float(official) - float(ur_distance(u_low, u_high, lab))) > 0.02
    chunked = ur_distance(u_low, u_high, lab, ref_ties="official", chunk=100)
    assert float(chunked) == pytest.approx(official_chunk_ratio(dn, du, 100), abs=1e-12)
    assert float(chunked) != pytest.approx(float(official), abs=1e-6)


def test_chunks_known_answer():
    ref = torch.tensor([1.0, 2.0, 3.0, 3.0, 4.0])
    u = torch.tensor([0.3, 0.2, 0.1, 0.5, 0.9])
    # chunks of 2: [(1, 2)] ordered -> 1; [(3, 3)] equal d, u differs -> 0; [4] alone -> 0; / 3 chunks
    assert float(pair_order_rate(ref, u, ref_ties="official", chunk=2)) == pytest.approx(1 / 3)
    assert float(pair_order_rate(ref, u, ref_ties="official")) == pytest.approx(official_ratio(ref.numpy(), u.numpy()))


def test_ur_gradient_official_rule():
    lab, u, _ = _noisy_case(3)
    img = (torch.rand(1, 20, 22, generator=torch.Generator().manual_seed(4)) * 3).round().double()  # tied gradients
    d = boundary_distance(lab)
    g = gradient_magnitude(img)
    band = d <= 1
    expect = official_ratio(g[band].numpy(), u[band].numpy())
    assert float(ur_gradient(u, img, lab, ref_ties="official")) == pytest.approx(expect, abs=1e-12)
    near, g_near = gradient_band(img, lab)
    assert float(band_ur_gradient(u, near, g_near, ref_ties="official")) == pytest.approx(expect, abs=1e-12)
    assert float(ur_gradient(u, img, lab)) != pytest.approx(expect, abs=1e-3)


# -- rank rule -------------------------------------------------------------------------------------------------------
def test_ordinal_ranks_match_scipy():
    x = torch.tensor([3.0, 1.0, 3.0, 2.0, 1.0, 3.0])
    np.testing.assert_array_equal(ordinal_ranks(x).numpy(), scipy.stats.rankdata(x.numpy(), method="ordinal") - 1)


def test_spearman_ordinal_known_answer():
    x, y = torch.tensor([1.0, 1.0, 2.0]), torch.tensor([3.0, 1.0, 2.0])
    # average ranks x (1.5, 1.5, 3), y (3, 1, 2): covariance 0; ordinal x (0, 1, 2), y (2, 0, 1): −0.5
    assert float(spearman(x, y)) == pytest.approx(0.0, abs=1e-15)
    assert float(spearman(x, y, ranks="ordinal")) == pytest.approx(-0.5)
    with pytest.raises(ConfigError, match="rank rule"):
        spearman(x, y, ranks="dense")  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [0, 1])
def test_ucc_ordinal_matches_the_official_spearman(seed):
    lab, u_low, u_high = _noisy_case(seed)
    d = boundary_distance(lab)
    near = d <= 4
    dn, du = d[near].numpy(), (u_high - u_low)[near].numpy()
    ours = float(ucc_distance(u_low, u_high, lab, ranks="ordinal"))
    assert ours == pytest.approx(official_spearman(dn, du), abs=1e-12)
    assert float(ucc_distance(u_low, u_high, lab)) == pytest.approx(scipy.stats.spearmanr(dn, du)[0], abs=1e-12)
    assert abs(ours - float(ucc_distance(u_low, u_high, lab))) > 1e-3
    img = (torch.rand(1, 20, 22, generator=torch.Generator().manual_seed(seed)) * 3).round().double()
    band = d <= 1
    g = gradient_magnitude(img)[band].numpy()
    expect = official_spearman(u_low[band].numpy(), g)
    assert float(ucc_gradient(u_low, img, lab, ranks="ordinal")) == pytest.approx(expect, abs=1e-12)
