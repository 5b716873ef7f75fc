"""The softmax baseline: targets, loss, prediction, temperature."""

from __future__ import annotations

import pytest
import torch

from trustseg.core.errors import ConfigError
from trustseg.methods import Batch, TrainContext, build_method
from trustseg.methods.losses import dice_ce_loss
from trustseg.models.config import NetConfig

NET = NetConfig(params={"channels": (4, 8)})


def _batch(b=2, r=3, k=3, shape=(16, 16)):
    return Batch(torch.randn(b, 1, *shape), torch.randint(0, k, (b, r, *shape)), k)


def test_predict_is_softmax_of_the_logits_divided_by_t():
    m = build_method("softmax", NET, 2, 1, 3)
    model = m.build_model().eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        z = model(x)
        pred = m.predict([model], x)
        assert pred.probs.shape == (1, 2, 3, 16, 16)
        assert torch.allclose(pred.probs[0], torch.softmax(z, 1))
        m.temperature = 2.0
        assert torch.allclose(m.predict([model], x).probs[0], torch.softmax(z / 2, 1))


@pytest.mark.parametrize("target", ["soft", "majority", "random_rater"])
def test_loss_uses_the_chosen_target(target):
    m = build_method("softmax", NET, 2, 1, 3, {"target": target})
    assert m.target == target
    model = m.build_model()
    batch = _batch()
    gen = torch.Generator().manual_seed(5)
    loss, logs = m.loss(model, batch, TrainContext(generator=gen))
    expected = dice_ce_loss(model(batch.image), batch.target(target, torch.Generator().manual_seed(5)))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert logs["loss"] == pytest.approx(loss.item())


def test_training_reduces_the_loss_on_a_learnable_toy_task():
    m = build_method("softmax", NET, 2, 1, 2)
    model = m.build_model()
    x = torch.randn(4, 1, 16, 16)
    labels = (x > 0).long().expand(4, 3, 16, 16)  # every rater: foreground where the image is positive
    batch = Batch(x, labels, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(15):
        loss, _ = m.loss(model, batch, TrainContext())
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.7 * first


def test_unknown_param_and_target():
    with pytest.raises(ConfigError, match="did you mean 'target'"):
        build_method("softmax", NET, 2, 1, 3, {"targt": "soft"})
    with pytest.raises(ConfigError):
        build_method("softmax", NET, 2, 1, 3, {"target": "all_raters"})
