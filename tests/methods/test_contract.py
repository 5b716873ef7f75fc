"""The method contract, checked for every registered method in 2D and 3D.

Each case builds the method with a tiny U-Net, trains every member for a few Adam steps through
``method.loss``, saves and reloads the weights (``weights_only=True``), predicts, and checks shapes,
normalisation and determinism under a seed. The declared capabilities are checked too: the primary measure is a
registered measure the prediction supports, ``samples_are_heads`` matches the samples, the default optimiser is
AdamW with cosine decay, ``upgrade_params`` is idempotent, the needed network capabilities are enforced, and
``target`` has one home. Methods registered by any module of ``trustseg.methods`` are picked up at collection time.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from types import MappingProxyType

import pytest
import torch

import trustseg.methods
from trustseg.core.errors import ConfigError, DataError
from trustseg.core.predictive import Predictive
from trustseg.measures import MEASURES
from trustseg.methods import METHODS, Batch, Method, TrainContext, build_method
from trustseg.models import CAPABILITIES, MODELS
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

    # the primary measure is one the prediction supports
    umap = MEASURES.get(method.primary_measure)(pred)
    assert umap.shape == (B, *SHAPES[dims]) and torch.isfinite(umap).all()
    # samples that are heads are the finest M heads, coarse -> fine
    if method.samples_are_heads:
        with torch.no_grad():
            heads = loaded[0](x, all_outputs=True)["heads"]
        assert 1 <= m <= len(heads)
        expected = torch.stack([torch.softmax(h / method.temperature, 1) for h in heads[len(heads) - m :]])
        assert torch.allclose(pred.probs, expected, atol=1e-6)
    # the post-training step returns entries for run.json
    extra = method.after_training(loaded, [batch])
    assert isinstance(extra, dict)
    json.dumps(extra)


@pytest.mark.parametrize("name", NAMES)
def test_declared_capabilities(name):
    cls = METHODS.get(name)
    assert isinstance(cls.primary_measure, str) and cls.primary_measure in MEASURES
    assert isinstance(cls.samples_are_heads, bool)
    assert cls.required_capabilities <= CAPABILITIES
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    assert set(cls.param_aliases.values()) <= fields and not set(cls.param_aliases) & fields
    method = build_method(name, NET, 2, C, K, FAST.get(name))
    assert "target" not in vars(method) and "num_members" not in vars(method)  # one home each: a property
    assert method.num_members >= 1 and isinstance(method.needs_raters, bool)
    sentinel = object()
    if type(method).augmentation is Method.augmentation:
        assert method.augmentation(sentinel) is sentinel
    scorer = method.for_validation()  # trains the same network: the validation method builds the same model
    assert isinstance(scorer, Method) and scorer.for_validation() is scorer
    assert type(scorer.build_model(0)) is type(method.build_model(0))


@pytest.mark.parametrize("name", [n for n in NAMES if METHODS.get(n).required_capabilities])
def test_a_network_without_the_needed_capabilities_is_refused(name, monkeypatch):
    entry = MODELS.entry("unet")
    meta = MappingProxyType({**entry.meta, "capabilities": frozenset()})
    monkeypatch.setitem(MODELS._entries, "unet", dataclasses.replace(entry, meta=meta))
    with pytest.raises(ConfigError, match=f"^method {name} needs a network with .+; unet offers no optional"):
        build_method(name, NET, 2, C, K, FAST.get(name))


@pytest.mark.parametrize("name", NAMES)
def test_default_optimizer_is_adamw_with_cosine_decay(name):
    method = build_method(name, NET, 2, C, K, FAST.get(name))
    model = method.build_model(0)
    ref_model = method.build_model(0)
    ref_model.load_state_dict(model.state_dict())
    model.eval(), ref_model.eval()  # no dropout noise: both runs see the same gradients
    total, lr, wd = 5, 2e-3, 1e-4
    opt, sched = method.configure_optimizer(model, lr, wd, total)
    assert isinstance(opt, torch.optim.Optimizer) and isinstance(sched, torch.optim.lr_scheduler.LRScheduler)
    if type(method).configure_optimizer is not Method.configure_optimizer:
        return  # a method's own optimiser: only the types are part of the contract
    # today's: AdamW with the run's lr and weight decay, lr factor 0.5 (1 + cos(π min(s, S) / S)) per step s
    ref = torch.optim.AdamW(ref_model.parameters(), lr=lr, weight_decay=wd)
    ref_sched = torch.optim.lr_scheduler.LambdaLR(
        ref, lambda s: 0.5 * (1.0 + math.cos(math.pi * min(s, total) / max(1, total)))
    )
    assert type(opt) is torch.optim.AdamW and opt.defaults == ref.defaults
    batch = _batch(2)
    for step in range(total + 2):
        for o, mdl in ((opt, model), (ref, ref_model)):
            o.zero_grad()
            mdl(batch.image).square().mean().backward()
            o.step()
        sched.step()
        ref_sched.step()
        assert opt.param_groups[0]["lr"] == ref.param_groups[0]["lr"], step
    assert opt.param_groups[0]["lr"] == 0.0
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref_model.state_dict().values()))


@pytest.mark.parametrize("name", NAMES)
def test_upgrade_params_is_idempotent(name):
    cls = METHODS.get(name)
    method = build_method(name, NET, 2, C, K, FAST.get(name))
    for saved in (method.params_dict(), {}):
        up = cls.upgrade_params(saved)
        assert cls.upgrade_params(up) == up
        build_method(name, NET, 2, C, K, up)  # upgraded parameters build
    # today's saved parameters mean the same after the upgrade
    assert build_method(name, NET, 2, C, K, cls.upgrade_params(method.params_dict())).params == method.params
