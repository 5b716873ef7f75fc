"""EDL losses against an independent numpy/scipy computation on seeded random inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import digamma, gammaln

from trustseg.methods.edl_losses import (
    dirichlet_mean,
    edl_ace,
    edl_kl,
    edl_loss,
    evidence_to_alpha,
    kl_annealing,
    tversky_dice_loss,
    vacuity,
)


def _inputs(soft: bool, shape=(2, 3, 5, 4), seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, size=shape)
    if soft:
        y = rng.dirichlet(np.ones(shape[1]), size=(shape[0], *shape[2:]))  # (B, *sp, K)
        y = np.moveaxis(y, -1, 1)
    else:
        lab = rng.integers(0, shape[1], size=(shape[0], *shape[2:]))
        y = np.moveaxis(np.eye(shape[1])[lab], -1, 1)
    return z, y


def _np_alpha(z):
    return np.logaddexp(0, z) + 1  # softplus


def _np_ace(alpha, y, variant):
    s = alpha.sum(1, keepdims=True)
    if variant == "digamma":
        return (y * (digamma(s) - digamma(alpha))).sum(1)
    if variant == "log":
        return (y * (np.log(s) - np.log(alpha))).sum(1)
    p = alpha / s
    var = alpha * (s - alpha) / (s**2 * (s + 1))
    return ((y - p) ** 2 + var).sum(1)


def _np_kl(alpha, y):
    k = alpha.shape[1]
    a = (alpha - 1) * (1 - y) + 1
    s = a.sum(1)
    # KL(Dir(a) || Dir(1)) = ln B(1) - ln B(a) + sum (a - 1)(psi(a) - psi(s)), ln B(a) = sum lnG(a) - lnG(s)
    ln_b_a = gammaln(a).sum(1) - gammaln(s)
    ln_b_1 = -gammaln(k)
    return ln_b_1 - ln_b_a + ((a - 1) * (digamma(a) - digamma(s[:, None]))).sum(1)


def _np_tversky(p, y, eps=1e-5):
    k = p.shape[1]
    pf = np.moveaxis(p, 1, -1).reshape(-1, k)
    yf = np.moveaxis(y, 1, -1).reshape(-1, k)
    out = []
    for c in range(k):
        tp = np.sum(pf[:, c] * yf[:, c])
        fp = np.sum(pf[:, c] * (1 - yf[:, c]))
        fn = np.sum((1 - pf[:, c]) * yf[:, c])
        a = min(max(fp / (fp + fn + eps), 0.2), 0.8)
        out.append(1 - tp / (tp + a * fp + (1 - a) * fn + eps))
    return np.array(out)


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("variant", ["digamma", "log", "mse"])
def test_ace_matches_scipy(variant, soft):
    z, y = _inputs(soft)
    alpha = evidence_to_alpha(torch.tensor(z))
    got = edl_ace(alpha.double(), torch.tensor(y), variant).numpy()
    np.testing.assert_allclose(got, _np_ace(_np_alpha(z), y, variant), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("soft", [False, True])
def test_kl_matches_scipy(soft):
    z, y = _inputs(soft, seed=1)
    alpha = evidence_to_alpha(torch.tensor(z)).double()
    got = edl_kl(alpha, torch.tensor(y)).numpy()
    ref = _np_kl(_np_alpha(z), y)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    assert (ref > -1e-9).all()


def test_kl_zero_when_no_misleading_evidence():
    y = torch.nn.functional.one_hot(torch.tensor([[0, 1, 2, 1]]), 3).movedim(-1, 1).double()  # (1, 3, 4)
    alpha = 1 + 7.0 * y  # evidence only on the true class
    torch.testing.assert_close(edl_kl(alpha, y), torch.zeros(1, 4, dtype=torch.float64))


@pytest.mark.parametrize("soft", [False, True])
def test_tversky_matches_numpy(soft):
    z, y = _inputs(soft, shape=(3, 4, 6, 5), seed=2)
    p = dirichlet_mean(evidence_to_alpha(torch.tensor(z)).double())
    got = tversky_dice_loss(p, torch.tensor(y)).numpy()
    np.testing.assert_allclose(got, _np_tversky(p.numpy(), y), rtol=1e-6, atol=1e-8)


def test_tversky_perfect_prediction_is_zero():
    y = torch.nn.functional.one_hot(torch.tensor([[0, 1, 1, 0]]), 2).movedim(-1, 1).double()
    np.testing.assert_allclose(tversky_dice_loss(y, y).numpy(), [0.0, 0.0], atol=1e-5)


@pytest.mark.parametrize("variant", ["digamma", "log", "mse"])
@pytest.mark.parametrize("epoch", [0, 5, 40])
def test_total_loss_matches_reference(variant, epoch):
    z, y = _inputs(True, seed=3)
    loss, logs = edl_loss(torch.tensor(z), torch.tensor(y), epoch=epoch, variant=variant, anneal_epochs=20)
    alpha = _np_alpha(z)
    lam = min(1.0, epoch / 20)
    p = alpha / alpha.sum(1, keepdims=True)
    ref = 10 * _np_ace(alpha, y, variant).mean() + lam * _np_kl(alpha, y).mean() + 10 * _np_tversky(p, y).mean()
    np.testing.assert_allclose(float(loss), ref, rtol=1e-5)
    assert logs["kl_weight"] == pytest.approx(lam)
    assert set(logs) == {"edl_ace", "edl_kl", "edl_dice", "kl_weight"}


def test_alpha_probs_vacuity():
    z = torch.randn(2, 3, 4, 4) * 5
    alpha = evidence_to_alpha(z)
    assert (alpha >= 1).all()
    torch.testing.assert_close(dirichlet_mean(alpha).sum(1), torch.ones(2, 4, 4))
    u = vacuity(alpha)
    assert u.shape == (2, 4, 4) and (u > 0).all() and (u <= 1).all()
    assert vacuity(torch.ones(1, 3, 2, 2)).eq(1).all()


def test_annealing_schedule():
    assert [kl_annealing(e, 20) for e in (0, 10, 20, 50)] == [0.0, 0.5, 1.0, 1.0]
    assert kl_annealing(0, 0) == 1.0


def test_bad_variant_and_shape():
    alpha = torch.ones(1, 2, 3)
    with pytest.raises(ValueError, match="variant"):
        edl_ace(alpha, alpha / 2, "hinge")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="same shape"):
        edl_loss(torch.zeros(1, 2, 3), torch.zeros(1, 3, 3), epoch=0)


def test_loss_gradient_lowers_loss():
    torch.manual_seed(0)
    z = torch.randn(2, 3, 6, 6, requires_grad=True)
    y = torch.nn.functional.one_hot(torch.randint(0, 3, (2, 6, 6)), 3).movedim(-1, 1).float()
    opt = torch.optim.SGD([z], lr=0.05)
    first = None
    for _ in range(20):
        opt.zero_grad()
        loss, _ = edl_loss(z, y, epoch=10)
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
    assert float(edl_loss(z.detach(), y, epoch=10)[0]) < first
