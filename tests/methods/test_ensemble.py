"""Deep ensemble: member seeds, differing members, prediction over members."""

from __future__ import annotations

import pytest
import torch

from trustseg.core.errors import ConfigError
from trustseg.methods import build_method
from trustseg.methods.ensemble import member_seed
from trustseg.models.config import NetConfig

NET = NetConfig(params={"channels": (4, 8)})


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_members_differ_and_are_reproducible():
    m = build_method("ensemble", NET, 2, 1, 3, {"members": 3})
    assert m.num_members == 3
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = [_flat(m.build_model(i)) for i in range(3)]
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    torch.manual_seed(0)
    again = [_flat(m.build_model(i)) for i in range(3)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))


def test_member_seed_formula():
    assert member_seed(0, 7) == 7
    assert member_seed(2, 7) == 7 + 2 * 1_000_003


def test_predict_stacks_members():
    m = build_method("ensemble", NET, 2, 1, 3, {"members": 2})
    models = [m.build_model(i).eval() for i in range(2)]
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        pred = m.predict(models, x)
        assert pred.probs.shape == (2, 2, 3, 16, 16)
        for i, model in enumerate(models):
            assert torch.allclose(pred.probs[i], torch.softmax(model(x), 1))
    assert not torch.allclose(pred.probs[0], pred.probs[1])


def test_bad_members():
    with pytest.raises(ConfigError):
        build_method("ensemble", NET, 2, 1, 3, {"members": 0})
    m = build_method("ensemble", NET, 2, 1, 3, {"members": 2})
    with pytest.raises(ConfigError):
        m.build_model(2)
    with pytest.raises(ConfigError):
        m.predict([], torch.randn(1, 1, 16, 16))
