"""MapQuality's streaming path (one chunked pass, :mod:`trustseg.metrics.rank_histogram`) against its exact path
(``SuiteConfig(exact=True)``, the sort-based functions): same keys, every value within the bound its histogram
gives, Pearson / variance NCC and the pooled sums equal up to round-off, with and without a field of view, and
over several chunks."""

from __future__ import annotations

import math

import pytest
import torch

import trustseg.evaluation.components.uncertainty as unc
from trustseg.evaluation.components.uncertainty import MapQuality
from trustseg.evaluation.context import CaseContext, SuiteConfig
from trustseg.evaluation.results import flatten

CLASSES, RATERS = ["bg", "a", "b"], ["r0", "r1", "r2"]
SHAPE = (10, 18, 20)


def _ctx(valid: bool, seed: int = 0) -> CaseContext:
    g = torch.Generator().manual_seed(seed)
    z, y, x = torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in SHAPE], indexing="ij")
    dist = ((z - 5) ** 2 + (y - 9) ** 2 + (x - 10) ** 2).sqrt()
    labels = torch.stack([(dist < 5 + r + torch.rand(SHAPE, generator=g)).long() for r in range(3)])
    labels[1][(dist < 2.5)] = 2
    logits = torch.randn(3, *SHAPE, generator=g) + 2.5 * torch.nn.functional.one_hot(labels[0], 3).movedim(-1, 0)
    probs = torch.softmax(logits, 0)
    ent = -(probs * probs.clamp_min(1e-12).log()).sum(0)
    ent[dist > 8] = 0.0  # an atom at 0 (a certain background)
    var = probs.var(0) * (torch.rand(SHAPE, generator=g) < 0.7)  # zeros mixed in
    maps = {"entropy": ent, "confidence": probs.max(0).values, "variance": var}
    fov = (x > 2) & (y < 16) if valid else None
    return CaseContext("c", CLASSES, RATERS, probs, labels, maps=maps, valid=fov)


def _bounds(ctx: CaseContext) -> dict[str, float]:
    comp = MapQuality(SuiteConfig(), ctx.classes, ctx.raters)
    out = {}
    for name, h in comp.histograms(ctx).items():
        out[f"pixel_spearman/{name}/disagreement"] = h.spearman()[1]
        out[f"error_auroc/{name}/error"] = h.auroc()[1]
        out[f"error_auprc/{name}/error"] = h.average_precision()[1]
        out[f"ueo/{name}/error"] = h.ueo()[1]
    return out


@pytest.mark.parametrize("valid", [False, True], ids=["whole", "field_of_view"])
@pytest.mark.parametrize("chunk", [1 << 20, 1000], ids=["one_chunk", "chunks"])
def test_streaming_values_are_within_their_bounds_of_the_exact_ones(valid, chunk, monkeypatch):
    monkeypatch.setattr(unc, "STREAM_CHUNK", chunk)
    ctx = _ctx(valid)
    exact = flatten(MapQuality(SuiteConfig(exact=True), CLASSES, RATERS).per_case(ctx))
    ctx.cache.clear()
    stream = flatten(MapQuality(SuiteConfig(), CLASSES, RATERS).per_case(ctx))
    bounds = _bounds(ctx)
    assert stream.keys() == exact.keys() and len(stream) == 3 * 5 + 1
    for key, value in exact.items():
        assert not math.isnan(value), key
        assert abs(stream[key] - value) <= bounds.get(key, 0.0) + 1e-12, key
    # the bounds are not vacuous: small, and the histograms are fine enough that most values are near-exact
    assert max(bounds.values()) < 0.05
    assert sum(b == 0.0 for b in bounds.values()) >= 1


def test_the_pooled_sums_come_from_the_streaming_pass():
    ctx = _ctx(True)
    exact, stream = (MapQuality(SuiteConfig(exact=e), CLASSES, RATERS) for e in (True, False))
    a, b = exact.update({}, ctx), stream.update({}, ctx)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-10, atol=1e-9), name
    assert stream.finalize(b)["uncertainty"]["entropy"]["pixel_pearson_pooled"] == pytest.approx(
        exact.finalize(a)["uncertainty"]["entropy"]["pixel_pearson_pooled"], abs=1e-12
    )


def test_without_error_voxels_the_error_scores_are_left_out_on_both_paths():
    ctx = _ctx(False)
    labels = ctx.hard.long()[None].expand(3, *SHAPE).clone()  # every rater agrees with the prediction
    ctx = CaseContext("c", CLASSES, RATERS, ctx.probs, labels, maps=ctx.raw_maps)
    rows = [flatten(MapQuality(SuiteConfig(exact=e), CLASSES, RATERS).per_case(ctx)) for e in (False, True)]
    assert rows[0].keys() == rows[1].keys()
    assert not any(k.startswith(("ueo", "error_")) for k in rows[0])
    assert all(math.isnan(v) for v in rows[0].values())  # one disagreement level: correlations undefined
