"""The ``edue`` method: needs several raters, learns a toy rater-variance map, predicts variance extras."""

from __future__ import annotations

import pytest
import torch

from trustseg.core.errors import DataError
from trustseg.methods import METHODS, Batch, TrainContext, build_method
from trustseg.methods.edue import variance_from_raw
from trustseg.models.config import NetConfig

NET = NetConfig(params={"channels": (4, 8)})


def _batch(dims: int, r: int = 3, k: int = 2, b: int = 2) -> Batch:
    """A disc (2D) or ball (3D) that every rater marks, plus a ring that only the first rater marks."""
    sp = (16, 16) if dims == 2 else (8, 8, 8)
    grids = torch.meshgrid(*(torch.arange(s, dtype=torch.float32) - (s - 1) / 2 for s in sp), indexing="ij")
    radius = torch.sqrt(sum(g**2 for g in grids))
    inner, outer = sp[0] / 5, sp[0] / 3
    labels = torch.zeros(b, r, *sp, dtype=torch.long)
    labels[:, :, radius <= inner] = k - 1
    labels[:, 0, radius <= outer] = k - 1
    image = (radius <= inner).float() + 0.5 * ((radius > inner) & (radius <= outer)).float()
    return Batch(image=image.expand(b, 1, *sp).clone(), labels=labels, num_classes=k)


def test_registered_and_defaults():
    entry = METHODS.entry("edue")
    assert "variance" in entry.doc
    m = build_method("edue", NET, 2, 1, 2)
    assert m.needs_raters and m.target == "all_raters" and m.params.var_weight == 3.0


def test_single_rater_fails_clearly():
    m = build_method("edue", NET, 2, 1, 2)
    with pytest.raises(DataError, match="at least 2 raters"):
        m.check_raters(1)
    m.check_raters(2)
    model = m.build_model()
    with pytest.raises(DataError, match="this dataset has 1"):
        m.loss(model, _batch(2, r=1), TrainContext())


def test_variance_range():
    raw = torch.tensor([-1e4, 0.0, 1e4])
    torch.testing.assert_close(variance_from_raw(raw, 3), torch.tensor([0.0, 1 / 3, 2 / 3]))


@pytest.mark.parametrize("dims", [2, 3])
def test_prediction_shapes_and_initial_variance(dims):
    m = build_method("edue", NET, dims, 1, 3)
    model = m.build_model().eval()
    x = _batch(dims, k=3).image
    with torch.no_grad():
        pred = m.predict([model], x)
    assert pred.probs.shape == (1, 2, 3, *x.shape[2:])
    torch.testing.assert_close(pred.probs.sum(2), torch.ones(1, 2, *x.shape[2:]))
    var = pred.extras["rater_variance"]
    assert var.shape == (2, 1, *x.shape[2:])
    assert (var >= 0).all() and (var <= 2 / 3).all()
    m2 = build_method("edue", NET, dims, 1, 3, {"init_logit": -4.0})
    with torch.no_grad():
        var2 = m2.predict([m2.build_model().eval()], x).extras["rater_variance"]
    assert float(var2.mean()) < float(var.mean())  # a negative bias starts near "no disagreement"
    assert pred.alpha is None


def test_variance_head_learns_a_toy_map():
    torch.manual_seed(0)
    m = build_method("edue", NET, 2, 1, 2)
    model = m.build_model()
    batch = _batch(2)
    target = batch.rater_variance()
    assert float(target.max()) == pytest.approx(2 * (1 / 3) * (2 / 3))  # the ring: 1 of 3 raters
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    logs_seen = []
    for step in range(60):
        opt.zero_grad()
        loss, logs = m.loss(model, batch, TrainContext(step=step, generator=gen))
        loss.backward()
        opt.step()
        logs_seen.append(logs)
    assert logs_seen[-1]["var_mse"] < 0.4 * logs_seen[0]["var_mse"]
    assert logs_seen[-1]["loss"] < logs_seen[0]["loss"]
    with torch.no_grad():
        var = m.predict([model.eval()], batch.image).extras["rater_variance"]
    ring = target > 0
    assert float(var[ring].mean()) > 3 * float(var[~ring].mean())  # high where the raters disagree


def test_temperature_divides_the_logits():
    m = build_method("edue", NET, 2, 1, 2)
    model = m.build_model().eval()
    x = _batch(2).image
    with torch.no_grad():
        z = m.sample_logits([model], x)
        m.temperature = 2.0
        pred = m.predict([model], x)
    torch.testing.assert_close(pred.probs, torch.softmax(z / 2.0, 2))


def test_temperature_can_be_fitted_on_edue_logits():
    from trustseg.methods.temperature import collect_logits

    m = build_method("edue", NET, 2, 1, 2)
    model = m.build_model().eval()
    with torch.no_grad():
        z, y = collect_logits(m, [model], [_batch(2)])
    assert z.shape == (1, 2, 2, 16, 16) and y.shape == (2, 2, 16, 16)
