"""Temperature scaling: recovering a known temperature, soft labels, sample-based methods, method fitting."""

from __future__ import annotations

import pytest
import torch

from trustseg.core.errors import ConfigError
from trustseg.methods import Batch, build_method
from trustseg.methods.temperature import (
    LogitSubsample,
    collect_logits,
    fit_method_temperature,
    fit_temperature,
    temperature_nll,
)
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


class _PointwiseLogits:
    """A logit method whose network is a 1×1 convolution: a voxel's logits do not depend on the padding."""

    name = "pointwise"
    temperature = 1.0

    def sample_logits(self, models, x):
        return torch.stack([m(x) for m in models])  # (M, B, K, *sp)


def _pointwise(seed=0, k=3):
    g = torch.Generator().manual_seed(seed)
    conv = torch.nn.Conv2d(1, k, 1)
    with torch.no_grad():
        conv.weight.copy_(3 * torch.randn(k, 1, 1, 1, generator=g))
        conv.bias.copy_(torch.tensor([-1.0, 0.5, 2.0][:k]))  # zero padding is predicted as class 2, not 0
    return conv.eval()


def _cases(shapes, model, t0=2.0, seed=1, raters=3):
    """Images and rater maps drawn from ``softmax(model(image) / t0)``: a temperature near t0 fits them."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in shapes:
        img = torch.randn(1, *s, generator=g)
        with torch.no_grad():
            p = torch.softmax(model(img[None])[0] / t0, 0).reshape(3, -1).T  # (V, K)
        labels = torch.multinomial(p, raters, replacement=True, generator=g).T.reshape(raters, *s)
        out.append((img, labels))
    return out


def _padded_batch(cases, k=3):
    """All cases in one batch, zero-padded at the end of each axis to the largest (labels padded with 0)."""
    shape = [max(img.shape[1 + d] for img, _ in cases) for d in range(2)]
    pad = [(0, shape[1] - img.shape[2], 0, shape[0] - img.shape[1]) for img, _ in cases]
    image = torch.stack([torch.nn.functional.pad(img, p) for (img, _), p in zip(cases, pad)])
    labels = torch.stack([torch.nn.functional.pad(lab, p) for (_, lab), p in zip(cases, pad)])
    return Batch(image, labels, k), [tuple(img.shape[1:]) for img, _ in cases]


def test_streamed_fit_equals_the_one_batch_fit():
    # 2D cases of one shape: one batch of all of them (the former path) vs one case per batch, streamed.
    # Every voxel is kept (16·16 < max_voxels), so both minimise the same NLL, summed in a different order
    # (~1e-16 relative); L-BFGS then stops at the same point up to its gradient tolerance 1e-7 on log T.
    models = [_pointwise(0), _pointwise(1)]
    cases = _cases([(16, 16)] * 4, models[0])
    one = Batch(torch.stack([c[0] for c in cases]), torch.stack([c[1] for c in cases]), 3)
    z, y = collect_logits(_PointwiseLogits(), models, [one])
    t_one = fit_temperature(z, y, samples=True)
    method = _PointwiseLogits()
    t_stream = fit_method_temperature(method, models, [Batch(img[None], lab[None], 3) for img, lab in cases])
    assert method.temperature == t_stream == pytest.approx(t_one, rel=1e-6)
    assert t_one > 1.2  # labels drawn at T = 2 from one of the two models: the fit raises T above 1


def test_padding_does_not_count_as_background():
    models = [_pointwise(0)]
    cases = _cases([(16, 16), (9, 16), (16, 11)], models[0])
    batch, shapes = _padded_batch(cases)
    method = _PointwiseLogits()
    # reference: the fit on exactly the cases' own voxels, concatenated
    z = torch.cat([models[0](img[None]).detach().flatten(2) for img, _ in cases], 2)  # (B = 1, K, V)
    y = torch.cat([Batch(img[None], lab[None], 3).soft().flatten(2) for img, lab in cases], 2)
    ref = fit_temperature(z.movedim(1, -1), y[0].T, samples=True)  # logits (M = 1, V, K), targets (V, K)
    assert fit_method_temperature(method, models, [(batch, shapes)]) == pytest.approx(ref, rel=1e-6)
    # more padding changes nothing; counting the padding as background (the old behaviour) does
    wide = Batch(
        torch.nn.functional.pad(batch.image, (0, 8, 0, 8)), torch.nn.functional.pad(batch.labels, (0, 8, 0, 8)), 3
    )
    assert fit_method_temperature(method, models, [(wide, shapes)]) == pytest.approx(ref, rel=1e-6)
    assert abs(fit_method_temperature(method, models, [batch]) - ref) > 0.01 * ref


def test_subsample_is_bounded_seeded_and_its_nll_unbiased():
    # Two cases of very different size and fit: the weights N_i / n_i make the subsampled NLL an unbiased
    # estimate of the mean over all voxels; an unweighted mean of the kept voxels would over-weight the small case.
    g = torch.Generator().manual_seed(3)
    big_z, small_z = 2 * torch.randn(1, 3, 40, 40, generator=g), 6 * torch.randn(1, 3, 5, 5, generator=g)
    big_y = torch.softmax(big_z[0], 0)  # well calibrated
    small_y = torch.nn.functional.one_hot(torch.randint(0, 3, (5, 5), generator=g), 3).movedim(-1, 0).float()
    full = LogitSubsample(max_voxels=10**6)
    for zz, yy in ((big_z, big_y), (small_z, small_y)):
        full.add(zz, yy)
    z_all, y_all, w_all = full.tensors()
    assert torch.equal(w_all, torch.ones(1625, dtype=torch.float64))
    truth = float(temperature_nll(z_all, y_all, 1.5, samples=True))
    estimates, unweighted = [], []
    for seed in range(200):
        sub = LogitSubsample(max_voxels=20, seed=seed)
        sub.add(big_z, big_y)
        sub.add(small_z, small_y)
        z, y, w = sub.tensors()
        assert z.shape == (1, 40, 3) and sub.n_valid == 1625
        estimates.append(float(temperature_nll(z, y, 1.5, samples=True, weights=w)))
        unweighted.append(float(temperature_nll(z, y, 1.5, samples=True)))
    est = torch.tensor(estimates, dtype=torch.float64)
    assert abs(float(est.mean()) - truth) < 3 * float(est.std()) / 200**0.5
    assert abs(float(torch.tensor(unweighted).mean()) - truth) > 10 * float(est.std()) / 200**0.5
    # seeded: the same seed draws the same voxels
    a, b = LogitSubsample(20, seed=7), LogitSubsample(20, seed=7)
    a.add(big_z, big_y)
    b.add(big_z, big_y)
    assert torch.equal(a.tensors()[0], b.tensors()[0])
    with pytest.raises(ConfigError):
        LogitSubsample(0)
