"""The ``evidential`` method: Dirichlet outputs, target modes, training lowers the loss in 2D and 3D."""

from __future__ import annotations

import pytest
import torch

from trustseg.core.errors import ConfigError
from trustseg.methods import METHODS, Batch, TrainContext, build_method
from trustseg.models.config import NetConfig

NET = NetConfig(params={"channels": (4, 8)})


def _batch(dims: int, b: int = 2, r: int = 3, k: int = 3, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    sp = (16, 16) if dims == 2 else (8, 8, 8)
    base = torch.zeros(b, *sp, dtype=torch.long)
    base[(slice(None),) + tuple(slice(s // 4, 3 * s // 4) for s in sp)] = 1
    base[(slice(None),) + tuple(slice(s // 2 - 1, s // 2 + 1) for s in sp)] = k - 1
    labels = base[:, None].repeat(1, r, *([1] * dims))
    flip = torch.rand(labels.shape, generator=g) < 0.05
    labels = torch.where(flip, torch.randint(0, k, labels.shape, generator=g), labels)
    image = base[:, None].float() + 0.1 * torch.randn(b, 1, *sp, generator=g)
    return Batch(image=image, labels=labels, num_classes=k)


def test_registered_with_doc():
    assert "evidential" in METHODS
    assert "Dirichlet" in METHODS.entry("evidential").doc


@pytest.mark.parametrize("dims", [2, 3])
def test_predict_is_a_dirichlet(dims):
    m = build_method("evidential", NET, dims, 1, 3)
    model = m.build_model().eval()
    x = _batch(dims).image
    with torch.no_grad():
        pred = m.predict([model], x)
    assert pred.is_evidential and pred.num_samples == 1
    assert pred.alpha.shape == (2, 3, *x.shape[2:])
    assert (pred.alpha >= 1).all()
    torch.testing.assert_close(pred.probs.sum(2), torch.ones(1, 2, *x.shape[2:]))


@pytest.mark.parametrize(("dims", "variant"), [(2, "digamma"), (2, "mse"), (3, "log")])
def test_training_lowers_loss(dims, variant):
    torch.manual_seed(0)
    m = build_method("evidential", NET, dims, 1, 3, {"loss_variant": variant})
    model = m.build_model()
    batch = _batch(dims)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ctx = TrainContext(epoch=0, max_epochs=3, generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss, logs = m.loss(model, batch, ctx)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert {"loss", "edl_ace", "edl_kl", "edl_dice", "kl_weight"} <= set(logs)
    assert logs["kl_weight"] == 0.0
    assert losses[-1] < 0.95 * losses[0], losses


def test_target_modes_and_params():
    m = build_method("evidential", NET, 2, 1, 3)
    assert m.target == "soft" and m.params.w_ace == 10.0 and m.params.kl_anneal_epochs == 20
    m2 = build_method("evidential", NET, 2, 1, 3, {"target": "random_rater"})
    assert m2.target == "random_rater"
    batch = _batch(2)
    model = m2.build_model()
    ctx = TrainContext(epoch=25, max_epochs=30, generator=torch.Generator().manual_seed(1))
    loss, logs = m2.loss(model, batch, ctx)
    assert torch.isfinite(loss) and logs["kl_weight"] == 1.0
    with pytest.raises(ConfigError):
        build_method("evidential", NET, 2, 1, 3, {"loss_variant": "hinge"})
    with pytest.raises(ConfigError):
        build_method("evidential", NET, 2, 1, 3, {"w_kl": -1})


def test_temperature_scaling_refused_with_the_old_setting():
    from trustseg.methods.temperature import collect_logits

    m = build_method("evidential", NET, 2, 1, 3, {"temperature_scaling": "none"})
    with pytest.raises(ConfigError, match="temperature scaling does not apply"):
        collect_logits(m, [m.build_model()], [_batch(2)])
    # and a temperature set anyway changes nothing: the old behaviour, p = α / S
    model = m.build_model().eval()
    x = _batch(2).image
    with torch.no_grad():
        before = m.predict([model], x).probs
        m.temperature = 0.3
        after = m.predict([model], x).probs
    torch.testing.assert_close(before, after, rtol=0, atol=0)
