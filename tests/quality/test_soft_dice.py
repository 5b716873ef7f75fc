"""Soft Dice confidence: hand values, the binary case, and the expected Dice it estimates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trustseg.core.errors import DataError
from trustseg.quality.soft_dice import soft_dice_confidence, soft_dice_confidence_binary


def test_hand_values_and_conventions():
    p = torch.tensor([0.9, 0.8, 0.3, 0.0])
    assert float(soft_dice_confidence_binary(p, p > 0.5)) == pytest.approx(2 * 1.7 / (2 + 2.0))
    assert float(soft_dice_confidence_binary(torch.tensor([0.1, 0.2]), torch.zeros(2, dtype=torch.bool))) == (
        pytest.approx(0.72)
    )
    assert float(soft_dice_confidence_binary(torch.zeros(3), torch.zeros(3, dtype=torch.bool))) == 1.0


def test_binary_probabilities_give_the_dice():
    rng = np.random.default_rng(0)
    p = torch.tensor(rng.random((16, 16)) > 0.6, dtype=torch.float64)
    y = torch.tensor(rng.random((16, 16)) > 0.5)
    dice = 2 * float((p.bool() & y).sum()) / float(p.sum() + y.sum())
    assert float(soft_dice_confidence_binary(p, y)) == pytest.approx(dice)


def test_multiclass_mean_over_classes():
    probs = torch.tensor([[0.8, 0.1, 0.1, 0.2], [0.1, 0.8, 0.1, 0.1], [0.1, 0.1, 0.8, 0.7]])
    seg = probs.argmax(0)
    per, mean = soft_dice_confidence(probs, seg)
    assert per[0] == pytest.approx(2 * 0.8 / (1 + 1.1))
    assert per[1] == pytest.approx(2 * 1.5 / (2 + 1.7))
    assert mean == pytest.approx(per.mean())
    with pytest.raises(DataError):
        soft_dice_confidence(probs, seg[:2])
    with pytest.raises(DataError):
        soft_dice_confidence(torch.full((2, 3), float("nan")), torch.zeros(3, dtype=torch.long))


def test_close_to_the_expected_dice_of_masks_drawn_from_p():
    """Masks drawn voxel-wise from Bernoulli(p) over 4,096 voxels: the SDC (a ratio of expectations) is within
    0.01 of the Monte-Carlo mean Dice (a mean of ratios; their gap is O(1/n) for n voxels this large)."""
    rng = np.random.default_rng(1)
    p = np.clip(rng.beta(0.5, 0.5, size=4096), 0, 1)
    yhat = p > 0.5
    draws = rng.random((2000, p.size)) < p
    mc = (2 * (draws & yhat).sum(1) / (draws.sum(1) + yhat.sum())).mean()
    assert float(soft_dice_confidence_binary(torch.tensor(p), torch.tensor(yhat))) == pytest.approx(mc, abs=0.01)
