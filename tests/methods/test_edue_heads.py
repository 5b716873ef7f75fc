"""The ``edue-heads`` method: random-rater deep heads whose variance is guided to the raters' variance."""

from __future__ import annotations

import pytest
import torch

from trustseg.core.errors import ConfigError, DataError
from trustseg.measures import MEASURES
from trustseg.methods import METHODS, Batch, TrainContext, build_method
from trustseg.methods.edue_heads import heads_variance, variance_mse
from trustseg.methods.losses import dice_ce_loss
from trustseg.models.config import NetConfig

NET = NetConfig(params={"channels": (4, 8, 16)})  # H = 3 heads, M = 2 kept with the default skip = 1


def _batch(dims: int, r: int = 3, k: int = 2, b: int = 2) -> Batch:
    """A disc (2D) or ball (3D) that every rater marks, plus a ring that only the first rater marks."""
    sp = (16, 16) if dims == 2 else (8, 8, 8)
    grids = torch.meshgrid(*(torch.arange(s, dtype=torch.float32) - (s - 1) / 2 for s in sp), indexing="ij")
    radius = torch.sqrt(sum(g**2 for g in grids))
    inner, outer = sp[0] / 5, sp[0] / 3
    labels = torch.zeros(b, r, *sp, dtype=torch.long)
    labels[:, :, radius <= inner] = k - 1
    labels[:, 0, radius <= outer] = k - 1
    image = (radius <= inner).float() + 0.5 * ((radius > inner) & (radius <= outer)).float()
    return Batch(image=image.expand(b, 1, *sp).clone(), labels=labels, num_classes=k)


def test_registered_with_its_declarations():
    entry = METHODS.entry("edue-heads")
    assert "variance" in entry.doc
    m = build_method("edue-heads", NET, 2, 1, 2)
    assert m.needs_raters and m.target == "all_raters" and m.samples_are_heads
    assert m.primary_measure == "predicted_variance" and m.params.var_weight == 3.0 and m.params.skip == 1
    assert build_method("edue", NET, 2, 1, 2).samples_are_heads is False  # the regression variant is unchanged


def test_bad_params_fail_clearly():
    with pytest.raises(ConfigError, match=r"method.edue-heads.skip must be in 0..2"):
        build_method("edue-heads", NET, 2, 1, 2, {"skip": 3})
    with pytest.raises(ConfigError, match="var_weight must be >= 0"):
        build_method("edue-heads", NET, 2, 1, 2, {"var_weight": -1.0})
    m = build_method("edue-heads", NET, 2, 1, 2)
    with pytest.raises(DataError, match="at least 2 raters"):
        m.loss(m.build_model(), _batch(2, r=1), TrainContext())


def test_heads_variance_known_values():
    # pixel 0: heads agree (0); pixel 1: (1, 0) vs (0, 1) -> 2 · 0.25 = 0.5; pixel 2: (0.8, 0.2) vs (0.4, 0.6)
    p = torch.tensor([[[1.0, 1.0, 0.8], [0.0, 0.0, 0.2]], [[1.0, 0.0, 0.4], [0.0, 1.0, 0.6]]]).view(2, 1, 2, 3)
    v = heads_variance(p)
    assert v.shape == (1, 1, 3)
    torch.testing.assert_close(v.flatten(), torch.tensor([0.0, 0.5, 2 * 0.2**2]))
    # M heads that copy M raters' one-hot masks: V is the raters' variance formula Σ_k ȳ_k (1 − ȳ_k)
    labels = torch.tensor([[[0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]]])  # (B=1, R=3, W=4)
    batch = Batch(torch.zeros(1, 1, 4), labels, 2)
    copies = batch.onehot(labels[0])[:, None]  # (R, 1, K, W): head m = rater m
    torch.testing.assert_close(heads_variance(copies), batch.rater_variance())


def test_variance_term_is_zero_when_heads_and_raters_agree():
    m = build_method("edue-heads", NET, 2, 1, 2)
    model = m.build_model()
    with torch.no_grad():  # make every head the same constant map
        for conv in [*model.deep_heads, model.head]:
            conv.weight.zero_()
            conv.bias.copy_(torch.tensor([1.0, -1.0]))
    b = _batch(2)
    agree = Batch(b.image, b.labels[:, :1].expand(-1, 3, -1, -1).clone(), 2)  # three identical raters
    loss, logs = m.loss(model, agree, TrainContext(generator=torch.Generator().manual_seed(0)))
    assert logs["var_mse"] == 0.0
    q = torch.rand(1, 2, 1, 5)
    p = torch.cat([q, 1 - q], 2).expand(3, -1, -1, -1)  # 3 equal heads (M, B, K, W)
    assert float(variance_mse(p, torch.zeros(2, 1, 5))) == 0.0
    # and it is not zero when the raters disagree though the heads agree
    _, logs2 = m.loss(model, b, TrainContext(generator=torch.Generator().manual_seed(0)))
    assert logs2["var_mse"] > 0


def test_random_rater_per_head_is_seeded_and_loss_matches_formula():
    m = build_method("edue-heads", NET, 2, 1, 2, {"var_weight": 2.0})
    torch.manual_seed(0)
    model = m.build_model()
    batch = Batch(torch.randn(3, 1, 16, 16), torch.randint(0, 2, (3, 4, 16, 16)), 2)
    l1, logs1 = m.loss(model, batch, TrainContext(generator=torch.Generator().manual_seed(5)))
    l2, _ = m.loss(model, batch, TrainContext(generator=torch.Generator().manual_seed(5)))
    l3, _ = m.loss(model, batch, TrainContext(generator=torch.Generator().manual_seed(6)))
    assert l1.item() == l2.item()  # same seed, same raters
    assert l1.item() != l3.item()  # another seed draws other raters
    # the formula: per head, the rater drawn in head order from the generator
    gen = torch.Generator().manual_seed(5)
    heads = model.forward_all(batch.image)["heads"]
    seg = torch.stack([dice_ce_loss(z, batch.random_rater(gen)) for z in heads]).mean()
    mse = variance_mse(torch.softmax(torch.stack(heads[1:]), 2), batch.rater_variance())
    assert l1.item() == pytest.approx((seg + 2.0 * mse).item(), rel=1e-6)
    assert {"loss", "seg", "var_mse", "head0", "head1", "head2"} <= set(logs1)


def test_training_steps_decrease_the_loss_and_learn_the_ring():
    torch.manual_seed(0)
    m = build_method("edue-heads", NET, 2, 1, 2)
    model = m.build_model()
    batch = _batch(2)
    target = batch.rater_variance()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    first = None
    for step in range(80):
        opt.zero_grad()
        loss, logs = m.loss(model, batch, TrainContext(step=step, generator=gen))
        loss.backward()
        opt.step()
        first = first or logs
    # one step on a fixed rater draw decreases the loss
    ctx = lambda: TrainContext(generator=torch.Generator().manual_seed(1))  # noqa: E731
    before, _ = m.loss(model, batch, ctx())
    opt.zero_grad()
    before.backward()
    opt.step()
    after, _ = m.loss(model, batch, ctx())
    assert after.item() < before.item()
    assert logs["loss"] < first["loss"]
    with torch.no_grad():
        pred = m.predict([model.eval()], batch.image)
    var = pred.extras["rater_variance"]
    ring = target > 0
    assert float(var[ring].mean()) > 3 * float(var[~ring].mean())  # high where the raters disagree


@pytest.mark.parametrize("dims", [2, 3])
def test_prediction_shapes_and_measures(dims):
    m = build_method("edue-heads", NET, dims, 1, 3)
    model = m.build_model().eval()
    x = _batch(dims, k=3).image
    with torch.no_grad():
        heads = model.forward_all(x)["heads"]
        m.temperature = 2.0
        pred = m.predict([model], x)
    sp = tuple(x.shape[2:])
    assert pred.probs.shape == (2, 2, 3, *sp)  # M = H − skip = 2 heads, (M, B, K, *spatial)
    torch.testing.assert_close(pred.probs, torch.softmax(torch.stack(heads[1:]) / 2.0, 2))
    var = pred.extras["rater_variance"]
    assert var.shape == (2, 1, *sp) and (var >= 0).all() and (var <= 2 / 3).all()
    # the predicted variance is the sample variance measure; MI and entropy work on the M heads
    torch.testing.assert_close(MEASURES.get("predicted_variance")(pred), MEASURES.get("variance")(pred))
    for name in ("entropy", "mi", "epkl"):
        assert MEASURES.get(name)(pred).shape == (2, *sp)
    m0 = build_method("edue-heads", NET, dims, 1, 3, {"skip": 0})
    with torch.no_grad():
        assert m0.predict([model], x).num_samples == 3


def test_3d_training_step_runs():
    m = build_method("edue-heads", NET, 3, 1, 2)
    model = m.build_model()
    loss, logs = m.loss(model, _batch(3), TrainContext(generator=torch.Generator().manual_seed(0)))
    loss.backward()
    assert torch.isfinite(loss) and logs["var_mse"] > 0
    assert all(p.grad is not None for p in model.deep_heads.parameters())
