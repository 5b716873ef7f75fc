"""The one-pass rank statistics of :mod:`trustseg.metrics.rank_histogram` against the exact sort-based ones
(:mod:`trustseg.metrics.voxel_stats`, scipy, scikit-learn): |streaming − exact| ≤ the bound computed from the
state, on seeded inputs (continuous, heavy ties, atoms at 0, tiny values, negatives, a single level, constant
maps), and exactness where ties make it exact (few distinct values)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from trustseg.data.targets import rater_disagreement
from trustseg.metrics.rank_histogram import (
    DisagreementCodes,
    RankHistogram,
    disagreement_levels,
    monotone_key,
)
from trustseg.metrics.voxel_stats import chunked_pearson, error_split, lowmem_spearman, split_ueo

R, K = 3, 3


def _inputs(kind: str, n: int = 6000, seed: int = 0):
    """A map ``u`` (float32), rater labels (R, n) and an error mask correlated with u."""
    g = np.random.default_rng(seed)
    labels = g.integers(0, K, (R, n))
    labels[:, : n // 2] = labels[0, : n // 2]  # half the voxels agree
    if kind == "single_level":
        labels[:] = 0
    d = rater_disagreement(torch.from_numpy(labels), K).numpy()
    base = d + g.normal(0, 0.3, n)
    u = {
        "continuous": base,
        "ties": np.round(base * 4) / 4,  # ~10 distinct values
        "atoms_at_zero": np.where(g.random(n) < 0.6, 0.0, np.abs(base)),
        "tiny": 1e-8 * np.exp(base),  # 1e-8 ...
        "negative": base - 0.5,
        "single_level": base,
        "wide": np.exp(g.normal(0, 20, n)) * (g.random(n) < 0.9),  # many binades and zeros
    }[kind].astype(np.float32)
    error = (base + g.normal(0, 0.3, n)) > 0.6
    return torch.from_numpy(u), torch.from_numpy(labels), torch.from_numpy(error)


def _hist(u, labels, error, chunk=1000):
    codes = DisagreementCodes(R, K)
    d = rater_disagreement(labels, K)
    h = RankHistogram.for_map(u, codes.levels)
    for a in range(0, u.numel(), chunk):  # several chunks: the state is the sum
        h.update(u[a : a + chunk], codes(d[a : a + chunk], error[a : a + chunk]), d[a : a + chunk])
    return h, d


KINDS = ["continuous", "ties", "atoms_at_zero", "tiny", "negative", "single_level", "wide"]


@pytest.mark.parametrize("kind", KINDS)
def test_streaming_statistics_are_within_their_bounds_of_the_exact_ones(kind):
    u, labels, error = _inputs(kind)
    h, d = _hist(u, labels, error)
    un, en = u.numpy().astype(np.float64), error.numpy()
    pos, neg = error_split(u, error)
    rho, b = h.spearman()
    exact_rho = lowmem_spearman(u, d)
    if kind == "single_level":
        assert math.isnan(rho) and math.isnan(exact_rho) and math.isnan(h.pearson())
    else:
        assert exact_rho == pytest.approx(stats.spearmanr(un, d.numpy()).statistic, abs=1e-12)
        assert abs(rho - exact_rho) <= b + 1e-12
        assert h.pearson() == pytest.approx(chunked_pearson(u, d), abs=1e-12)
    auc, b = h.auroc()
    assert abs(auc - roc_auc_score(en, un)) <= b + 1e-12
    ap, b = h.average_precision()
    assert abs(ap - average_precision_score(en, un)) <= b + 1e-12
    ueo, b = h.ueo()
    assert abs(ueo - split_ueo(pos, neg)[0]) <= b + 1e-12


@pytest.mark.parametrize("kind", ["ties", "atoms_at_zero"])
def test_few_distinct_values_are_exact_with_a_zero_bound(kind):
    u, labels, error = _inputs(kind)
    if kind == "atoms_at_zero":
        u = torch.where(u > 0, torch.round(u * 8) / 8, u)  # a few atoms, 0 the heaviest
    h, d = _hist(u, labels, error)
    un, en = u.numpy().astype(np.float64), error.numpy()
    pos, neg = error_split(u, error)
    for (value, bound), exact in [
        (h.spearman(), lowmem_spearman(u, d)),
        (h.auroc(), roc_auc_score(en, un)),
        (h.average_precision(), average_precision_score(en, un)),
        (h.ueo(), split_ueo(pos, neg)[0]),
    ]:
        assert bound == 0.0
        assert value == pytest.approx(exact, abs=1e-12)


def test_continuous_bounds_are_small():
    """With fine bins the bounds on a continuous map of 6000 voxels are well below the statistics' noise."""
    h, _ = _hist(*_inputs("continuous"))
    assert h.spearman()[1] < 1e-3 and h.auroc()[1] < 1e-3 and h.ueo()[1] < 1e-2 and h.average_precision()[1] < 2e-2


def test_a_constant_map_gives_nan_like_the_exact_functions():
    _, labels, error = _inputs("continuous")
    u = torch.full((labels.shape[1],), 0.25)
    h, d = _hist(u, labels, error)
    assert math.isnan(h.spearman()[0]) and math.isnan(lowmem_spearman(u, d))
    assert math.isnan(h.pearson()) and math.isnan(chunked_pearson(u, d))
    assert h.auroc() == (0.5, 0.0)  # every pair tied, as roc_auc_score
    assert h.auroc()[0] == roc_auc_score(error.numpy(), u.numpy())


def test_the_state_is_the_sum_over_chunks_and_merges():
    u, labels, error = _inputs("continuous")
    whole, _ = _hist(u, labels, error, chunk=u.numel())
    codes, d = DisagreementCodes(R, K), rater_disagreement(labels, K)
    halves = []
    for part in (slice(0, 2500), slice(2500, None)):
        h = RankHistogram.for_map(u, codes.levels)  # the binning of the whole map
        h.update(u[part], codes(d[part], error[part]), d[part])
        halves.append(h)
    merged = halves[0].merge(halves[1])
    assert torch.equal(merged.counts, whole.counts) and torch.equal(merged.kmin, whole.kmin)
    assert merged.auroc() == whole.auroc() and merged.spearman() == pytest.approx(whole.spearman())
    assert torch.allclose(merged.raw_sums(), whole.raw_sums(), rtol=1e-12)
    other = RankHistogram.for_map(u * 2, codes.levels)
    with pytest.raises(ValueError, match="same binning"):
        merged.merge(other)


def test_raw_sums_are_the_pooled_pearson_sums():
    u, labels, error = _inputs("continuous")
    h, d = _hist(u, labels, error)
    x, y = u.double(), d.double()
    ref = torch.stack([x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum(), x.new_tensor(x.numel())])
    assert torch.allclose(h.raw_sums(), ref, rtol=1e-10)


def test_keys_are_monotone_and_equal_values_share_a_key():
    x = torch.tensor([-3.0, -1e-30, -0.0, 0.0, 1e-45, 1e-8, 0.5, 1.0, 3e38])
    k = monotone_key(x)
    assert k[2] == k[3] and bool((k[1:] >= k[:-1]).all()) and len(set(k.tolist())) == len(x) - 1


def test_levels_are_the_distinct_disagreement_values_in_order():
    """Every vote pattern of R raters over K classes: the codes order the levels as the float disagreement."""
    for r, k in [(2, 2), (3, 3), (4, 3), (5, 4)]:
        labels = torch.cartesian_prod(*[torch.arange(k)] * r).T  # (R, K^R) every labelling
        d = rater_disagreement(labels, k)
        codes = DisagreementCodes(r, k)
        level = codes(d, torch.zeros_like(d, dtype=torch.bool)) // 2
        assert codes.levels == len(disagreement_levels(r, k)) == len(torch.unique(level))
        order = torch.argsort(d, stable=True)
        assert bool((level[order][1:] >= level[order][:-1]).all())  # monotone in d
        for lv in torch.unique(level):  # one level = one disagreement value (up to float32 round-off)
            vals = d[level == lv]
            assert float(vals.max() - vals.min()) < 1e-6
