"""Per-pixel uncertainty measures: analytic values, references (scipy, Monte Carlo), availability, edge cases."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch

from trustseg.core.errors import ConfigError, DataError
from trustseg.core.predictive import Predictive
from trustseg.measures import MEASURES
from trustseg.measures.pixel import (
    available_measures,
    compute_measures,
    rater_disagreement,
    uncertainty_map,
)


def random_pred(m=4, b=2, k=3, spatial=(5, 6), dtype=torch.float64, seed=0) -> Predictive:
    g = torch.Generator().manual_seed(seed)
    return Predictive.from_logits(torch.randn(m, b, k, *spatial, generator=g, dtype=dtype)).to(dtype)


def test_mi_zero_for_identical_samples():
    p = random_pred(m=1).probs
    pred = Predictive(probs=p.repeat(5, 1, 1, 1, 1))
    assert torch.allclose(MEASURES["mi"](pred), torch.zeros(2, 5, 6, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(MEASURES["epkl"](pred), torch.zeros(2, 5, 6, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(MEASURES["variance"](pred), torch.zeros(2, 5, 6, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(MEASURES["expected_entropy"](pred), MEASURES["entropy"](pred))


def test_mi_ln2_for_two_confident_opposite_samples():
    a = torch.tensor([1.0, 0.0], dtype=torch.float64).view(1, 1, 2, 1, 1)
    pred = Predictive(probs=torch.cat([a, a.flip(2)], 0).expand(2, 1, 2, 3, 3).clone())
    assert torch.allclose(MEASURES["mi"](pred), torch.full((1, 3, 3), math.log(2), dtype=torch.float64))
    assert torch.allclose(MEASURES["entropy"](pred), torch.full((1, 3, 3), math.log(2), dtype=torch.float64))
    assert torch.allclose(MEASURES["expected_entropy"](pred), torch.zeros(1, 3, 3, dtype=torch.float64))
    # Var of a ±0.5 Bernoulli per class = 0.25, two classes
    assert torch.allclose(MEASURES["variance"](pred), torch.full((1, 3, 3), 0.5, dtype=torch.float64))
    assert torch.isfinite(MEASURES["epkl"](pred)).all()


def test_entropy_matches_scipy():
    pred = random_pred()
    ours = MEASURES["entropy"](pred)
    ref = scipy.stats.entropy(pred.mean().numpy(), axis=1)
    assert torch.allclose(ours, torch.from_numpy(ref), atol=1e-12)
    per_sample = scipy.stats.entropy(pred.probs.numpy(), axis=2).mean(0)
    assert torch.allclose(MEASURES["expected_entropy"](pred), torch.from_numpy(per_sample), atol=1e-12)


def test_epkl_equals_pairwise_kl_and_dominates_mi():
    pred = random_pred(m=5, seed=3)
    p = pred.probs
    kl = (p.unsqueeze(1) * (p.unsqueeze(1).log() - p.unsqueeze(0).log())).sum(3)  # (M, M, B, *sp)
    ref = kl.mean((0, 1))
    assert torch.allclose(MEASURES["epkl"](pred), ref, atol=1e-10)
    assert (MEASURES["epkl"](pred) >= MEASURES["mi"](pred) - 1e-12).all()
    assert (MEASURES["mi"](pred) > 0).all()


def test_variance_is_population_variance_and_confidence():
    pred = random_pred()
    ref = pred.probs.numpy().var(axis=0).sum(1)
    assert torch.allclose(MEASURES["variance"](pred), torch.from_numpy(ref), atol=1e-12)
    conf = MEASURES["confidence"](pred)
    assert torch.allclose(conf, pred.mean().max(1).values)
    assert torch.allclose(uncertainty_map(pred, "confidence"), 1 - conf)
    assert torch.equal(uncertainty_map(pred, "mi"), MEASURES["mi"](pred))


def test_zero_probabilities_are_safe():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], dtype=torch.float64).view(2, 1, 3, 1, 1)
    out = compute_measures(Predictive(probs=p))
    assert all(torch.isfinite(v).all() for v in out.values())
    assert math.isclose(float(out["entropy"]), scipy.stats.entropy([0.75, 0.25, 0.0]), rel_tol=1e-12)


def test_vacuity_one_without_evidence():
    pred = Predictive.from_alpha(torch.ones(2, 4, 3, 3))
    assert torch.allclose(MEASURES["vacuity"](pred), torch.ones(2, 3, 3))
    alpha = torch.tensor([3.0, 1.0]).view(1, 2, 1, 1)
    assert math.isclose(float(MEASURES["vacuity"](Predictive.from_alpha(alpha))), 0.5)


def test_dirichlet_closed_forms_match_monte_carlo():
    alpha = torch.tensor([[2.0, 5.0, 1.5], [0.7, 0.9, 3.0]], dtype=torch.float64).T.reshape(1, 3, 1, 2)
    pred = Predictive.from_alpha(alpha)
    torch.manual_seed(1)
    dist = torch.distributions.Dirichlet(alpha.permute(0, 2, 3, 1))  # batch (1, 1, 2), event K
    s = dist.sample((40_000,)).clamp_min(1e-300)  # (N, 1, 1, 2, K)
    h = -(s * s.log()).sum(-1)  # (N, 1, 1, 2)
    pbar = alpha / alpha.sum(1, keepdim=True)
    mc_ee = h.mean(0)
    mc_var = s.var(0, correction=0).sum(-1)
    half = s.shape[0] // 2
    p, q = s[:half], s[half:]
    mc_epkl = (p * (p.log() - q.log())).sum(-1).mean(0)
    assert torch.allclose(MEASURES["expected_entropy"](pred), mc_ee, rtol=0.02, atol=0.01)
    assert torch.allclose(MEASURES["variance"](pred), mc_var, rtol=0.03, atol=0.002)
    assert torch.allclose(MEASURES["epkl"](pred), mc_epkl, rtol=0.05, atol=0.02)
    h_mean = -(pbar * pbar.log()).sum(1)
    assert torch.allclose(MEASURES["mi"](pred), h_mean - MEASURES["expected_entropy"](pred))
    assert (MEASURES["mi"](pred) >= 0).all()


def test_evidential_with_several_samples_uses_samples():
    alpha = torch.rand(1, 2, 3, 3, dtype=torch.float64) * 5 + 1
    probs = random_pred(m=3, b=1, k=2, spatial=(3, 3)).probs
    pred = Predictive(probs=probs, alpha=alpha)
    assert torch.allclose(MEASURES["mi"](pred), MEASURES["mi"](Predictive(probs=probs)))


def test_available_measures():
    soft = random_pred(m=1)
    assert available_measures(soft) == ["confidence", "entropy"]
    mc = random_pred(m=3)
    assert available_measures(mc) == ["confidence", "entropy", "expected_entropy", "mi", "epkl", "variance"]
    edl = Predictive.from_alpha(torch.rand(2, 3, 4, 4) + 1)
    assert available_measures(edl)[-1] == "vacuity" and "mi" in available_measures(edl)
    edue = Predictive(probs=soft.probs, extras={"rater_variance": torch.rand(2, 1, 5, 6)})
    assert available_measures(edue) == ["confidence", "entropy", "predicted_variance"]
    assert torch.equal(MEASURES["predicted_variance"](edue), edue.extras["rater_variance"][:, 0])
    for pred in (soft, mc, edl, edue):
        maps = compute_measures(pred)
        assert set(maps) == set(available_measures(pred))
        assert all(v.shape == (pred.batch_size, *pred.spatial_shape) for v in maps.values())


def test_unavailable_measures_raise_clearly():
    soft = random_pred(m=1)
    for name in ("mi", "epkl", "expected_entropy", "variance", "vacuity", "predicted_variance"):
        with pytest.raises(ConfigError, match=name):
            MEASURES[name](soft)


def test_compute_measures_names_and_orientation():
    pred = random_pred(m=2, dtype=torch.float32)
    out = compute_measures(pred, "confidence, mi", as_uncertainty=True)
    assert list(out) == ["confidence", "mi"]
    assert out["mi"].dtype == torch.float32
    assert torch.allclose(out["confidence"], 1 - MEASURES["confidence"](pred))


def test_3d_shapes():
    pred = random_pred(m=2, b=1, k=2, spatial=(2, 3, 4))
    assert all(v.shape == (1, 2, 3, 4) for v in compute_measures(pred).values())


def test_rater_disagreement():
    labels = torch.tensor([[0, 1], [1, 1], [0, 1], [1, 1]]).view(4, 1, 2)  # (R, H, W)
    d = rater_disagreement(labels, 2)
    assert torch.allclose(d, torch.tensor([[2 * 0.25, 0.0]]))
    assert torch.allclose(rater_disagreement(labels, 2, classes=[1]), torch.tensor([[0.25, 0.0]]))
    g = torch.Generator().manual_seed(0)
    lab = torch.randint(0, 3, (2, 5, 4, 4), generator=g)  # (B, R, H, W)
    ours = rater_disagreement(lab, 3, spatial_dims=2)
    soft = torch.stack([(lab == k).double().mean(1) for k in range(3)], 1)
    assert ours.shape == (2, 4, 4)
    assert torch.allclose(ours.double(), (soft * (1 - soft)).sum(1), atol=1e-6)
    with pytest.raises(DataError, match="ambiguous"):
        rater_disagreement(lab, 3)
    with pytest.raises(DataError, match=r"\[0, 2\)"):
        rater_disagreement(lab, 2, spatial_dims=2)
