"""The context's one-pass quantities (rater codes, first-maximum argmax) and the overlap counted from the joint
(hard, code) histogram, against the per-voxel formulas and metrics they replace (issue 14)."""

from __future__ import annotations

import math

import pytest
import torch

from trustseg.data.rater_codes import code_tables, rater_code
from trustseg.data.targets import majority_vote, rater_disagreement, soft_label
from trustseg.evaluation import context as context_module
from trustseg.evaluation.components.segmentation import Overlap
from trustseg.evaluation.context import CaseContext, SuiteConfig, first_argmax
from trustseg.evaluation.suite import EvaluationSuite
from trustseg.metrics.overlap import dice, dice_vs_raters, dice_vs_raters_from_joint, iou, joint_counts
from trustseg.metrics.uncertainty_quality import band_ucc_gradient, band_ur_gradient, gradient_band


def _case(k=3, r=3, shape=(4, 5, 6), seed=0, ties=True):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(2 * torch.randn(k, *shape, generator=g), 0)
    if ties:  # exact ties between classes: the lower class wins
        probs[:, 0, 0, :3] = torch.full((k, 1), 1.0 / k)
        if k >= 3:
            probs[:, 1, 0, :2] = torch.tensor([0.25, 0.375, 0.375] + [0.0] * (k - 3))[:, None]
    labels = torch.randint(0, k, (r, *shape), generator=g)
    return probs, labels


def _ctx(probs, labels, valid=None):
    k, r = probs.shape[0], labels.shape[0]
    return CaseContext("c", [f"c{i}" for i in range(k)], [f"r{i}" for i in range(r)], probs, labels, valid=valid)


def test_first_argmax_is_torch_argmax_with_ties():
    p = torch.tensor([[0.5, 0.2, 0.3, 0.0], [0.5, 0.4, 0.3, 0.0], [0.0, 0.4, 0.4, 1.0]])  # ties in columns 0, 1
    out = first_argmax(p, torch.empty(4, dtype=torch.uint8))
    assert out.tolist() == [0, 1, 2, 2] == p.argmax(0).tolist()


@pytest.mark.parametrize(("k", "r"), [(3, 3), (2, 5), (4, 2), (3, 11)])  # 3^11 codes: the formulas' fallback
def test_context_maps_are_the_formulas(k, r):
    probs, labels = _case(k, r)
    ctx = _ctx(probs, labels)
    assert (ctx.codes is None) == (k**r > 1 << 16)
    assert torch.equal(ctx.hard.long(), probs.argmax(0))
    assert torch.equal(ctx.majority.long(), majority_vote(labels, k))
    assert ctx.hard.dtype == ctx.majority.dtype == torch.uint8
    assert torch.equal(ctx.soft, soft_label(labels, k))
    assert torch.equal(ctx.disagreement, rater_disagreement(labels, k))
    for j in range(k):
        assert torch.equal(ctx.soft_class(j), soft_label(labels, k)[j])
    assert torch.equal(ctx.soft_chunk(5, 77), soft_label(labels, k).reshape(k, -1)[:, 5:77])


def test_context_over_many_chunks(monkeypatch):
    monkeypatch.setattr(context_module, "CHUNK", 7)  # chunks that cut rows and the volume unevenly
    probs, labels = _case(seed=3)
    ctx = _ctx(probs, labels)
    assert torch.equal(ctx.hard.long(), probs.argmax(0))
    assert torch.equal(ctx.majority.long(), majority_vote(labels, 3))
    assert torch.equal(ctx.soft, soft_label(labels, 3))
    assert torch.equal(ctx.disagreement, rater_disagreement(labels, 3))


def test_bad_labels_name_the_case_and_the_labels():
    probs, labels = _case()
    labels[1, 2, 3, 4] = 3
    with pytest.raises(Exception, match=r"case c: rater labels must lie in \[0, 3\)") as info:
        _ = _ctx(probs, labels).majority
    assert getattr(info.value, "source", None) == "labels"


def test_nonfinite_probabilities_are_refused():
    probs, labels = _case()
    probs[1, 1, 1, 1] = float("nan")
    with pytest.raises(Exception, match="NaN or infinite"):
        _ctx(probs, labels)
    probs[1, 1, 1, 1] = float("inf")
    with pytest.raises(Exception, match="NaN or infinite"):
        _ctx(probs, labels)


@pytest.mark.parametrize("empty", ["nan", "one", "zero"])
def test_joint_counts_give_dice_vs_raters(empty):
    probs, labels = _case(seed=5)
    labels[:, :2] = 0  # a class present in few voxels; consensus regions of every kind
    hard = probs.argmax(0)
    ctx = _ctx(probs, labels)
    joint = joint_counts(ctx.hard, ctx.codes, 3, 27, chunk=11)
    assert int(joint.sum()) == hard.numel()
    got = dice_vs_raters_from_joint(joint, ctx.code_tables, empty=empty)
    ref = dice_vs_raters(hard, labels, 3, empty=empty)
    for key, val in ref.items():
        torch.testing.assert_close(got[key], val, equal_nan=True, rtol=0, atol=0)
    torch.testing.assert_close(got["iou_majority"], iou(hard, majority_vote(labels, 3), 3, empty=empty), equal_nan=True)


def test_joint_counts_known_answer():
    # 2 classes, 2 raters: codes y0 + 2 y1
    labels = torch.tensor([[1, 1, 0, 0, 1], [1, 0, 1, 0, 1]])
    pred = torch.tensor([1, 1, 1, 0, 0])
    d = dice_vs_raters_from_joint(joint_counts(pred, rater_code(labels, 2), 2, 4), code_tables(2, 2))
    # rater 0 = [1,1,0,0,1]: TP 2, FP 1, FN 1 -> 4/6; rater 1 = [1,0,1,0,1]: TP 2, FP 1, FN 1 -> 4/6
    assert d["rater_0"].tolist() == pytest.approx([4 / 6]) and d["rater_1"].tolist() == pytest.approx([4 / 6])
    # majority (ties -> 0) = [1,0,0,0,1]: TP 1, FP 2, FN 1 -> 2/5
    assert d["majority"].tolist() == pytest.approx([2 / 5])
    # consensus: C+ = {0, 4}, C- = {3}: 2|P ∩ C+| = 2, |P ∩ (C+ ∪ C-)| = 1, |C+| = 2 -> 2/3
    assert d["consensus"].tolist() == pytest.approx([2 / 3])


@pytest.mark.parametrize("masked", [False, True])
def test_overlap_component_equals_the_metric_functions(masked):
    probs, labels = _case(shape=(5, 6, 7), seed=2)
    valid = None
    if masked:
        valid = torch.ones(5, 6, 7, dtype=torch.bool)
        valid[:, :2] = False
    ctx = _ctx(probs, labels, valid=valid)
    classes = [f"c{i}" for i in range(3)]
    suite = EvaluationSuite(classes, ["r0", "r1", "r2"], SuiteConfig(components=("overlap",)))
    comp = next(c for c in suite.components if c.name == "overlap")
    assert isinstance(comp, Overlap)
    got = comp.per_case(ctx)
    p, y = ctx.probs.argmax(0), ctx.labels  # the field of view's outside is background in both
    ref = dice_vs_raters(p, y, 3, empty="nan")
    assert got["dice"]["majority"]["c1"] == pytest.approx(float(ref["majority"][0]), nan_ok=True)
    assert got["dice"]["consensus"]["c2"] == pytest.approx(float(ref["consensus"][1]), nan_ok=True)
    assert got["dice"]["r1"]["c1"] == pytest.approx(float(ref["rater_1"][0]), nan_ok=True)
    assert got["dice"]["mean_rater"]["c2"] == pytest.approx(float(ref["mean_rater"][1]), nan_ok=True)
    maj = majority_vote(y, 3)
    assert got["iou"]["majority"]["c1"] == pytest.approx(float(iou(p, maj, 3, empty="nan")[0]), nan_ok=True)
    assert got["qc_dice"]["majority"]["mean"] == pytest.approx(float(dice(p, maj, 3, empty="one").mean()))


def _gradient_reference(ctx, band):
    """SURE's gradient metrics on the whole volume (what the component computed before the box)."""
    near, g = gradient_band(ctx.image.float(), ctx.majority, band=band, spacing=ctx.spacing)
    return {
        name: (float(band_ucc_gradient(u, near, g)), float(band_ur_gradient(u, near, g)))
        for name, u in ctx.maps.items()
    }


@pytest.mark.parametrize(
    ("band", "spacing", "where"),
    [(1.0, (1.0, 1.0, 1.0), "inside"), (2.0, (1.0, 0.5, 2.0), "inside"), (1.0, (1.0, 1.0, 1.0), "corner")],
)
def test_gradient_on_the_box_is_the_whole_volume(band, spacing, where):
    g = torch.Generator().manual_seed(7)
    shape = (12, 14, 16)
    labels = torch.zeros(3, *shape, dtype=torch.long)
    sl = (slice(4, 8), slice(5, 10), slice(6, 11)) if where == "inside" else (slice(0, 4), slice(0, 5), slice(9, 16))
    labels[(slice(None), *sl)] = 1
    labels[0, sl[0].start, sl[1].start, sl[2].start] = 2  # a second class and a ragged boundary
    probs = torch.softmax(torch.randn(3, *shape, generator=g), 0)
    maps = {"entropy": torch.rand(shape, generator=g), "confidence": torch.rand(shape, generator=g)}
    image = torch.randn(1, *shape, generator=g)
    ctx = CaseContext("c", ["bg", "a", "b"], ["r0", "r1", "r2"], probs, labels, spacing, maps, image=image)
    cfg = SuiteConfig(components=("sure_gradient",), gradient_band=band)
    suite = EvaluationSuite(["bg", "a", "b"], ["r0", "r1", "r2"], cfg)
    got = next(c for c in suite.components if c.name == "sure_gradient").per_case(ctx)
    ref = _gradient_reference(ctx, band)
    for name, (ucc, ur) in ref.items():
        assert got["ucc_gradient"][name]["majority"] == ucc  # the same voxels in the same order: the same bits
        assert got["ur_gradient"][name]["majority"] == ur


def test_gradient_without_foreground_is_nan_as_before():
    shape = (6, 6, 6)
    probs = torch.softmax(torch.randn(3, *shape), 0)
    ctx = CaseContext(
        "c",
        ["bg", "a", "b"],
        ["r0"],
        probs,
        torch.zeros(1, *shape, dtype=torch.long),
        None,
        {"entropy": torch.rand(shape)},
        image=torch.randn(1, *shape),
    )
    suite = EvaluationSuite(["bg", "a", "b"], ["r0"], SuiteConfig(components=("sure_gradient",)))
    got = next(c for c in suite.components if c.name == "sure_gradient").per_case(ctx)
    assert math.isnan(got["ucc_gradient"]["entropy"]["majority"])
