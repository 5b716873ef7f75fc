"""The low-memory voxel statistics against the previous whole-volume formulas, with chunks forced small."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trustseg.measures.aggregate import average_ranks
from trustseg.metrics import multirater, overlap, uncertainty_quality, voxel_stats
from trustseg.metrics.uncertainty_quality import average_precision, binary_auroc, pearson, spearman


def _maps(seed: int, n: int = 1000, levels: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g)
    if levels:  # many ties
        u = (u * levels).floor() / levels
    e = torch.rand(n, generator=g) < 0.2 + 0.5 * u
    return u, e


def _old_ueo(u: torch.Tensor, e: torch.Tensor, thresholds: int = 100) -> tuple[float, float]:
    u, e = u.flatten().double(), e.flatten()
    t = torch.linspace(float(u.min()), float(u.max()), thresholds, dtype=torch.float64)
    su, se = torch.sort(u).values, torch.sort(u[e]).values
    n_err = int(e.sum())
    n_pred = u.numel() - torch.searchsorted(su, t, right=True)
    tp = n_err - torch.searchsorted(se, t, right=True)
    dice = 2 * tp.double() / (n_pred + n_err).double()
    best = int(torch.argmax(dice))
    return float(dice[best]), float(t[best])


@pytest.mark.parametrize("seed,levels", [(0, None), (1, 7), (2, 3)])
@pytest.mark.parametrize("chunk", [1, 37, 1 << 20])
def test_correlations_match_previous_formulas(seed, levels, chunk):
    u, _ = _maps(seed, levels=levels)
    g = torch.Generator().manual_seed(seed + 10)
    t = (torch.randint(0, 4, (u.numel(),), generator=g).float() / 9 + 0.3 * u).float()
    assert voxel_stats.chunked_pearson(u, t, chunk) == pytest.approx(float(pearson(u, t)), abs=1e-12)
    assert voxel_stats.lowmem_spearman(u, t, chunk) == pytest.approx(float(spearman(u, t)), abs=1e-12)
    d = torch.randint(0, 3, (u.numel(),), generator=g).float() * 0.25  # few distinct target values
    assert voxel_stats.lowmem_spearman(u, d, chunk) == pytest.approx(float(spearman(u, d)), abs=1e-12)


def test_spearman_is_pearson_of_average_ranks_and_nan_for_constants():
    x = torch.tensor([3.0, 1.0, 1.0, 2.0, 5.0])
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 2.0])
    ref = float(pearson(average_ranks(x), average_ranks(y)))
    assert voxel_stats.lowmem_spearman(x, y, 2) == pytest.approx(ref, abs=1e-15)
    assert math.isnan(voxel_stats.lowmem_spearman(torch.ones(4), y[:4]))
    assert math.isnan(voxel_stats.chunked_pearson(x, torch.zeros(5)))
    assert math.isnan(voxel_stats.lowmem_spearman(x[:1], y[:1]))


@pytest.mark.parametrize("seed,levels", [(0, None), (1, 5), (3, 2)])
def test_error_scores_match_previous_formulas(seed, levels):
    u, e = _maps(seed, levels=levels)
    pos, neg = voxel_stats.error_split(u, e)
    assert voxel_stats.split_ueo(pos, neg) == pytest.approx(_old_ueo(u, e), abs=1e-12)
    assert voxel_stats.split_auroc(pos, neg, chunk=13) == pytest.approx(float(binary_auroc(u, e)), abs=1e-12)
    assert voxel_stats.split_average_precision(pos, neg) == pytest.approx(float(average_precision(u, e)), abs=1e-12)
    # the public functions take this path and agree as well
    assert float(uncertainty_quality.uncertainty_error_auroc(u, e)) == pytest.approx(float(binary_auroc(u, e)))
    assert float(uncertainty_quality.ueo(u, e)[0]) == pytest.approx(_old_ueo(u, e)[0], abs=1e-12)


def test_float32_floor_keeps_strict_comparisons_exact():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(5000, generator=g).numpy()
    t = np.concatenate([np.linspace(0, 1, 101), x[:50].astype(np.float64)])  # representable thresholds too
    floor = voxel_stats.float32_floor(t)
    assert floor.dtype == np.float32
    assert np.array_equal((x[:, None] > t[None]).sum(0), (x[:, None] > floor[None]).sum(0))


def _old_qubiq(p: torch.Tensor, q: torch.Tensor) -> float:
    p, q = p.double(), q.double()
    t = torch.tensor([k / 10 for k in range(1, 10)], dtype=torch.float64)
    view = (-1,) + (1,) * p.ndim
    pb, qb = p.unsqueeze(0) > t.view(view), q.unsqueeze(0) > t.view(view)
    inter = (pb & qb).flatten(1).sum(1).double()
    total = (pb.flatten(1).sum(1) + qb.flatten(1).sum(1)).double()
    return float(torch.where(total == 0, torch.ones_like(total), 2 * inter / total.clamp_min(1)).mean())


@pytest.mark.parametrize("seed", [0, 1])
def test_qubiq_chunked_matches_previous_formula(seed):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(6, 7, 5, generator=g)
    q = torch.randint(0, 4, (6, 7, 5), generator=g).float() / 3  # soft label of 3 raters: hits t = 1/3 edges
    for chunk in (1, 11, 1 << 20):
        assert float(multirater.qubiq_soft_dice(p, q, chunk=chunk)) == pytest.approx(_old_qubiq(p, q), abs=1e-15)


def test_variance_ncc_chunked_matches_previous_formula():
    g = torch.Generator().manual_seed(5)
    a, b = torch.rand(9, 8, generator=g), torch.rand(9, 8, generator=g)
    ad, bd = a.double().flatten(), b.double().flatten()
    ad, bd = ad - ad.mean(), bd - bd.mean()
    old = float((ad * bd).mean() / (ad.pow(2).mean().sqrt() * bd.pow(2).mean().sqrt()))
    assert float(multirater.variance_ncc(a, b, chunk=5)) == pytest.approx(old, abs=1e-12)


def test_confusion_counts_chunked_matches_one_bincount():
    g = torch.Generator().manual_seed(6)
    p, t = torch.randint(0, 4, (3, 7, 6), generator=g), torch.randint(0, 4, (3, 7, 6), generator=g)
    k, b = 4, 3
    pf, tf = p.reshape(b, -1), t.reshape(b, -1)
    cm = torch.bincount((tf * k + pf + torch.arange(b)[:, None] * k * k).reshape(-1), minlength=b * k * k)
    cm = cm.reshape(b, k, k)
    tp = cm.diagonal(dim1=1, dim2=2)
    fp, fn = cm.sum(1) - tp, cm.sum(2) - tp
    old = torch.stack([tp, fp, fn, pf.shape[1] - tp - fp - fn], -1)
    assert torch.equal(overlap.confusion_counts(p, t, k, batch=True, chunk=5), old)
    assert torch.equal(
        overlap.confusion_counts(p[0].expand_as(t), t, k, batch=True, chunk=4)[1],
        overlap.confusion_counts(p[0], t[1], k),
    )
