"""Temperature scaling: recovering a known temperature, soft labels, sample-based methods, method fitting."""

from __future__ import annotations

import pytest
import torch

from trustseg.core.errors import ConfigError
from trustseg.methods import Batch, build_method
from trustseg.methods.temperature import apply_temperature, fit_method_temperature, fit_temperature, temperature_nll
from trustseg.models.config import NetConfig


def _calibrated(n=4000, k=3, seed=0):
    """Logits of a calibrated toy model and labels drawn from its own probabilities."""
    g = torch.Generator().manual_seed(seed)
    z = 2 * torch.randn(n, k, generator=g)
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    return z, y


def test_recovers_a_known_temperature_and_lowers_the_nll():
    z, y = _calibrated()
    t = fit_temperature(3 * z, y)
    assert t == pytest.approx(3.0, rel=0.1)
    oh = torch.nn.functional.one_hot(y, 3).double()
    assert temperature_nll(3 * z, oh, t) < temperature_nll(3 * z, oh, 1.0)
    assert fit_temperature(z / 2, y) == pytest.approx(0.5, rel=0.1)  # under-confident -> T < 1


def test_spatial_logits_and_soft_labels():
    z, _ = _calibrated(n=1600)
    z = z.reshape(4, 20, 20, 3).movedim(-1, 1)  # (N, K, H, W)
    soft = torch.softmax(z, 1)  # the exact class distribution: T = 3 is the unique optimum for 3z
    assert fit_temperature(3 * z, soft) == pytest.approx(3.0, rel=1e-3)
    with pytest.raises(ValueError):
        fit_temperature(z, soft[:, :2])


def test_sample_axis_uses_the_predictive_mean():
    z, y = _calibrated()
    stacked = torch.stack([3 * z, 3 * z])  # identical samples: same answer as without the sample axis
    assert fit_temperature(stacked, y, samples=True) == pytest.approx(fit_temperature(3 * z, y), rel=1e-4)


def test_apply_temperature():
    z = torch.randn(2, 3)
    assert torch.allclose(apply_temperature(z, 2.0), z / 2)
    with pytest.raises(ValueError):
        apply_temperature(z, 0.0)


def test_fit_method_temperature_sets_and_uses_t():
    net = NetConfig(params={"channels": (4, 8)})
    m = build_method("softmax", net, 2, 1, 2)
    model = m.build_model().eval()
    x = torch.randn(3, 1, 16, 16)
    labels = (x > 0).long().expand(3, 2, 16, 16)
    t = fit_method_temperature(m, [model], [Batch(x, labels, 2)])
    assert m.temperature == t > 0
    with torch.no_grad():
        assert torch.allclose(m.predict([model], x).probs[0], torch.softmax(model(x) / t, 1), atol=1e-6)


@pytest.mark.parametrize("name", ["mc-dropout", "layer-ensemble", "tta"])
def test_fit_method_temperature_on_sample_methods(name):
    m = build_method(
        name, NetConfig(params={"channels": (4, 8)}), 2, 1, 2, {"samples": 2} if name == "mc-dropout" else None
    )
    model = m.build_model().eval()
    x = torch.randn(2, 1, 8, 8)
    t = fit_method_temperature(m, [model], [Batch(x, torch.randint(0, 2, (2, 2, 8, 8)), 2)], max_iter=20)
    assert t > 0 and m.temperature == t


def test_methods_without_logits_are_refused():
    class NoLogits:
        name = "x"

    with pytest.raises(ConfigError, match="no logits"):
        fit_method_temperature(NoLogits(), [], [])
