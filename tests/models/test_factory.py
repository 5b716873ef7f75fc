"""The factory: building by name, the size multiple before building, and capability checks."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest
import torch

from trustseg.core.errors import ConfigError
from trustseg.models import MODELS, NetConfig, UNet, build_network, model_capabilities, require_capabilities
from trustseg.models import size_multiple as net_size_multiple
from trustseg.models.protocol import CAPABILITIES


@pytest.fixture
def unet_offering_nothing(monkeypatch):
    """``unet`` registered as if it offered no optional capability."""
    entry = MODELS.entry("unet")
    meta = MappingProxyType({**entry.meta, "capabilities": frozenset()})
    monkeypatch.setitem(MODELS._entries, "unet", dataclasses.replace(entry, meta=meta))


@pytest.mark.parametrize("channels,multiple", [((4, 8), 2), ((4, 8, 16, 32, 64), 16)])
def test_size_multiple_before_building(channels, multiple):
    net = NetConfig("unet", {"channels": channels})
    assert net_size_multiple(net) == multiple == build_network(net, 2, 1, 2).size_multiple


def test_build_network_passes_params_and_extra_outputs():
    net = NetConfig("unet", {"channels": (4, 8), "norm": "batch"})
    model = build_network(net, 3, 2, 4, extra_outputs={"rater_variance": 1})
    assert isinstance(model, UNet) and model.params == net.typed_params
    out = model(torch.randn(1, 2, 4, 4, 4), all_outputs=True)
    assert out["logits"].shape == (1, 4, 4, 4, 4) and out["rater_variance"].shape == (1, 1, 4, 4, 4)


def test_capability_checks(unet_offering_nothing):
    assert model_capabilities("unet") == frozenset()
    net = NetConfig("unet", {"channels": (4, 8)})
    with pytest.raises(ConfigError, match=r"method x needs a network with deep_heads; unet offers no optional"):
        require_capabilities(net, {"deep_heads"}, "method x")
    with pytest.raises(ConfigError, match=r"extra outputs \['v'\] needs a network with extra_heads"):
        build_network(net, 2, 1, 2, extra_outputs={"v": 1})
    build_network(net, 2, 1, 2)  # nothing asked for, nothing needed


def test_unet_declares_every_capability():
    assert model_capabilities("unet") == CAPABILITIES
    require_capabilities(NetConfig(), CAPABILITIES, "anyone")
