"""Layer ensembles: heads, loss, prediction, and AULA on hand-built cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trustseg.core.errors import ConfigError
from trustseg.methods import Batch, TrainContext, build_method
from trustseg.methods.layer_ensemble import layer_agreement
from trustseg.methods.losses import dice_ce_loss
from trustseg.metrics.overlap import pooled_foreground_dice
from trustseg.models.config import NetConfig

NET = NetConfig(params={"channels": (4, 8, 16)})


def _onehot_heads(masks, k=2):
    """Hard masks (H, B, *sp) -> one-hot probabilities (H, B, K, *sp)."""
    return F.one_hot(torch.as_tensor(masks), k).movedim(-1, 2).float()


def test_heads_and_prediction():
    m = build_method("layer-ensemble", NET, 2, 1, 3)  # deep_heads is forced
    model = m.build_model().eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        heads = model.forward_all(x)["heads"]
        pred = m.predict([model], x)
    assert len(heads) == 3
    assert pred.probs.shape == (2, 2, 3, 16, 16)  # skip=1 of 3 heads
    assert torch.allclose(pred.probs, torch.softmax(torch.stack(heads[1:]), 2))
    m0 = build_method("layer-ensemble", NET, 2, 1, 3, {"skip": 0})
    with torch.no_grad():
        assert m0.predict([model], x).num_samples == 3


def test_loss_sums_every_head():
    m = build_method("layer-ensemble", NET, 2, 1, 3)
    model = m.build_model()
    batch = Batch(torch.randn(2, 1, 16, 16), torch.randint(0, 3, (2, 3, 16, 16)), 3)
    loss, logs = m.loss(model, batch, TrainContext())
    expected = sum(dice_ce_loss(h, batch.soft()) for h in model.forward_all(batch.image)["heads"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert {"loss", "head0", "head1", "head2"} <= set(logs)
    loss.backward()
    assert all(p.grad is not None for p in model.deep_heads.parameters())


def test_skip_must_leave_a_head():
    with pytest.raises(ConfigError):
        build_method("layer-ensemble", NET, 2, 1, 3, {"skip": 3})


def test_pooled_foreground_dice_hand_values():
    a = torch.tensor([[1, 1, 0, 0]])
    b = torch.tensor([[1, 0, 0, 0]])
    assert pooled_foreground_dice(a, b).item() == pytest.approx(2 / 3)
    # multi-class, pooled over foreground classes: one matching class-2 pixel, 2 + 2 foreground pixels
    assert pooled_foreground_dice(torch.tensor([[1, 2]]), torch.tensor([[2, 2]])).item() == pytest.approx(0.5)
    assert (
        pooled_foreground_dice(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long)).item() == 1.0
    )
    assert pooled_foreground_dice(torch.tensor([[1, 0]]), torch.tensor([[0, 1]])).item() == 0.0


def test_aula_identical_heads_is_one():
    masks = torch.randint(0, 3, (1, 2, 5, 5)).expand(4, 2, 5, 5)
    assert torch.allclose(layer_agreement(_onehot_heads(masks, 3)), torch.ones(2, dtype=torch.float64))


def test_aula_hand_case():
    # heads (coarse -> fine) on a 1x4 image: d1 = Dice(h1, h2) = 1, d2 = Dice(h2, h3) = 2/3
    masks = [[[[1, 1, 0, 0]]], [[[1, 1, 0, 0]]], [[[1, 0, 0, 0]]]]
    aula = layer_agreement(_onehot_heads(masks))
    assert aula.item() == pytest.approx((1 + 2 / 3) / 2)  # trapezoid, x spacing 1/(H-2) = 1
    # four heads: d = (1, 2/3, 0) at x = 0, 1/2, 1 -> area = (1/2)(1 + 2/3)/2 + (1/2)(2/3 + 0)/2
    masks4 = masks + [[[[0, 0, 1, 1]]]]
    expected = 0.5 * (1 + 2 / 3) / 2 + 0.5 * (2 / 3) / 2
    assert layer_agreement(_onehot_heads(masks4)).item() == pytest.approx(expected)
    # two heads: the single Dice
    assert layer_agreement(_onehot_heads(masks[1:])).item() == pytest.approx(2 / 3)


def test_aula_binarises_by_argmax_not_p_above_zero():
    # soft heads that disagree: thresholding p > 0 would call every pixel foreground in every head (AULA = 1)
    p_fg = torch.tensor([[[[0.9, 0.1, 0.1, 0.1]]], [[[0.1, 0.9, 0.1, 0.1]]], [[[0.1, 0.1, 0.9, 0.1]]]])
    probs = torch.stack([1 - p_fg, p_fg], 2)  # (H=3, B=1, K=2, 1, 4)
    assert layer_agreement(probs).item() == pytest.approx(0.0)


def test_aula_rejects_bad_shapes():
    with pytest.raises(ValueError):
        layer_agreement(torch.rand(1, 1, 2, 4, 4))
    with pytest.raises(ValueError):
        layer_agreement(torch.rand(2, 4, 4))
