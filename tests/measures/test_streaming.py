"""Streaming measures over samples equal the batch measures; merging equals one stream."""

from __future__ import annotations

import pytest
import torch

from trustseg.core.predictive import Predictive
from trustseg.measures import MEASURES
from trustseg.measures.streaming import StreamingMoments

NAMES = ["confidence", "entropy", "expected_entropy", "mi", "epkl", "variance"]


def samples(m=6, b=2, k=3, spatial=(4, 5), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(m, b, k, *spatial, generator=g, dtype=torch.float64) * 2, dim=2)


def test_streaming_equals_batch():
    p = samples()
    sm = StreamingMoments(num_classes=3)
    for s in p:
        sm.update(s)
    pred = Predictive(probs=p)
    got = sm.compute()
    assert list(got) == NAMES
    for name in NAMES:
        assert torch.allclose(got[name], MEASURES[name](pred), atol=1e-6, rtol=0), name
        assert got[name].dtype == torch.float64
    assert torch.allclose(sm.mean(), pred.mean(), atol=1e-12)
    assert sm.count == 6


def test_streaming_3d_and_float32_output():
    p = samples(m=3, b=1, k=2, spatial=(2, 3, 4)).float()
    sm = StreamingMoments(2)
    for s in p:
        sm.update(s)
    pred = Predictive(probs=p)
    for name in NAMES:
        out = getattr(sm, name)()
        assert out.dtype == torch.float32 and out.shape == (1, 2, 3, 4)
        assert torch.allclose(out, MEASURES[name](pred), atol=1e-5), name


def test_merge_equals_one_stream():
    p = samples(m=7, seed=2)
    whole, a, b = StreamingMoments(3), StreamingMoments(3), StreamingMoments(3)
    for i, s in enumerate(p):
        whole.update(s)
        (a if i < 3 else b).update(s)
    empty = StreamingMoments(3)
    a.merge(b).merge(empty)
    c = StreamingMoments(3).merge(a)
    for name in NAMES:
        assert torch.allclose(getattr(a, name)(), getattr(whole, name)(), atol=1e-12), name
        assert torch.allclose(getattr(c, name)(), getattr(whole, name)(), atol=1e-12), name
    assert a.count == c.count == 7


def test_state_is_fixed_size():
    p = samples(m=5)
    sm = StreamingMoments(3)
    sizes = []
    for s in p:
        sm.update(s)
        sizes.append(sum(t.numel() for t in (sm.s1, sm.s2, sm.slog, sm.sxlogx)))
    assert len(set(sizes)) == 1 and sizes[0] == 4 * p[0].numel()


def test_errors():
    sm = StreamingMoments(3)
    with pytest.raises(ValueError, match="no samples"):
        sm.mi()
    with pytest.raises(ValueError, match="K=3"):
        sm.update(torch.rand(1, 2, 4, 4))
    sm.update(torch.full((1, 3, 4, 4), 1 / 3))
    with pytest.raises(ValueError, match="differs"):
        sm.update(torch.full((1, 3, 5, 4), 1 / 3))
    with pytest.raises(ValueError, match="cannot merge"):
        sm.merge(StreamingMoments(2).update(torch.full((1, 2, 4, 4), 0.5)))
    with pytest.raises(ValueError, match="knows"):
        sm.compute(["vacuity"])
