"""Losses against hand-computed values and torch references."""

from __future__ import annotations

import math

import pytest
import torch

from trustseg.methods.losses import dice_ce_loss, soft_cross_entropy, soft_dice_loss


def test_soft_dice_hand_values():
    # one image, K=2, two pixels: p = [[1, .5], [0, .5]] (class x pixel), y = [[1, 0], [0, 1]]
    p = torch.tensor([[[1.0, 0.5], [0.0, 0.5]]])
    y = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    d0 = 2 * 1.0 / (1.5 + 1.0)  # class 0: Σpy = 1, Σp = 1.5, Σy = 1
    d1 = 2 * 0.5 / (0.5 + 1.0)  # class 1: Σpy = .5, Σp = .5, Σy = 1
    assert soft_dice_loss(p, y, eps=0.0).item() == pytest.approx(1 - (d0 + d1) / 2)
    assert soft_dice_loss(p, y, include_background=False, eps=0.0).item() == pytest.approx(1 - d1)


def test_soft_dice_perfect_and_empty_class():
    y = torch.zeros(2, 3, 4, 4)
    y[:, 0] = 1  # classes 1, 2 absent from target and prediction
    assert soft_dice_loss(y.clone(), y).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_dice_soft_target_is_not_minimised_by_the_target_itself_only():
    # with soft targets the loss is still a differentiable function; gradients exist and are finite
    p = torch.rand(2, 3, 5, 5, requires_grad=True)
    y = torch.softmax(torch.randn(2, 3, 5, 5), 1)
    soft_dice_loss(torch.softmax(p, 1), y).backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_soft_cross_entropy_matches_torch_for_one_hot_and_soft():
    z = torch.randn(2, 4, 3, 5)
    lab = torch.randint(0, 4, (2, 3, 5))
    y = torch.nn.functional.one_hot(lab, 4).movedim(-1, 1).float()
    assert soft_cross_entropy(z, y).item() == pytest.approx(torch.nn.functional.cross_entropy(z, lab).item(), rel=1e-6)
    ys = torch.softmax(torch.randn(2, 4, 3, 5), 1)
    ref = torch.nn.functional.cross_entropy(z, ys)  # torch accepts class probabilities as targets
    assert soft_cross_entropy(z, ys).item() == pytest.approx(ref.item(), rel=1e-6)


def test_soft_cross_entropy_hand_value():
    z = torch.tensor([[[0.0], [math.log(3.0)]]])  # softmax = (1/4, 3/4)
    y = torch.tensor([[[0.5], [0.5]]])
    expected = -(0.5 * math.log(0.25) + 0.5 * math.log(0.75))
    assert soft_cross_entropy(z, y).item() == pytest.approx(expected, rel=1e-6)


def test_dice_ce_is_the_weighted_sum():
    z = torch.randn(2, 3, 4, 4)
    y = torch.softmax(torch.randn(2, 3, 4, 4), 1)
    d = soft_dice_loss(torch.softmax(z, 1), y)
    c = soft_cross_entropy(z, y)
    assert dice_ce_loss(z, y).item() == pytest.approx((d + c).item(), rel=1e-6)
    assert dice_ce_loss(z, y, w_dice=0.5, w_ce=2.0).item() == pytest.approx((0.5 * d + 2 * c).item(), rel=1e-6)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        soft_cross_entropy(torch.randn(1, 2, 4), torch.rand(1, 3, 4))
