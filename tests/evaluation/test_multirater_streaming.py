"""The curvas, qubiq and samples components on both paths: the one-pass counts (default) and the per-metric
functions (``SuiteConfig(exact=True)``) give the same entries, the known answers and a field of view included."""

from __future__ import annotations

import math

import pytest
import torch

from tests.evaluation.test_known_answer import CLASSES, RATERS, SPACING, build_case, expected_row
from trustseg.evaluation.components.multirater import COUNTS_KEY
from trustseg.evaluation.context import CaseContext, SuiteConfig
from trustseg.evaluation.results import flatten
from trustseg.evaluation.suite import EvaluationSuite

NAMES = ("curvas", "qubiq", "samples")
PREFIXES = ("curvas_", "qubiq_", "ged2_", "sqrt_ged2_", "hungarian_")


@pytest.mark.parametrize("exact", [False, True])
def test_known_answers_on_both_paths(exact):
    labels, maj, probs, hard, samples, maps, image = inputs = build_case()
    suite = EvaluationSuite(CLASSES, RATERS, SuiteConfig(components=NAMES, exact=exact))
    row = suite.add_case(
        "c", torch.from_numpy(probs), torch.from_numpy(labels), spacing=SPACING, samples=torch.from_numpy(samples)
    )
    got = {k: v for k, v in flatten(row).items() if k != "case"}
    exp = {k: v for k, v in expected_row(*inputs).items() if k.startswith(PREFIXES)}
    assert set(got) == set(exp)
    for key, value in exp.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def _case3d(seed=0, k=4, r=3, m=3, shape=(4, 9, 10)):
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(r, *shape, dtype=torch.long)
    for i in range(r):
        labels[i, 1:3, 2 : 6 + i % 2, 3:7] = 1
        labels[i, :, 5 + i % 2 : 8, 6:9] = 2
        labels[i, 2:, 1:3, 1 + i : 4] = 3
    logits = torch.randn(m, k, *shape, generator=g) + 3 * torch.nn.functional.one_hot(labels[0], k).movedim(-1, 0)
    samples = torch.softmax(logits, 1)
    valid = torch.ones(shape, dtype=torch.bool)
    valid[:, :, 0] = valid[0, 0] = False
    return samples.mean(0), labels, samples, valid


def _rows(exact, valid):
    probs, labels, samples, _ = _case3d()
    suite = EvaluationSuite(["bg", "a", "b", "c"], ["r0", "r1", "r2"], SuiteConfig(components=NAMES, exact=exact))
    return flatten(suite.add_case("c", probs, labels, spacing=(2.0, 1.0, 0.5), samples=samples, valid=valid))


@pytest.mark.parametrize("fov", [False, True])
def test_streaming_equals_exact_with_and_without_field_of_view(fov):
    valid = _case3d()[3] if fov else None
    stream, exact = _rows(False, valid), _rows(True, valid)
    assert set(stream) == set(exact)
    assert any(k.startswith("curvas_dice/challenge/") for k in stream)
    for key, value in exact.items():
        if key == "case":
            continue
        assert (math.isnan(value) and math.isnan(stream[key])) or stream[key] == pytest.approx(value, rel=1e-12), key


def test_the_field_of_view_changes_the_voxel_statistics():
    # guards the test above: the mask is seen (confidence and ECE read only the inside voxels)
    full, masked = _rows(False, None), _rows(False, _case3d()[3])
    assert masked["curvas_ece/volumetric/all"] != pytest.approx(full["curvas_ece/volumetric/all"])


def test_curvas_and_qubiq_share_one_pass():
    probs, labels, samples, _ = _case3d()
    ctx = CaseContext("c", ["bg", "a", "b", "c"], ["r0", "r1", "r2"], probs, labels, samples=samples)
    suite = EvaluationSuite(["bg", "a", "b", "c"], ["r0", "r1", "r2"], SuiteConfig(components=("curvas", "qubiq")))
    curvas, qubiq = suite.components
    curvas.per_case(ctx)
    counts = ctx.cache[COUNTS_KEY]
    assert counts.rows is not None  # the challenge mode of a 3D case asked for the counts by row
    qubiq.per_case(ctx)
    assert ctx.cache[COUNTS_KEY] is counts
