"""Memory of one evaluated case: the estimate, the limit, the refusal and allocator failures (issue 11, F7)."""

from __future__ import annotations

import pytest
import torch

from trustseg.core.errors import DataError
from trustseg.data.targets import majority_vote, rater_disagreement, soft_label
from trustseg.evaluation import context as context_module
from trustseg.evaluation import memory
from trustseg.evaluation.components.segmentation import Overlap
from trustseg.evaluation.context import CaseContext, SuiteConfig
from trustseg.evaluation.suite import EvaluationSuite


def _case(shape=(4, 5, 6), k=3, r=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(k, *shape, generator=g), 0), torch.randint(0, k, (r, *shape), generator=g)


def test_a_case_that_does_not_fit_is_refused_before_any_work(monkeypatch):
    probs, labels = _case()
    monkeypatch.setenv("TRUSTSEG_MEMORY_LIMIT", "1K")
    suite = EvaluationSuite(["bg", "a", "b"], 3, SuiteConfig(components=("overlap",)))
    with pytest.raises(DataError) as err:
        suite.add_case("big_case", probs, labels)
    msg = str(err.value)
    assert "case big_case" in msg and "0 MB available" in msg and "TRUSTSEG_MEMORY_LIMIT" in msg
    assert "SuiteConfig.components" in msg
    assert suite.rows() == []
    monkeypatch.setenv("TRUSTSEG_MEMORY_LIMIT", "1G")
    assert suite.add_case("big_case", probs, labels)["case"] == "big_case"


def test_an_allocator_failure_becomes_the_same_error(monkeypatch):
    def fail(self, ctx):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(Overlap, "per_case", fail)
    probs, labels = _case()
    suite = EvaluationSuite(["bg", "a", "b"], 3, SuiteConfig(components=("overlap",)))
    with pytest.raises(
        DataError,
        match="case c1: ran out of memory \\(an allocation failed: .*DefaultCPUAllocator.*estimated need about",
    ):
        suite.add_case("c1", probs, labels)


def test_other_runtime_errors_pass_through(monkeypatch):
    def fail(self, ctx):
        raise RuntimeError("something else")

    monkeypatch.setattr(Overlap, "per_case", fail)
    probs, labels = _case()
    with pytest.raises(RuntimeError, match="something else"):
        EvaluationSuite(["bg", "a", "b"], 3, SuiteConfig(components=("overlap",))).add_case("c", probs, labels)


def test_context_targets_chunk_by_chunk_equal_the_whole_volume(monkeypatch):
    monkeypatch.setattr(context_module, "CHUNK", 7)  # 120 voxels: chunk boundaries inside the volume
    probs, labels = _case(seed=3)
    ctx = CaseContext("c", ["bg", "a", "b"], ["r0", "r1", "r2"], probs, labels)
    assert torch.equal(ctx.majority, majority_vote(labels, 3))
    assert torch.equal(ctx.soft, soft_label(labels, 3))
    assert torch.equal(ctx.disagreement, rater_disagreement(labels, 3).float())
    assert torch.equal(ctx.hard, probs.argmax(0))
    bad = probs.clone()
    bad[2, 3, 4, 5] = float("nan")  # in the last chunk
    with pytest.raises(DataError, match="NaN"):
        CaseContext("c", ["bg", "a", "b"], ["r0", "r1", "r2"], bad, labels)


def test_estimate_grows_with_voxels_and_classes():
    small, big = memory.case_memory_need((10, 10, 10), 3), memory.case_memory_need((20, 10, 10), 3)
    assert big - memory.CHUNK_BYTES == 2 * (small - memory.CHUNK_BYTES)
    assert memory.case_memory_need((10, 10, 10), 4) > small
