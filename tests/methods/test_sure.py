"""The ``sure`` method: warm-up and ramp, supervision terms, gradients into the network, 2D and 3D training."""

from __future__ import annotations

import pytest
import torch

from trustseg.core.errors import ConfigError
from trustseg.methods import METHODS, Batch, TrainContext, build_method
from trustseg.methods.edl_losses import evidence_to_alpha
from trustseg.models.config import NetConfig

NET = NetConfig(params={"channels": (4, 8)})


def _batch(dims: int, b: int = 2, k: int = 2, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    sp = (16, 16) if dims == 2 else (8, 8, 8)
    lab = torch.zeros(b, *sp, dtype=torch.long)
    lab[(slice(None),) + tuple(slice(s // 4, 3 * s // 4 + 1) for s in sp)] = 1
    image = lab[:, None].float() + 0.2 * torch.randn(b, 1, *sp, generator=g)
    return Batch(image=image, labels=lab[:, None].repeat(1, 2, *([1] * dims)), num_classes=k)


def _ctx(epoch: int, max_epochs: int = 10) -> TrainContext:
    return TrainContext(epoch=epoch, max_epochs=max_epochs, generator=torch.Generator().manual_seed(epoch))


def test_registered_and_params():
    assert "sure" in METHODS
    m = build_method("sure", NET, 2, 1, 2)
    p = m.params
    assert (p.beta, p.gamma, p.c_mu, p.c_d, p.c_far) == (1.0, 1.0, 1.0, 1.0, 100.0)
    assert (p.patch_size, p.patches_per_class, p.noise_sigma, p.warmup_frac) == (5, 3, 0.3, 0.3)
    assert p.loss_variant == "digamma" and p.w_dice == 10.0  # the EDL parameters are inherited
    with pytest.raises(ConfigError, match="did you mean"):
        build_method("sure", NET, 2, 1, 2, {"c_farr": 1})
    with pytest.raises(ConfigError):
        build_method("sure", NET, 2, 1, 2, {"warmup_frac": 1.5})


def test_warmup_then_ramp_in_the_loss():
    m = build_method("sure", NET, 2, 1, 2, {"patch_size": 3})
    model = m.build_model()
    batch = _batch(2)
    _, logs = m.loss(model, batch, _ctx(2))  # epoch 2 < round(0.3 * 10): plain EDL
    assert logs["sure_weight"] == 0.0 and "sure_gu" not in logs
    _, logs = m.loss(model, batch, _ctx(3))
    assert logs["sure_weight"] == pytest.approx(0.01)
    assert {"sure_gu", "sure_mu", "sure_d", "sure_far", "sure_nu", "sure_patches"} <= set(logs)
    assert logs["sure_patches"] == 6.0  # 3 patches of 3x3 x 2 classes per 16x16 image
    loss, logs = m.loss(model, batch, _ctx(9))
    assert logs["sure_weight"] == pytest.approx(1.0)
    edl = logs["edl_ace"] * 10 + logs["edl_kl"] * logs["kl_weight"] + logs["edl_dice"] * 10
    assert float(loss.detach()) == pytest.approx(edl + logs["sure_gu"] + logs["sure_nu"], rel=1e-5)


@pytest.mark.parametrize("term", ["gu", "mu_d", "far"])
def test_gradients_reach_the_network_through_each_term(term):
    weights = {
        "gu": {"gamma": 0.0},
        "mu_d": {"beta": 0.0, "c_far": 0.0},
        "far": {"beta": 0.0, "c_mu": 0.0, "c_d": 0.0},
    }[term]
    m = build_method("sure", NET, 2, 1, 2, weights)
    torch.manual_seed(1)
    model = m.build_model()
    batch = _batch(2)
    y = batch.soft()
    alpha = evidence_to_alpha(model(batch.image))
    l_gu, l_nu, logs = m.supervision_terms(model, batch.image, alpha, y, torch.Generator().manual_seed(0))
    total = l_gu + l_nu
    assert float(total.detach()) > 0, logs
    total.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0


def test_noise_terms_use_the_noised_passes():
    """With the clean pass detached, L_mu + L_d still send gradient to the network (via u(mu1), u(mu2))."""
    m = build_method("sure", NET, 2, 1, 2, {"beta": 0.0, "c_far": 0.0})
    torch.manual_seed(1)
    model = m.build_model()
    batch = _batch(2)
    with torch.no_grad():
        alpha = evidence_to_alpha(model(batch.image))
    _, l_nu, logs = m.supervision_terms(model, batch.image, alpha, batch.soft(), torch.Generator().manual_seed(0))
    assert l_nu.requires_grad and logs["sure_mu"] + logs["sure_d"] > 0
    l_nu.backward()
    assert sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None) > 0


@pytest.mark.parametrize("dims", [2, 3])
def test_training_steps_in_the_supervised_phase(dims):
    torch.manual_seed(0)
    m = build_method("sure", NET, dims, 1, 2, {"patch_size": 3, "gu_pairs": 256})
    model = m.build_model()
    batch = _batch(dims)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(15):
        ctx = TrainContext(epoch=9, max_epochs=10, step=step, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss, logs = m.loss(model, batch, ctx)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert logs["sure_weight"] == 1.0 and logs["sure_patches"] > 0
    assert sum(losses[-3:]) < sum(losses[:3])
    pred = m.predict([model.eval()], batch.image)
    assert pred.is_evidential and pred.probs.shape == (1, 2, 2, *batch.image.shape[2:])
