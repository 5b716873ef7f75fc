"""Test-time augmentation: exact inverses, view sets, delegation to the base method."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustseg.core.errors import ConfigError
from trustseg.methods import METHODS, Batch, TrainContext, build_method
from trustseg.methods.tta import make_views
from trustseg.models.config import NetConfig

NET = NetConfig(params={"channels": (4, 8)})


class Pointwise(nn.Module):
    """A per-pixel model (1x1 conv): equivariant to every flip and rotation."""

    def __init__(self, dims=2, k=3):
        super().__init__()
        self.conv = (nn.Conv2d if dims == 2 else nn.Conv3d)(1, k, 1)

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("shape", [(2, 3, 6, 6), (2, 3, 5, 7), (1, 2, 4, 4, 4), (1, 2, 3, 4, 5)])
def test_inverse_undoes_every_geometric_view_exactly(shape):
    x = torch.randn(*shape)
    for v in make_views(shape[2:], flips=True, rotations=True):
        assert torch.equal(v.inverse(v.forward(x)), x), v.name
        # the same inverse acts on outputs with a leading sample axis (M, B, K, *sp)
        y = v.forward(x)[None].repeat(3, 1, 1, *([1] * (len(shape) - 2)))
        assert torch.equal(v.inverse(y), x[None].expand_as(y)), v.name


def test_view_sets():
    names = [v.name for v in make_views((8, 8), intensity=((1.0, 0.0), (1.1, 0.0)))]
    assert names == ["identity", "flip0", "flip1", "rot90", "rot180", "rot270", "int1.1,+0"]
    non_square = [v.name for v in make_views((8, 6))]
    assert "rot90" not in non_square and "rot270" not in non_square and "rot180" in non_square
    assert len(make_views((4, 4, 4), intensity=((1.1, 0.0), (0.9, 0.0), (1.0, 0.1), (1.0, -0.1)))) == 11
    assert [v.name for v in make_views((8, 8), flips=False, rotations=False)] == ["identity"]


def test_pointwise_model_gives_identical_geometric_views():
    m = build_method("tta", NET, 2, 1, 3, {"intensity": []})
    model = Pointwise().eval()
    x = torch.randn(2, 1, 6, 6)
    with torch.no_grad():
        pred = m.predict([model], x)
    assert pred.probs.shape == (6, 2, 3, 6, 6)
    assert torch.allclose(pred.probs, pred.probs[:1].expand_as(pred.probs), atol=1e-6)


def test_views_are_mapped_back_to_the_original_positions():
    # a U-Net is not flip-equivariant; every mapped-back view must equal the base prediction on the
    # transformed input, transformed back
    m = build_method("tta", NET, 2, 1, 3)
    model = m.build_model().eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        pred = m.predict([model], x)
        views = m.views(x.shape[2:])
        assert pred.num_samples == len(views) == 10
        for i, v in enumerate(views):
            ref = torch.softmax(model(v.forward(x)), 1)
            assert torch.allclose(pred.probs[i], v.inverse(ref), atol=1e-6), v.name
        assert torch.allclose(pred.probs[0], torch.softmax(model(x), 1), atol=1e-6)


def test_tta_over_mc_dropout_and_ensemble_multiplies_samples():
    mc = build_method("tta", NET, 2, 1, 3, {"base": "mc-dropout", "base_params": {"samples": 2}, "intensity": []})
    model = mc.build_model().eval()
    with torch.no_grad():
        assert mc.predict([model], torch.randn(1, 1, 8, 8)).num_samples == 6 * 2
    ens = build_method("tta", NET, 2, 1, 3, {"base": "ensemble", "base_params": {"members": 2}, "rotations": False})
    assert ens.num_members == 2
    models = [ens.build_model(i).eval() for i in range(2)]
    with torch.no_grad():
        assert ens.predict(models, torch.randn(1, 1, 8, 8)).num_samples == (1 + 2 + 4) * 2


@pytest.mark.skipif("evidential" not in METHODS, reason="evidential method not registered")
def test_tta_maps_dirichlets_back():
    m = build_method("tta", NET, 2, 1, 3, {"base": "evidential", "intensity": []})
    model = m.build_model().eval()
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        pred = m.predict([model], x)
        alphas = [v.inverse(m.base.predict([model], v.forward(x)).alpha) for v in m.views(x.shape[2:])]
    assert pred.alpha is not None
    assert torch.allclose(pred.alpha, torch.stack(alphas).mean(0), atol=1e-5)


def test_training_is_delegated_and_temperature_forwarded():
    m = build_method("tta", NET, 2, 1, 3, {"base_params": {"target": "majority"}})
    assert m.target == "majority" and m.num_members == 1
    model = m.build_model()
    batch = Batch(torch.randn(2, 1, 16, 16), torch.randint(0, 3, (2, 3, 16, 16)), 3)
    a, _ = m.loss(model, batch, TrainContext())
    b, _ = m.base.loss(model, batch, TrainContext())
    assert a.item() == pytest.approx(b.item())
    m.temperature = 3.0
    model.eval()
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        p = m.predict([model], x).probs[0]
        assert torch.allclose(p, torch.softmax(model(x) / 3.0, 1), atol=1e-6)
        assert m.sample_logits([model], x).shape == (10, 1, 3, 16, 16)


def test_bad_base():
    with pytest.raises(ConfigError):
        build_method("tta", NET, 2, 1, 3, {"base": "tta"})
    with pytest.raises(Exception, match="did you mean 'softmax'"):
        build_method("tta", NET, 2, 1, 3, {"base": "sofmax"})


def test_upgrade_params_upgrades_the_base_params():
    cls = METHODS.get("tta")
    old = {"base": "mc-dropout", "base_params": {"samples": 2, "encoder_once": False}}
    up = cls.upgrade_params(old)
    assert up["base_params"] == {"samples": 2, "prefix_once": False, "where": None}
    assert cls.upgrade_params(up) == up
    m = build_method("tta", NET, 2, 1, 3, up)
    assert m.base.params.where is None and m.base.params.prefix_once is False
    assert cls.upgrade_params({"base": "softmax"}) == {"base": "softmax", "base_params": {}}
