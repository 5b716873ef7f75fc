"""The network contract, checked for every registered model in 2D and 3D (:mod:`trustseg.models.protocol`).

For each model: its registration metadata, the forward shape, the size multiple (honoured, and refused with a
ValueError naming it otherwise), every declared capability working as the protocol says (and undeclared ones
absent), and gradients reaching every parameter. Models registered by any module of ``trustseg.models`` are
picked up at collection time.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from trustseg.core.errors import ConfigError
from trustseg.models import (
    CAPABILITIES,
    MODELS,
    NetConfig,
    SegmentationNetwork,
    build_network,
    model_capabilities,
    size_multiple,
)
from trustseg.models.protocol import ALL_OUTPUTS, DEEP_HEADS, DROPOUT, EXTRA_HEADS, FEATURES, PREFIX_SUFFIX

#: Models whose optional packages (registration metadata ``requires``) are installed; the others are skipped.
NAMES = [n for n in MODELS.names() if all(importlib.util.find_spec(r) for r in MODELS.meta(n).get("requires", ()))]
#: Small parameters per model (defaults for models not listed).
SMALL = {
    "unet": {"channels": (4, 8, 16)},
    "monai.UNet": {"channels": (4, 8, 8), "strides": (2, 2), "num_res_units": 1},
    "monai.AttentionUnet": {"channels": (4, 8, 8), "strides": (2, 2)},
    "monai.DynUNet": {"filters": (4, 8, 8), "strides": (1, 2, 2)},
    "monai.SegResNet": {"init_filters": 8, "blocks_down": (1, 1, 1)},
    "monai.SwinUNETR": {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1), "window_size": 4},
}
C, K, B = 2, 3, 2
CASES = [(name, dims) for name in NAMES for dims in (2, 3)]


def _net(name: str, **changes) -> NetConfig:
    return NetConfig(name, {**SMALL.get(name, {}), **changes})


def _input(dims: int, multiple: int, seed: int = 0) -> torch.Tensor:
    shape = (2 * multiple, 3 * multiple, multiple)[:dims]
    return torch.randn(B, C, *shape, generator=torch.Generator().manual_seed(seed))


def _outputs(model: nn.Module, x: torch.Tensor) -> dict:
    return model(x, all_outputs=True) if ALL_OUTPUTS in model.capabilities else {"logits": model(x)}


@pytest.mark.parametrize("name", NAMES)
def test_registration_metadata(name):
    entry = MODELS.entry(name)
    assert entry.doc
    params_cls = entry.meta["params"]
    assert dataclasses.is_dataclass(params_cls) and params_cls.__dataclass_params__.frozen
    caps = model_capabilities(name)
    assert caps <= CAPABILITIES
    fields = {f.name for f in dataclasses.fields(params_cls)}
    params = params_cls()  # the defaults are a valid configuration
    assert isinstance(params.size_multiple, int) and params.size_multiple >= 1
    if DEEP_HEADS in caps:
        assert "deep_heads" in fields and params.num_heads >= 2
    if DROPOUT in caps:
        assert {"dropout", "dropout_where"} <= fields
    assert NetConfig(name).params == dataclasses.asdict(params)  # stored complete


@pytest.mark.parametrize("name,dims", CASES)
def test_forward_shape_and_size_multiple(name, dims):
    net = _net(name)
    model = build_network(net, dims, C, K).eval()
    assert isinstance(model, SegmentationNetwork)
    assert model.spatial_dims == dims and model.num_classes == K
    m = model.size_multiple
    assert m == size_multiple(net) == net.typed_params.size_multiple
    x = _input(dims, m)
    assert model(x).shape == (B, K, *x.shape[2:])
    assert model.capabilities <= model_capabilities(name)
    if m > 1:
        bad = x[..., : x.shape[-1] - 1]
        with pytest.raises(ValueError, match=rf"size multiple {m}\b"):
            model(bad)


@pytest.mark.parametrize("name,dims", CASES)
def test_declared_capabilities_work_and_undeclared_are_absent(name, dims):
    caps = model_capabilities(name)
    plain = build_network(_net(name), dims, C, K).eval()  # default parameters: no deep heads, no dropout
    x = _input(dims, plain.size_multiple, seed=1)
    logits = plain(x)

    if ALL_OUTPUTS in caps:
        assert ALL_OUTPUTS in plain.capabilities
        out = plain(x, all_outputs=True)
        assert torch.equal(out["logits"], logits) and torch.equal(plain.forward_all(x)["logits"], logits)
    else:
        assert not hasattr(plain, "forward_all")

    if EXTRA_HEADS in caps:
        extra = build_network(_net(name), dims, C, K, extra_outputs={"v": 2}).eval()
        assert EXTRA_HEADS in extra.capabilities and isinstance(extra.extra_heads["v"], nn.Module)
        assert extra(x, all_outputs=True)["v"].shape == (B, 2, *x.shape[2:])
    else:
        with pytest.raises(ConfigError, match="extra_heads"):
            build_network(_net(name), dims, C, K, extra_outputs={"v": 2})

    assert DEEP_HEADS not in plain.capabilities and "heads" not in _outputs(plain, x)
    if DEEP_HEADS in caps:
        deep = build_network(_net(name, deep_heads=True), dims, C, K).eval()
        heads = deep(x, all_outputs=True)["heads"]
        assert DEEP_HEADS in deep.capabilities
        assert len(heads) == deep.num_heads == _net(name).typed_params.num_heads
        assert all(h.shape == (B, K, *x.shape[2:]) for h in heads)
        assert torch.equal(heads[-1], deep(x))

    assert DROPOUT not in plain.capabilities and not any(isinstance(m, _DropoutNd) for m in plain.modules())
    if DROPOUT in caps:
        drop = build_network(_net(name, dropout=0.3), dims, C, K)
        assert DROPOUT in drop.capabilities and any(isinstance(m, _DropoutNd) for m in drop.modules())

    if PREFIX_SUFFIX in caps:
        model = build_network(_net(name, dropout=0.3) if DROPOUT in caps else _net(name), dims, C, K).train()
        torch.manual_seed(3)
        ref = model.forward_all(x)["logits"]
        torch.manual_seed(3)
        rng = torch.get_rng_state()
        state = model.deterministic_prefix(x)
        assert torch.equal(torch.get_rng_state(), rng)  # the prefix draws no random numbers
        assert torch.equal(model.stochastic_suffix(state)["logits"], ref)
        assert model.stochastic_suffix(state.repeat(3))["logits"].shape == (3 * B, K, *x.shape[2:])
    else:
        assert not hasattr(plain, "deterministic_prefix")

    if FEATURES in caps:
        feats = plain.forward_features(x)
        assert feats.dim() == dims + 2 and feats.shape[0] == B
        layers = plain.feature_layers()
        assert layers and all(any(mod is m for m in plain.modules()) for mod in layers.values())
        calls = {name: 0 for name in layers}
        hooks = [
            mod.register_forward_hook(lambda *a, n=n: calls.__setitem__(n, calls[n] + 1)) for n, mod in layers.items()
        ]
        plain(x)
        for h in hooks:
            h.remove()
        assert set(calls.values()) == {1}  # every feature layer runs exactly once per forward
    else:
        assert not hasattr(plain, "forward_features")


@pytest.mark.parametrize("name,dims", CASES)
def test_gradients_reach_every_parameter(name, dims):
    caps = model_capabilities(name)
    changes = {"deep_heads": True} if DEEP_HEADS in caps else {}
    extra = {"v": 1} if EXTRA_HEADS in caps else None
    model = build_network(_net(name, **changes), dims, C, K, extra_outputs=extra).train()
    x = _input(dims, model.size_multiple, seed=2)
    out = _outputs(model, x)
    loss = sum(h.square().mean() for h in out.get("heads", [out["logits"]]))
    if extra:
        loss = loss + out["v"].square().mean()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []
