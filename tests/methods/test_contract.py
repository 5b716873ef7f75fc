"""The method contract, checked for every registered method in 2D and 3D.

Each case builds the method with a tiny U-Net, trains every member for a few Adam steps through
``method.loss``, saves and reloads the weights (``weights_only=True``), predicts, and checks shapes,
normalisation and determinism under a seed. Methods registered by any module of ``trustseg.methods`` are
picked up at collection time.
"""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch

import trustseg.methods
from trustseg.core.errors import DataError
from trustseg.core.predictive import Predictive
from trustseg.methods import METHODS, Batch, TrainContext, build_method
from trustseg.models.config import NetConfig

NAMES = METHODS.names()
NET = NetConfig(params={"channels": (4, 8)})
K, R, C, B = 3, 3, 1, 2
SHAPES = {2: (16, 16), 3: (8, 8, 8)}
#: Smaller-than-default settings that keep each case fast (the defaults are exercised in the per-method tests).
FAST = {"ensemble": {"members": 2}, "mc-dropout": {"samples": 3}}
STEPS = 3


def _batch(dims: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    shape = SHAPES[dims]
    image = torch.randn(B, C, *shape, generator=g)
    labels = torch.randint(0, K, (B, R, *shape), generator=g)
    return Batch(image, labels, K)


def _train(method, member: int, batch: Batch):
    model = method.build_model(member)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(member)
    for step in range(STEPS):
        ctx = TrainContext(epoch=step, max_epochs=STEPS, step=step, generator=gen)
        loss, logs = method.loss(model, batch, ctx)
        assert loss.dim() == 0 and torch.isfinite(loss), f"loss {loss}"
        assert all(isinstance(v, float) for v in logs.values())
        opt.zero_grad()
        loss.backward()
        if step == 0:
            params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            no_grad = [n for n, p in params if p.grad is None]
            assert not no_grad, f"no gradient reaches {no_grad}"
            assert all(torch.isfinite(p.grad).all() for _, p in params)
            assert sum(float(p.grad.abs().sum()) for _, p in params) > 0
        opt.step()
    return model.eval()


def _roundtrip(method, member: int, model):
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = method.build_model(member)
    fresh.load_state_dict(state)
    return fresh.eval()


def _predict(method, models, x, seed=123) -> Predictive:
    torch.manual_seed(seed)  # stochastic methods (MC dropout) draw from the global RNG
    with torch.no_grad():
        return method.predict(models, x)


def test_every_expected_method_is_registered():
    assert {"softmax", "mc-dropout", "ensemble", "tta", "layer-ensemble"} <= set(NAMES)
    assert trustseg.methods.METHODS is METHODS


@pytest.mark.parametrize("name", NAMES)
def test_registration_and_params(name):
    entry = METHODS.entry(name)
    assert entry.doc, f"{name} has no one-line doc"
    cls = entry.obj
    assert cls.name == name
    assert dataclasses.is_dataclass(cls.Params) and cls.Params.__dataclass_params__.frozen
    method = build_method(name, NET, 2, C, K)
    again = build_method(name, NET, 2, C, K, method.params_dict())  # saved params load back
    assert again.params == method.params
    assert method.target in ("soft", "random_rater", "all_raters", "majority")
    method.check_raters(R)
    if method.needs_raters:
        with pytest.raises(DataError):
            method.check_raters(1)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("name", NAMES)
def test_train_save_load_predict(name, dims):
    method = build_method(name, NET, dims, C, K, FAST.get(name))
    batch = _batch(dims)
    trained = [_train(method, i, batch) for i in range(method.num_members)]
    loaded = [_roundtrip(method, i, m) for i, m in enumerate(trained)]

    x = _batch(dims, seed=1).image
    pred = _predict(method, loaded, x)
    assert isinstance(pred, Predictive)
    m = pred.num_samples
    assert m >= 1
    assert pred.probs.shape == (m, B, K, *SHAPES[dims])
    assert torch.isfinite(pred.probs).all() and (pred.probs >= 0).all()
    assert torch.allclose(pred.probs.sum(2), torch.ones(m, B, *SHAPES[dims]), atol=1e-5)
    if pred.alpha is not None:
        assert pred.alpha.shape == (B, K, *SHAPES[dims]) and (pred.alpha > 0).all()
    for key, extra in pred.extras.items():
        assert extra.shape[0] == B and extra.shape[2:] == SHAPES[dims], key
        assert torch.isfinite(extra).all(), key

    # the reloaded weights predict exactly what the trained ones do, and a seed fixes the prediction
    same = _predict(method, trained, x)
    assert torch.allclose(same.probs, pred.probs, atol=1e-6)
    again = _predict(method, loaded, x)
    assert torch.equal(again.probs, pred.probs)
    assert (again.alpha is None) == (pred.alpha is None)
    if pred.alpha is not None:
        assert torch.equal(again.alpha, pred.alpha)
    assert all(torch.equal(again.extras[k], v) for k, v in pred.extras.items())
