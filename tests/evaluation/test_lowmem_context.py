"""The context's small integer maps and per-chunk soft label, and the calibration states accumulated over chunks,
against the whole-volume formulas they replace (issue 11, F7), with small forced chunks."""

from __future__ import annotations

import pytest
import torch

from trustseg.data.targets import majority_vote, soft_label
from trustseg.evaluation.components import calibration as calibration_module
from trustseg.evaluation.components.calibration import Calibration
from trustseg.evaluation.context import CaseContext, SuiteConfig
from trustseg.metrics.calibration_state import calibration_state


def _ctx(valid=None, seed=0, shape=(4, 5, 6)):
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(2 * torch.randn(3, *shape, generator=g), 0)
    labels = torch.randint(0, 3, (3, *shape), generator=g)
    return CaseContext("c", ["bg", "a", "b"], ["r0", "r1", "r2"], probs, labels, valid=valid)


def test_hard_and_majority_are_uint8_with_the_int64_values():
    ctx = _ctx()
    assert ctx.hard.dtype == torch.uint8 and ctx.majority.dtype == torch.uint8
    assert torch.equal(ctx.hard.long(), ctx.probs.argmax(0))
    assert torch.equal(ctx.majority.long(), majority_vote(ctx.labels, 3))
    assert torch.equal(ctx.error_mask, ctx.probs.argmax(0) != majority_vote(ctx.labels, 3))


def test_soft_class_and_soft_chunk_are_the_soft_label():
    ctx = _ctx(seed=1)
    soft = soft_label(ctx.labels, 3)
    for k in range(3):
        assert torch.equal(ctx.soft_class(k), soft[k])
    assert torch.equal(ctx.soft_chunk(7, 31), soft.reshape(3, -1)[:, 7:31])


@pytest.mark.parametrize("one_pass", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_calibration_states_over_chunks_are_the_whole_volume_states(monkeypatch, masked, one_pass):
    valid = None
    if masked:
        valid = torch.ones(4, 5, 6, dtype=torch.bool)
        valid[:, :2] = False
        valid[0] = False  # whole chunks outside the field of view are skipped
    ctx = _ctx(valid, seed=2)
    monkeypatch.setattr(calibration_module, "CHUNK", 7)  # many chunks, some partly outside the mask
    if not one_pass:  # the per-target path (cases with too many rater codes)
        monkeypatch.setattr(calibration_module, "fits", lambda *a, **k: False)
    comp = Calibration(SuiteConfig(), ctx.classes, ctx.raters)
    got = comp.case_states(ctx)
    targets = {"majority": majority_vote(ctx.labels, 3), "soft": soft_label(ctx.labels, 3)}
    targets.update({f"r{r}": ctx.labels[r] for r in range(3)})
    assert set(got) == set(targets)
    for name, tgt in targets.items():
        ref = calibration_state(ctx.voxels(ctx.probs), ctx.voxels(tgt), bins=15)
        for key, value in ref.items():
            # the one-pass path sums the NLL's float32 logs (the torch backend's terms) where the reference may
            # run the C kernel (float64 logs): the documented ~1e-9 relative agreement; all else is exact
            rtol = 1e-8 if one_pass and key in ("nll", "brier") else 1e-12
            torch.testing.assert_close(got[name][key], value, rtol=rtol, atol=1e-12)
