"""Case features: analytic values, determinism, invariance to sample and case order, the aggregate score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trustseg.core.errors import ConfigError, DataError
from trustseg.measures.aggregate import rank_aggregate
from trustseg.quality.features import AggregateScore, FeatureConfig, case_features, feature_table, map_maximum
from trustseg.quality.inputs import CaseInput


def _case(seg: torch.Tensor, m: int = 4, seed: int = 0, spacing=None, heads: bool = False) -> CaseInput:
    g = torch.Generator().manual_seed(seed)
    fg = seg.float() * 0.8 + 0.1
    samples = []
    for _ in range(m):
        p = (fg + 0.15 * torch.randn(seg.shape, generator=g)).clamp(0.01, 0.99)
        samples.append(torch.stack([1 - p, p]))
    s = torch.stack(samples)
    probs = s.mean(0)
    return CaseInput("c", probs, probs.argmax(0), samples=s, spacing=spacing, layer_heads=heads)


def _square(n: int = 24, a: int = 6, b: int = 14) -> torch.Tensor:
    seg = torch.zeros(n, n, dtype=torch.long)
    seg[a:b, a:b] = 1
    return seg


def test_volume_components_and_compactness_of_squares_and_cubes():
    seg = _square()
    seg[18:20, 18:20] = 1  # a second component
    probs = torch.stack([1 - seg.float(), seg.float()])
    f = case_features(CaseInput("c", probs, seg, spacing=(2.0, 0.5)))
    assert f["volume:1"] == (64 + 4) * 1.0
    assert f["components:1"] == 2 and f["largest_component:1"] == pytest.approx(64 / 68)
    one = _square()
    probs1 = torch.stack([1 - one.float(), one.float()])
    f1 = case_features(CaseInput("c", probs1, one))
    assert f1["compactness:1"] == pytest.approx(math.pi / 4)  # 4π·64 / 32²
    assert f1["soft_dice_confidence"] == pytest.approx(1.0) and f1["volume_gap:1"] == 0
    cube = torch.zeros(12, 12, 12, dtype=torch.long)
    cube[2:8, 2:8, 2:8] = 1
    pc = torch.stack([1 - cube.float(), cube.float()])
    f3 = case_features(CaseInput("c", pc, cube))
    assert f3["compactness:1"] == pytest.approx((math.pi / 6) ** (1 / 3))
    assert f3["volume:1"] == 216 and f3["components:1"] == 1
    empty = torch.zeros(8, 8, dtype=torch.long)
    fe = case_features(CaseInput("c", torch.stack([torch.ones(8, 8), torch.zeros(8, 8)]), empty))
    assert fe["components:1"] == 0 and fe["compactness:1"] == 0 and fe["largest_component:1"] == 1
    assert fe["soft_dice_confidence"] == 1.0  # empty prediction, p ≡ 0: the true mask is surely empty


def test_features_are_deterministic_and_ignore_sample_order():
    inp = _case(_square())
    a, b = case_features(inp), case_features(inp)
    assert a == b and list(a) == list(b)
    perm = CaseInput("c", inp.probs, inp.seg, samples=inp.samples[torch.tensor([2, 0, 3, 1])])
    c = case_features(perm)
    assert c.keys() == a.keys()
    for k in a:
        assert c[k] == pytest.approx(a[k], rel=1e-5, abs=1e-6), k


def test_names_cover_every_map_and_aggregator_and_sample_features():
    f = case_features(_case(_square(), heads=True))
    for m in ("entropy", "one_minus_confidence", "mi", "expected_entropy", "epkl", "variance"):
        for agg in ("mean", "sum", "fg_mean", "boundary_mean", "patch_max", "frac_above_0.25", "frac_above_0.5"):
            assert f"{m}:{agg}" in f
    assert 0 < f["sample_agreement"] <= 1 and 0 < f["aula"] <= 1
    same = _case(_square(), m=1)
    assert "sample_agreement" not in case_features(same)
    assert map_maximum("entropy", 3) == pytest.approx(math.log(3)) and map_maximum("confidence", 2) == 0.5


def test_identical_samples_agree_fully():
    inp = _case(_square(), m=1)
    s = inp.samples.repeat(3, 1, 1, 1)
    f = case_features(CaseInput("c", s.mean(0), s.mean(0).argmax(0), samples=s))
    assert f["sample_agreement"] == 1.0 and f["mi:mean"] == pytest.approx(0.0, abs=1e-6)


def test_feature_table_order_and_errors():
    rows = [case_features(_case(_square(a=a), seed=a)) for a in (4, 6, 8)]
    names, x = feature_table(rows)
    _, x_rev = feature_table(rows[::-1], names)
    np.testing.assert_array_equal(x_rev, x[::-1])  # case order does not change any row
    with pytest.raises(DataError, match="lacks the features"):
        feature_table([{k: v for k, v in rows[0].items() if k != "mi:mean"}], names)
    bad = dict(rows[0], **{"mi:mean": float("nan")})
    with pytest.raises(DataError, match="mi:mean"):
        feature_table([bad], names)
    nan_map = _case(_square(), m=1)
    nan_map.maps["entropy"] = torch.full((24, 24), float("nan"))
    with pytest.raises(DataError, match="entropy"):
        case_features(nan_map)
    with pytest.raises(ConfigError):
        FeatureConfig(frac_levels=(1.5,))


def test_aggregate_score_is_a_rescaled_rank_aggregate_on_the_training_cases():
    rng = np.random.default_rng(0)
    rows = [{"entropy:mean": float(v), "mi:fg_mean": float(w), "sample_agreement": float(s)}
            for v, w, s in zip(rng.random(30), rng.integers(0, 5, 30), rng.random(30))]  # fmt: skip
    agg = AggregateScore().fit(rows)
    assert agg.features == ["entropy:mean", "mi:fg_mean", "sample_agreement"]
    n = len(rows)
    scores = {k: torch.tensor([1 - r[k] if k == "sample_agreement" else r[k] for r in rows]) for k in agg.features}
    expected = ((n - 1) * rank_aggregate(scores).numpy() + 0.5) / n
    np.testing.assert_allclose(agg.score(rows), expected, atol=1e-12)
    again = AggregateScore.from_dict(agg.to_dict())
    np.testing.assert_array_equal(again.score(rows), agg.score(rows))
    new = [{"entropy:mean": 2.0, "mi:fg_mean": 9.0, "sample_agreement": -1.0}]  # above every training value
    assert agg.score(new)[0] == 1.0
    with pytest.raises(ConfigError):
        AggregateScore.from_dict({"kind": "other"})
