"""The U-Net: shapes in 2D/3D, the size multiple (no internal padding), dropout placement, prefix/suffix split,
heads, features, its params, the factory and the legacy net config."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustseg.core.errors import ConfigError, UnknownNameError
from trustseg.models.config import NetConfig
from trustseg.models.factory import build_network
from trustseg.models.registry import MODELS
from trustseg.models.unet import UNet, UNetParams

TINY = UNetParams(channels=(4, 8))


@pytest.mark.parametrize("dims,shape", [(2, (16, 16)), (3, (8, 8, 8)), (2, (12, 20)), (3, (4, 8, 12))])
def test_output_shapes(dims, shape):
    net = UNet(dims, 2, 3, UNetParams(channels=(4, 8, 16), deep_heads=True), extra_outputs={"rater_variance": 1})
    x = torch.randn(2, 2, *shape)
    out = net.forward_all(x)
    assert out["logits"].shape == (2, 3, *shape)
    assert out["rater_variance"].shape == (2, 1, *shape)
    assert len(out["heads"]) == net.num_heads == 3
    assert all(h.shape == (2, 3, *shape) for h in out["heads"])
    assert torch.equal(out["heads"][-1], out["logits"])
    assert torch.equal(net(x), out["logits"])


@pytest.mark.parametrize("channels,multiple", [((4, 8), 2), ((4, 8, 16), 4), ((2, 2, 2, 2), 8)])
def test_size_multiple_is_checked_not_padded(channels, multiple):
    net = UNet(2, 1, 2, UNetParams(channels=channels)).eval()
    assert net.size_multiple == UNetParams(channels=channels).size_multiple == multiple
    assert net(torch.randn(1, 1, multiple, 3 * multiple)).shape == (1, 2, multiple, 3 * multiple)
    bad = torch.randn(1, 1, multiple + 1, multiple)
    for call in (net, net.forward_all, net.encode, net.deterministic_prefix, net.forward_features):
        with pytest.raises(ValueError, match=f"size multiple {multiple}; pad"):
            call(bad)


def test_dropout_placement_decoder_keeps_encoder_deterministic():
    net = UNet(2, 1, 3, UNetParams(channels=(4, 8, 16), dropout=0.5, dropout_where="decoder")).train()
    assert not any(isinstance(m, nn.Dropout) for m in net.encoder.modules())
    assert isinstance(net.bottleneck[-1], nn.Dropout)
    assert all(isinstance(b[-1], nn.Dropout) for b in net.decoder)
    assert net.encoder_deterministic
    x = torch.randn(2, 1, 16, 16)
    a, b = net.encode(x), net.encode(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(net(x), net(x))  # the decoder is stochastic in train mode


@pytest.mark.parametrize("where,enc,dec", [("all", True, True), ("bottleneck", False, False)])
def test_dropout_placement_variants(where, enc, dec):
    net = UNet(2, 1, 3, UNetParams(channels=(4, 8, 16), dropout=0.2, dropout_where=where))
    assert any(isinstance(m, nn.Dropout) for m in net.encoder.modules()) == enc
    assert any(isinstance(m, nn.Dropout) for m in net.decoder.modules()) == dec
    assert isinstance(net.bottleneck[-1], nn.Dropout)
    assert net.encoder_deterministic == (not enc)


def test_dropout_placement_last_is_only_the_final_decoder_block():
    net = UNet(2, 1, 3, UNetParams(channels=(4, 8, 16), dropout=0.2, dropout_where="last"))
    holders = [n for n, m in net.named_modules() if isinstance(m, nn.Dropout)]
    assert holders == [f"decoder.{len(net.decoder) - 1}.6"]
    assert net.encoder_deterministic
    assert net.split_position == (net.num_blocks - 1, 6)


def _assert_same_outputs(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], list):
            assert len(a[k]) == len(b[k]) and all(torch.equal(u, v) for u, v in zip(a[k], b[k])), k
        else:
            assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("where", ["decoder", "last", "all", "bottleneck"])
@pytest.mark.parametrize("dims,shape", [(2, (12, 20)), (3, (4, 8, 12))])
def test_prefix_then_suffix_equals_forward_all(where, dims, shape):
    cfg = UNetParams(channels=(4, 8, 16), dropout=0.3, dropout_where=where, deep_heads=True)
    net = UNet(dims, 2, 3, cfg, extra_outputs={"v": 1}).train()  # train mode: every dropout layer samples
    x = torch.randn(2, 2, *shape)
    torch.manual_seed(5)
    ref = net.forward_all(x)
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    state = net.deterministic_prefix(x)
    assert torch.equal(torch.get_rng_state(), rng)  # the prefix draws no random numbers
    _assert_same_outputs(net.stochastic_suffix(state), ref)
    # the state is not consumed: finishing it again under another seed gives another sample, same seed the same
    torch.manual_seed(6)
    other = net.stochastic_suffix(state)["logits"]
    assert not torch.equal(other, ref["logits"])
    torch.manual_seed(5)
    _assert_same_outputs(net.stochastic_suffix(state), ref)


def test_prefix_without_dropout_runs_every_block():
    net = UNet(2, 1, 3, UNetParams(channels=(4, 8, 16))).eval()
    assert net.split_position == (net.num_blocks, 0)
    x = torch.randn(1, 1, 16, 16)
    _assert_same_outputs(net.stochastic_suffix(net.deterministic_prefix(x)), net.forward_all(x))


def test_repeated_state_gives_copies_of_the_batch():
    net = UNet(2, 1, 3, UNetParams(channels=(4, 8), dropout=0.2, dropout_where="decoder", deep_heads=True)).eval()
    x = torch.randn(2, 1, 14, 16)
    state = net.deterministic_prefix(x)  # eval mode: the suffix is deterministic too
    out = net.stochastic_suffix(state.repeat(3))
    ref = net.forward_all(x)
    assert out["logits"].shape == (6, 3, 14, 16)
    assert torch.allclose(out["logits"], ref["logits"].repeat(3, 1, 1, 1), atol=1e-6)
    assert all(torch.allclose(h, r.repeat(3, 1, 1, 1), atol=1e-6) for h, r in zip(out["heads"], ref["heads"]))


def test_no_dropout_modules_when_p_is_zero():
    assert not any(isinstance(m, nn.Dropout) for m in UNet(2, 1, 3, TINY).modules())


@pytest.mark.parametrize(
    "norm,cls", [("instance", nn.InstanceNorm3d), ("batch", nn.BatchNorm3d), ("group", nn.GroupNorm)]
)
def test_norms(norm, cls):
    net = UNet(3, 1, 2, UNetParams(channels=(4, 6), norm=norm))
    norms = [m for m in net.modules() if isinstance(m, cls)]
    assert len(norms) == 6  # two per block: encoder, bottleneck, decoder
    if norm == "group":
        assert sorted({m.num_groups for m in norms}) == [4, 6]  # min(8, C) dividing C
    if norm == "instance":
        assert all(m.affine for m in norms)
    assert net(torch.randn(2, 1, 8, 8, 8)).shape == (2, 2, 8, 8, 8)


def test_norm_none_uses_biases():
    net = UNet(2, 1, 2, UNetParams(channels=(4, 8), norm="none"))
    assert all(m.bias is not None for m in net.modules() if isinstance(m, nn.Conv2d))


def test_gradients_reach_every_parameter():
    net = UNet(2, 1, 3, UNetParams(channels=(4, 8), deep_heads=True), extra_outputs={"v": 1})
    out = net.forward_all(torch.randn(2, 1, 16, 16))
    loss = sum(h.square().mean() for h in out["heads"]) + out["v"].square().mean()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_bad_params():
    for bad, match in [
        (dict(channels=(4,)), "net.params.channels must hold at least two positive widths"),
        (dict(channels=(4, 0)), "net.params.channels"),
        (dict(dropout=1.0), r"net.params.dropout must be in \[0, 1\)"),
        (dict(norm="layer"), "net.params.norm must be one of instance, batch, group, none"),
        (dict(dropout_where="first"), "net.params.dropout_where must be one of"),
    ]:
        with pytest.raises(ConfigError, match=match):
            UNetParams(**bad)
    with pytest.raises(ConfigError, match="spatial_dims must be 2 or 3"):
        UNet(4, 1, 2, TINY)
    with pytest.raises(ValueError, match="2 spatial axes"):
        UNet(2, 1, 2, TINY)(torch.randn(1, 1, 8, 8, 8))


def test_forward_features_are_what_the_heads_read():
    net = UNet(2, 1, 3, UNetParams(channels=(4, 8, 16)), extra_outputs={"v": 2}).eval()
    x = torch.randn(2, 1, 8, 12)
    feats = net.forward_features(x)
    assert feats.shape == (2, 4, 8, 12)
    out = net.forward_all(x)
    assert torch.allclose(net.head(feats), out["logits"], atol=1e-6)
    assert torch.allclose(net.extra_heads["v"](feats), out["v"], atol=1e-6)
    layers = net.feature_layers()
    assert list(layers) == ["encoder.0", "encoder.1", "bottleneck", "decoder.0", "decoder.1"]
    modules = dict(net.named_modules())
    assert all(modules[name] is mod for name, mod in layers.items())


def test_factory_and_registry():
    assert "unet" in MODELS
    assert MODELS.meta("unet")["params"] is UNetParams
    net = build_network(NetConfig(params={"channels": (4, 8)}), 2, 1, 3, extra_outputs={"rater_variance": 1})
    assert isinstance(net, UNet) and net.params == TINY
    assert "rater_variance" in net.forward_all(torch.randn(1, 1, 16, 16))
    with pytest.raises(UnknownNameError, match="did you mean 'unet'"):
        build_network(NetConfig("unnet", {"channels": (4, 8)}), 2, 1, 3)
