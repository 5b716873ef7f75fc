"""MC dropout: stochastic samples, norm layers in eval mode, prefix-once equivalence, placement, mode restoration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustseg.core.errors import ConfigError
from trustseg.methods import build_method
from trustseg.methods.mc_dropout import dropout_modules
from trustseg.models.config import NetConfig

BN_NET = NetConfig(params={"channels": (4, 8), "norm": "batch"})


def _method(net=BN_NET, **params):
    return build_method("mc-dropout", net, 2, 1, 3, params)


def _holders(model) -> list[str]:
    return [n for n, mod in model.named_modules() if isinstance(mod, nn.Dropout)]


def test_where_sets_the_placement_and_none_keeps_the_net_setting():
    net = NetConfig(params={"channels": (4, 8, 16), "dropout_where": "decoder"})
    assert _holders(_method(net).build_model()) == ["decoder.1.6"]  # default where="last"
    assert _holders(_method(net, where=None).build_model()) == ["bottleneck.6", "decoder.0.6", "decoder.1.6"]
    last = NetConfig(params={"channels": (4, 8, 16), "dropout_where": "last"})
    assert _holders(_method(last, where=None).build_model()) == ["decoder.1.6"]
    assert _holders(_method(last, where="bottleneck").build_model()) == ["bottleneck.6"]
    assert _method(net, where=None).where == "decoder"
    with pytest.raises(ConfigError, match="did you mean 'last'"):
        _method(where="lst")


def test_build_model_forces_dropout():
    m = _method(p=0.3)
    model = m.build_model()
    assert {d.p for d in dropout_modules(model)} == {0.3}
    explicit = _method(NetConfig(params={"channels": (4, 8), "dropout": 0.1}), p=0.3).build_model()
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


@pytest.mark.parametrize("where", ["decoder", "last"])
def test_prefix_once_equals_full_passes_under_the_same_seed(where):
    # the prefix is computed once and the suffix sampled: identical to full passes under the same seed, so the
    # samples have the distribution of M full passes
    x = torch.randn(2, 1, 16, 16)
    once = _method(
        NetConfig(params={"channels": (4, 8, 16), "norm": "batch"}), samples=5, prefix_once=True, where=where
    )
    full = _method(
        NetConfig(params={"channels": (4, 8, 16), "norm": "batch"}), samples=5, prefix_once=False, where=where
    )
    model = once.build_model().eval()
    calls = []
    handle = model.encoder[0].register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        torch.manual_seed(11)
        a = once.predict([model], x).probs
        torch.manual_seed(11)
        n_once = len(calls)
        b = full.predict([model], x).probs
    handle.remove()
    assert n_once == 1 and len(calls) == 1 + 5  # the encoder ran once for all samples, then once per full pass
    assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(a[0], a[1])


def test_prefix_once_equals_full_passes_when_the_encoder_has_dropout():
    net = NetConfig(params={"channels": (4, 8), "dropout_where": "all"})
    once, full = _method(net, samples=3, prefix_once=True, where=None), _method(net, samples=3, prefix_once=False)
    model = once.build_model().eval()
    assert not model.encoder_deterministic and model.split_position == (0, 6)
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
    plain = build_method("softmax", NetConfig(params={"channels": (4, 8)}), 2, 1, 3).build_model()
    with pytest.raises(ConfigError, match="dropout"):
        m.predict([plain], torch.randn(1, 1, 16, 16))


def test_chunked_samples_keep_the_batch_order():
    # with every dropout probability set to 0, each chunked sample must equal the plain prediction per image
    x = torch.randn(3, 1, 16, 16)
    for prefix_once, where in [(True, "last"), (True, "decoder"), (False, "last")]:
        m = _method(samples=5, chunk=2, prefix_once=prefix_once, where=where)
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


def test_encoder_once_is_an_accepted_alias_of_prefix_once():
    old = _method(encoder_once=False, samples=2)
    assert old.params.prefix_once is False and "encoder_once" not in old.params_dict()
    assert _method(encoder_once=True, prefix_once=True).params.prefix_once
    with pytest.raises(ConfigError, match="'encoder_once' is the old name of 'prefix_once'"):
        _method(encoder_once=True, prefix_once=False)


def test_upgrade_params_of_runs_saved_by_older_versions():
    cls = type(_method())
    # saved before `where` existed (dropout where net.dropout_where put it) and with the old name of prefix_once
    old = {"p": 0.2, "samples": 10, "encoder_once": True, "chunk": 1, "target": "soft"}
    up = cls.upgrade_params(old)
    assert up == {"p": 0.2, "samples": 10, "prefix_once": True, "chunk": 1, "target": "soft", "where": None}
    assert cls.upgrade_params(up) == up and old["encoder_once"] is True  # idempotent, input untouched
    net = NetConfig(params={"channels": (4, 8, 16)})  # dropout_where defaults to decoder
    assert _holders(_method(net, **up).build_model()) == ["bottleneck.6", "decoder.0.6", "decoder.1.6"]
    today = _method().params_dict()
    assert cls.upgrade_params(today) == today  # saved today: nothing to change


@pytest.mark.parametrize(
    "params,message",
    [
        ({"p": 1.0}, r"^method.mc-dropout.p must be in \(0, 1\), got 1.0$"),
        ({"samples": 0}, r"^method.mc-dropout.samples must be >= 1, got 0$"),
        ({"chunk": -1}, r"^method.mc-dropout.chunk must be >= 1, got -1$"),
    ],
)
def test_parameter_messages(params, message):
    with pytest.raises(ConfigError, match=message):
        _method(**params)
