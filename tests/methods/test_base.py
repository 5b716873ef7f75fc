"""The method base: one message style for bad parameters, the cosine schedule, aliases, ``target``'s one home,
and abstract ``sample_logits``."""

from __future__ import annotations

import math

import pytest

from trustseg.core.errors import ConfigError
from trustseg.methods import METHODS, LogitMethod, Method, build_method, cosine_decay, param_error
from trustseg.models.config import NetConfig

NET = NetConfig(params={"channels": (4, 8, 16)})


@pytest.mark.parametrize(
    "name,params,message",
    [
        ("edue", {"var_weight": -1}, "method.edue.var_weight must be >= 0, got -1.0"),
        ("evidential", {"w_kl": -2}, "method.evidential.w_kl must be >= 0, got -2.0"),
        ("evidential", {"kl_anneal_epochs": -1}, "method.evidential.kl_anneal_epochs must be >= 0, got -1"),
        ("sure", {"w_kl": -2}, "method.sure.w_kl must be >= 0, got -2.0"),
        ("sure", {"warmup_frac": 1.5}, r"method.sure.warmup_frac must be in \[0, 1\], got 1.5"),
        ("sure", {"patch_size": 0}, "method.sure.patch_size must be >= 1, got 0"),
        ("ensemble", {"members": 0}, "method.ensemble.members must be >= 1, got 0"),
        ("layer-ensemble", {"skip": -1}, "method.layer-ensemble.skip must be >= 0, got -1"),
        ("layer-ensemble", {"skip": 3}, r"method.layer-ensemble.skip must be in 0..2 \(the network has 3 heads\)"),
        ("tta", {"base": "tta"}, "method.tta.base must name another method than 'tta' itself, got 'tta'"),
        ("mc-dropout", {"p": 0}, r"method.mc-dropout.p must be in \(0, 1\), got 0.0"),
    ],
)
def test_bad_parameters_have_one_message_style(name, params, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        build_method(name, NET, 2, 1, 3, params)


def test_param_error():
    e = param_error("m", "x", "be > 0", -1)
    assert isinstance(e, ConfigError) and str(e) == "method.m.x must be > 0, got -1"


@pytest.mark.parametrize("total", [1, 7])
def test_cosine_decay(total):
    f = cosine_decay(total)
    assert f(0) == 1.0 and f(total) == f(total + 3) == pytest.approx(0.0, abs=1e-12)
    for s in range(total + 1):
        assert f(s) == pytest.approx(0.5 * (1 + math.cos(math.pi * s / total)), abs=1e-15)
    assert cosine_decay(0)(5) == 1.0  # no steps: the learning rate stays at its peak, as before


def test_target_is_the_parameter_or_the_fixed_target():
    assert build_method("softmax", NET, 2, 1, 3, {"target": "majority"}).target == "majority"
    assert build_method("evidential", NET, 2, 1, 3).target == "soft"
    edue = build_method("edue", NET, 2, 1, 3)
    assert edue.target == "all_raters" == type(edue).fixed_target and not hasattr(edue.params, "target")
    with pytest.raises(AttributeError):
        edue.target = "soft"  # read-only: there is no second home


def test_sample_logits_is_abstract():
    class NoLogits(LogitMethod):
        name = "no-logits"

    with pytest.raises(TypeError, match="sample_logits"):
        NoLogits(NET, 2, 1, 3)
    assert "sample_logits" in LogitMethod.__abstractmethods__


def test_defaults_of_the_declarations():
    assert (Method.primary_measure, Method.samples_are_heads, Method.needs_raters) == ("entropy", False, False)
    assert Method.required_capabilities == frozenset() and dict(Method.param_aliases) == {}
    declared = {n: METHODS.get(n).primary_measure for n in ("edue", "evidential", "sure", "softmax")}
    assert declared == {"edue": "predicted_variance", "evidential": "vacuity", "sure": "vacuity", "softmax": "entropy"}
    assert [n for n in METHODS.names() if METHODS.get(n).samples_are_heads] == ["edue-heads", "layer-ensemble"]
