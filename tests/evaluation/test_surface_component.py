"""The ``surface`` component gives the same HD95 / ASSD / NSD on the band path and the exact (KD-tree) path."""

from __future__ import annotations

import math

import pytest
import torch

from trustseg.evaluation.context import SuiteConfig
from trustseg.evaluation.results import flatten
from trustseg.evaluation.suite import EvaluationSuite


def _case(seed: int):
    g = torch.Generator().manual_seed(seed)
    labels = torch.zeros(3, 14, 16, 12, dtype=torch.long)
    for r in range(3):
        labels[r, 3 : 9 + r % 2, 2 : 10 + r, 1:8] = 1
        labels[r, 9:13, 11 - r : 15, 6:11] = 2
    logits = 2.5 * torch.nn.functional.one_hot(labels[0], 3).movedim(-1, 0).float()
    logits += 1.2 * torch.randn(3, 14, 16, 12, generator=g)  # salt-and-pepper errors far from the organs
    return torch.softmax(logits, 0), labels


@pytest.mark.parametrize("seed", [0, 1])
def test_band_path_equals_exact_path(seed):
    probs, labels = _case(seed)
    out = {}
    for exact in (False, True):
        suite = EvaluationSuite(["background", "a", "b"], 3, SuiteConfig(components=("surface",), exact=exact))
        row = suite.add_case("c", probs, labels, spacing=(2.0, 0.8, 1.1))
        out[exact] = {k: v for k, v in flatten(row).items() if k.split("/")[0] in ("hd95", "assd", "nsd")}
    assert out[False].keys() == out[True].keys() and len(out[False]) >= 9
    for key, value in out[True].items():
        assert isinstance(value, float) and not math.isnan(value), key
        assert out[False][key] == pytest.approx(value, rel=1e-12), key
