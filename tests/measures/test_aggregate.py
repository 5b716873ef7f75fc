"""Aggregators against hand-computed values; rank and linear aggregate scores."""

from __future__ import annotations

import math

import pytest
import scipy.stats
import torch

from trustseg.core.errors import ConfigError, DataError
from trustseg.measures import AGGREGATORS
from trustseg.measures.aggregate import (
    LinearAggregate,
    agg_boundary_mean,
    aggregate,
    average_ranks,
    dilate_mask,
    rank_aggregate,
)


def umap_4x4() -> torch.Tensor:
    return torch.arange(16, dtype=torch.float64).view(1, 4, 4) / 10


def test_mean_sum_frac_above():
    u = umap_4x4()
    assert math.isclose(float(aggregate(u, "mean")), 0.75)
    assert math.isclose(float(aggregate(u, "sum")), 12.0)
    assert math.isclose(float(aggregate(u, "frac_above", threshold=1.0)), 5 / 16)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, :2] = True  # values 0.0, 0.1
    assert math.isclose(float(aggregate(u, "mean", mask=mask)), 0.05)
    assert math.isclose(float(aggregate(u, "sum", mask=mask)), 0.1)
    assert math.isclose(float(aggregate(u, "frac_above", mask=mask, threshold=0.05)), 0.5)
    assert torch.isnan(aggregate(u, "mean", mask=torch.zeros_like(mask)))
    with pytest.raises(ConfigError, match="threshold"):
        aggregate(u, "frac_above")
    with pytest.raises(DataError, match="mask shape"):
        aggregate(u, "mean", mask=torch.ones(1, 3, 3))


def test_fg_mean_dilation_and_empty_fallback():
    u = umap_4x4().repeat(2, 1, 1)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = True
    out = aggregate(u, "fg_mean", mask=mask)
    assert math.isclose(float(out[0]), 0.0)
    assert math.isclose(float(out[1]), 0.75)  # empty mask -> whole-image mean
    dil = aggregate(u, "fg_mean", mask=mask, dilate=1)  # pixels (0,0),(0,1),(1,0),(1,1) = 0, .1, .4, .5
    assert math.isclose(float(dil[0]), 0.25)
    assert dilate_mask(mask, 1)[0].sum() == 4
    with pytest.raises(ConfigError, match="foreground mask"):
        aggregate(u, "fg_mean")


def test_patch_max_2d_3d_and_mask():
    u = umap_4x4()
    # 2x2 windows: the bottom-right one (1.0, 1.1, 1.4, 1.5) has the largest mean 1.25
    assert math.isclose(float(aggregate(u, "patch_max", patch=2)), 1.25)
    assert math.isclose(float(aggregate(u, "patch_max", patch=10)), 0.75)  # shrunk to the image
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0] = mask[0, 0, 1] = True
    assert math.isclose(float(aggregate(u, "patch_max", mask=mask, patch=2)), 0.1)
    assert torch.isnan(aggregate(u, "patch_max", mask=torch.zeros_like(mask), patch=2)).all()
    v = torch.zeros(1, 3, 4, 4)
    v[0, 1, 1:3, 1:3] = 1.0
    assert math.isclose(float(aggregate(v, "patch_max", patch=(1, 2, 2))), 1.0)
    assert math.isclose(float(aggregate(v, "patch_max", patch=2)), 0.5)


def test_registry_signature():
    u = torch.rand(3, 5, 5)
    m = u > 0.5
    for entry in AGGREGATORS:
        kw = {"threshold": 0.5} if entry.name == "frac_above" else {}
        assert entry.obj(u, mask=m, **kw).shape == (3,)


def test_average_ranks_matches_scipy():
    x = torch.tensor([3.0, 1.0, 3.0, 2.0, 1.0, 5.0, 3.0])
    assert torch.equal(average_ranks(x), torch.from_numpy(scipy.stats.rankdata(x.numpy())))


def test_rank_aggregate_properties():
    a = torch.tensor([0.1, 0.5, 0.3, 0.9])
    b = torch.tensor([10.0, 30.0, 20.0, 40.0])
    agg = rank_aggregate({"a": a, "b": b})
    assert torch.allclose(agg, torch.tensor([0.0, 2 / 3, 1 / 3, 1.0], dtype=torch.float64))
    # invariant to monotone transforms of a measure
    assert torch.allclose(rank_aggregate({"a": a.exp(), "b": b * 1e6}), agg)
    # monotone: raising one image's score never lowers its aggregate
    a2 = a.clone()
    a2[0] = 0.6
    assert rank_aggregate({"a": a2, "b": b})[0] > agg[0]
    # ties share the average rank
    tied = rank_aggregate({"a": torch.tensor([1.0, 1.0, 2.0])})
    assert torch.allclose(tied, torch.tensor([0.25, 0.25, 1.0], dtype=torch.float64))
    assert torch.equal(rank_aggregate({"a": torch.tensor([3.0])}), torch.tensor([0.5], dtype=torch.float64))
    with pytest.raises(DataError, match="NaN"):
        rank_aggregate({"a": torch.tensor([1.0, math.nan])})
    with pytest.raises(DataError, match="same N"):
        rank_aggregate({"a": torch.rand(3), "b": torch.rand(4)})


def test_linear_aggregate_recovers_linear_relation():
    g = torch.Generator().manual_seed(0)
    s = {"ent": torch.rand(50, generator=g, dtype=torch.float64), "mi": torch.rand(50, generator=g) * 3}
    target = 0.1 + 0.5 * s["ent"] + 0.2 * s["mi"].double()  # 1 − Dice
    model = LinearAggregate(ridge=0.0).fit(s, 1 - target)
    assert torch.allclose(model.predict(s), target, atol=1e-10)
    new = {"ent": torch.tensor([0.0, 1.0], dtype=torch.float64), "mi": torch.tensor([0.0, 2.0])}
    assert torch.allclose(model.predict(new), torch.tensor([0.1, 1.0], dtype=torch.float64), atol=1e-10)
    again = LinearAggregate.from_dict(model.to_dict())
    assert torch.allclose(again.predict(new), model.predict(new))
    shrunk = LinearAggregate(ridge=10.0).fit(s, 1 - target)
    assert shrunk.coef.abs().sum() < model.coef.abs().sum()
    const = LinearAggregate().fit({"c": torch.ones(5)}, torch.full((5,), 0.8))
    assert torch.allclose(const.predict({"c": torch.ones(2)}), torch.full((2,), 0.2, dtype=torch.float64))
    with pytest.raises(DataError, match="lack"):
        model.predict({"ent": new["ent"]})
    with pytest.raises(ValueError, match="not fitted"):
        LinearAggregate().predict(new)
    with pytest.raises(ConfigError, match="lacks key"):
        LinearAggregate.from_dict({"ridge": 1.0})


def test_boundary_mean_band_around_the_contour():
    u = torch.zeros(1, 10, 10)
    u[0, :, 4] = 1.0  # uncertain on the column just inside the contour
    fg = torch.zeros(1, 10, 10, dtype=torch.bool)
    fg[:, :, :5] = True  # contour between columns 4 and 5
    # width 1: columns 4 and 5 (both sides) -> mean 0.5; width 2: columns 3..6 -> 0.25
    assert float(agg_boundary_mean(u, fg, width=1)) == pytest.approx(0.5)
    assert float(agg_boundary_mean(u, fg, width=2)) == pytest.approx(0.25)
    # no boundary (all background, all foreground): the whole-image mean
    assert float(agg_boundary_mean(u, torch.zeros_like(fg))) == pytest.approx(0.1)
    assert float(agg_boundary_mean(u, torch.ones_like(fg))) == pytest.approx(0.1)
    u3 = torch.zeros(1, 6, 6, 6)
    fg3 = torch.zeros(1, 6, 6, 6, dtype=torch.bool)
    fg3[:, 2:4, 2:4, 2:4] = True
    u3[fg3] = 1.0
    band = float(agg_boundary_mean(u3, fg3, width=1))  # the 8 inner voxels among the 4^3 = 64 band voxels
    assert band == pytest.approx(8 / 64)
