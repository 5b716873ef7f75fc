"""MC dropout: stochastic samples, norm layers in eval mode, encoder-once equivalence, mode restoration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustseg.core.errors import ConfigError
from trustseg.methods import build_method
from trustseg.methods.mc_dropout import dropout_modules
from trustseg.models.config import NetConfig

BN_NET = NetConfig(channels=(4, 8), norm="batch")


def _method(net=BN_NET, **params):
    return build_method("mc-dropout", net, 2, 1, 3, params)


def test_build_model_forces_dropout():
    m = _method(p=0.3)
    model = m.build_model()
    assert {d.p for d in dropout_modules(model)} == {0.3}
    explicit = _method(NetConfig(channels=(4, 8), dropout=0.1), p=0.3).build_model()
    assert {d.p for d in dropout_modules(explicit)} == {0.1}


def test_samples_differ_and_norms_stay_in_eval():
    m = _method(samples=4)
    model = m.build_model()
    # give batch norm non-trivial running statistics so that train-mode BN would change the outputs
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.fill_(0.3)
            mod.running_var.fill_(2.0)
    model.eval()
    x = torch.randn(2, 1, 16, 16)
    seen = {}

    def hook(mod, inp, out):
        seen[mod] = mod.training

    handles = [mod.register_forward_hook(hook) for mod in model.modules() if len(list(mod.children())) == 0]
    with torch.no_grad():
        pred = m.predict([model], x)
    for h in handles:
        h.remove()
    assert pred.probs.shape == (4, 2, 3, 16, 16)
    assert not torch.allclose(pred.probs[0], pred.probs[1])
    assert torch.allclose(pred.probs.sum(2), torch.ones(4, 2, 16, 16), atol=1e-5)
    assert all(not t for mod, t in seen.items() if isinstance(mod, nn.BatchNorm2d))
    assert all(t for mod, t in seen.items() if isinstance(mod, nn.Dropout))
    assert not any(mod.training for mod in model.modules())  # modes restored


def test_train_mode_is_restored_too():
    m = _method(samples=2)
    model = m.build_model().train()
    with torch.no_grad():
        m.predict([model], torch.randn(1, 1, 16, 16))
    assert all(mod.training for mod in model.modules())


def test_encoder_once_equals_full_passes_under_the_same_seed():
    x = torch.randn(2, 1, 16, 16)
    once = _method(samples=5, encoder_once=True)
    full = _method(samples=5, encoder_once=False)
    model = once.build_model().eval()
    with torch.no_grad():
        torch.manual_seed(11)
        a = once.predict([model], x).probs
        torch.manual_seed(11)
        b = full.predict([model], x).probs
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a[0], a[1])


def test_encoder_once_falls_back_to_full_passes_when_the_encoder_has_dropout():
    net = NetConfig(channels=(4, 8), dropout_where="all")
    once, full = _method(net, samples=3, encoder_once=True), _method(net, samples=3, encoder_once=False)
    model = once.build_model().eval()
    assert not model.encoder_deterministic
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        torch.manual_seed(2)
        a = once.predict([model], x).probs
        torch.manual_seed(2)
        b = full.predict([model], x).probs
    assert torch.equal(a, b)


def test_bad_params_and_missing_dropout():
    with pytest.raises(ConfigError):
        _method(p=0.0)
    with pytest.raises(ConfigError):
        _method(samples=0)
    with pytest.raises(ConfigError):
        _method(chunk=0)
    m = _method()
    plain = build_method("softmax", NetConfig(channels=(4, 8)), 2, 1, 3).build_model()
    with pytest.raises(ConfigError, match="dropout"):
        m.predict([plain], torch.randn(1, 1, 16, 16))


def test_chunked_samples_keep_the_batch_order():
    # with every dropout probability set to 0, each chunked sample must equal the plain prediction per image
    x = torch.randn(3, 1, 16, 16)
    for encoder_once in (True, False):
        m = _method(samples=5, chunk=2, encoder_once=encoder_once)
        model = m.build_model().eval()
        with torch.no_grad():
            ref = torch.softmax(model(x), 1)
            for d in dropout_modules(model):
                d.p = 0.0
            probs = m.predict([model], x).probs
        assert probs.shape == (5, 3, 3, 16, 16)
        assert torch.allclose(probs, ref[None].expand_as(probs), atol=1e-6)


def test_chunked_samples_are_stochastic_and_seeded():
    m = _method(samples=4, chunk=4)
    model = m.build_model().eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        torch.manual_seed(3)
        a = m.predict([model], x).probs
        torch.manual_seed(3)
        b = m.predict([model], x).probs
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1]) and not torch.allclose(a[2], a[3])
