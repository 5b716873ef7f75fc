"""Evidential calibration (issue 13): temperature scaling of ln α, the tempered mean, the ``exp`` evidence.

The defect: the Dirichlet mean α / S of an EDL model trained with softplus evidence is under-confident, and post-hoc
temperature scaling refused evidential outputs. Known answer: a model whose every pixel has α = (3, 1, 1)
(mean 0.6) against raters who say class 0 in 90 % of the votes and class 1 in 10 % is fitted by
T = ln 3 / ln 18 (then α₀^(1/T) / Σ α^(1/T) = 18 / 20 = 0.9) and its top-label ECE falls from 0.3 to 0.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from trustseg.core.errors import ConfigError
from trustseg.methods import Batch, TrainContext, build_method, fit_method_temperature
from trustseg.methods.edl_losses import dirichlet_mean, edl_loss, evidence_to_alpha, tempered_mean
from trustseg.metrics.calibration import ece_toplabel
from trustseg.models.config import NetConfig

NET = NetConfig(params={"channels": (4, 8)})


class ConstantEvidence(nn.Module):
    """Outputs the same logits z ``(K,)`` at every pixel of a ``(B, C, H, W)`` input."""

    def __init__(self, z: Tensor):
        super().__init__()
        self.z = nn.Parameter(z.clone(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        return self.z.view(1, -1, 1, 1).expand(b, -1, h, w)


def _known_case() -> tuple[nn.Module, Batch]:
    z = torch.tensor([math.log(math.expm1(2.0)), -30.0, -30.0])  # softplus: evidence (2, ~0, ~0) -> α = (3, 1, 1)
    labels = torch.zeros(2, 10, 4, 4, dtype=torch.long)
    labels[:, 9] = 1  # 9 of 10 raters say 0, one says 1: ȳ = (0.9, 0.1, 0)
    return ConstantEvidence(z).eval(), Batch(image=torch.zeros(2, 1, 4, 4), labels=labels, num_classes=3)


def test_tempered_mean_known_values():
    a = torch.tensor([[[3.0, 2.0], [1.0, 2.0]]])  # (B = 1, K = 2, 2 pixels)
    assert torch.equal(tempered_mean(a, 1.0), dirichlet_mean(a))  # T = 1: α / S, bit for bit
    torch.testing.assert_close(tempered_mean(a, 0.5), torch.tensor([[[0.9, 0.5], [0.1, 0.5]]]))
    torch.testing.assert_close(tempered_mean(a, 1e6), torch.full((1, 2, 2), 0.5), atol=1e-5, rtol=0)


def test_temperature_fit_of_ln_alpha_known_answer():
    m = build_method("evidential", NET, 2, 1, 3)
    model, batch = _known_case()
    target = batch.soft()
    with torch.no_grad():
        before = m.predict([model], batch.image)
    torch.testing.assert_close(before.probs[0, :, 0], torch.full((2, 4, 4), 0.6))
    assert ece_toplabel(before.probs[0], target, batched=True) == pytest.approx(0.3, abs=1e-6)

    t = fit_method_temperature(m, [model], [batch])
    assert t == pytest.approx(math.log(3) / math.log(18), rel=1e-4)
    assert m.temperature == t
    with torch.no_grad():
        after = m.predict([model], batch.image)
    torch.testing.assert_close(after.probs[0, :, 0], torch.full((2, 4, 4), 0.9))
    assert ece_toplabel(after.probs[0], target, batched=True) == pytest.approx(0.0, abs=1e-5)
    # α is not tempered: the vacuity K / S and the Dirichlet measures read the same α before and after
    torch.testing.assert_close(after.alpha, before.alpha, rtol=0, atol=0)


def test_old_setting_refuses_the_fit():
    m = build_method("evidential", NET, 2, 1, 3, {"temperature_scaling": "none"})
    model, batch = _known_case()
    with pytest.raises(ConfigError, match="temperature_scaling: none"):
        fit_method_temperature(m, [model], [batch])
    assert m.temperature == 1.0


def test_sample_logits_are_ln_alpha():
    m = build_method("evidential", NET, 2, 1, 3)
    model = m.build_model().eval()
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = m.sample_logits([model], x)
        pred = m.predict([model], x)
    assert z.shape == (1, 2, 3, 16, 16)
    torch.testing.assert_close(torch.softmax(z, 2), pred.probs)
    torch.testing.assert_close(z[0].exp(), pred.alpha)


def test_exp_activation_values_and_no_overflow():
    z = torch.tensor([-100.0, 0.0, math.log(4.0), 1e4])
    a = evidence_to_alpha(z, "exp")
    torch.testing.assert_close(a, torch.tensor([1.0 + math.exp(-10.0), 2.0, 5.0, 1.0 + math.exp(10.0)]))
    assert torch.isfinite(a).all()
    with pytest.raises(ValueError, match="softplus"):
        evidence_to_alpha(z, "relu")  # type: ignore[arg-type]


def test_exp_activation_in_loss_and_method():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=g, requires_grad=True)
    y = torch.nn.functional.one_hot(torch.randint(0, 3, (2, 8, 8), generator=g), 3).movedim(-1, 1).float()
    loss_exp, _ = edl_loss(logits, y, epoch=5, activation="exp")
    loss_sp, _ = edl_loss(logits, y, epoch=5)
    assert torch.isfinite(loss_exp) and not torch.isclose(loss_exp, loss_sp)
    loss_exp.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()

    m = build_method("evidential", NET, 2, 1, 3, {"activation": "exp"})
    model = m.build_model()
    labels = torch.randint(0, 3, (2, 2, 16, 16), generator=g)
    batch = Batch(image=torch.randn(2, 1, 16, 16, generator=g), labels=labels, num_classes=3)
    loss, logs = m.loss(model, batch, TrainContext(epoch=0, max_epochs=2, generator=g))
    assert torch.isfinite(loss)
    with torch.no_grad():
        out = model.eval()(batch.image)
        torch.testing.assert_close(m.predict([model], batch.image).alpha, torch.exp(out.clamp(-10, 10)) + 1)
    with pytest.raises(ConfigError):
        build_method("evidential", NET, 2, 1, 3, {"activation": "relu"})
    with pytest.raises(ConfigError):
        build_method("evidential", NET, 2, 1, 3, {"temperature_scaling": "yes"})
