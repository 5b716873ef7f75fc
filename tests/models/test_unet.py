"""The U-Net: shapes in 2D/3D, padding and cropping, dropout placement, prefix/suffix split, heads, the factory."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trustseg.core.errors import ConfigError, UnknownNameError
from trustseg.models.config import NetConfig
from trustseg.models.factory import build_network
from trustseg.models.registry import MODELS
from trustseg.models.unet import UNet

TINY = NetConfig(channels=(4, 8))


@pytest.mark.parametrize("dims,shape", [(2, (16, 16)), (3, (8, 8, 8)), (2, (15, 17)), (3, (7, 8, 9))])
def test_output_shapes_and_crop(dims, shape):
    net = UNet(dims, 2, 3, NetConfig(channels=(4, 8, 16), deep_heads=True), extra_outputs={"rater_variance": 1})
    x = torch.randn(2, 2, *shape)
    out = net.forward_all(x)
    assert out["logits"].shape == (2, 3, *shape)
    assert out["rater_variance"].shape == (2, 1, *shape)
    assert len(out["heads"]) == net.num_heads == 3
    assert all(h.shape == (2, 3, *shape) for h in out["heads"])
    assert torch.equal(out["heads"][-1], out["logits"])
    assert torch.equal(net(x), out["logits"])


def test_padding_keeps_the_image_content_aligned():
    # a 15x15 input is padded at the end to 16x16: the cropped logits equal those of the explicitly padded input
    net = UNet(2, 1, 2, TINY).eval()
    x = torch.randn(1, 1, 15, 15)
    padded = torch.nn.functional.pad(x, (0, 1, 0, 1), mode="replicate")
    assert torch.allclose(net(x), net(padded)[..., :15, :15], atol=1e-6)


def test_dropout_placement_decoder_keeps_encoder_deterministic():
    net = UNet(2, 1, 3, NetConfig(channels=(4, 8, 16), dropout=0.5, dropout_where="decoder")).train()
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
    net = UNet(2, 1, 3, NetConfig(channels=(4, 8, 16), dropout=0.2, dropout_where=where))
    assert any(isinstance(m, nn.Dropout) for m in net.encoder.modules()) == enc
    assert any(isinstance(m, nn.Dropout) for m in net.decoder.modules()) == dec
    assert isinstance(net.bottleneck[-1], nn.Dropout)
    assert net.encoder_deterministic == (not enc)


def test_dropout_placement_last_is_only_the_final_decoder_block():
    net = UNet(2, 1, 3, NetConfig(channels=(4, 8, 16), dropout=0.2, dropout_where="last"))
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
@pytest.mark.parametrize("dims,shape", [(2, (15, 17)), (3, (7, 8, 9))])
def test_prefix_then_suffix_equals_forward_all(where, dims, shape):
    cfg = NetConfig(channels=(4, 8, 16), dropout=0.3, dropout_where=where, deep_heads=True)
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
    net = UNet(2, 1, 3, NetConfig(channels=(4, 8, 16))).eval()
    assert net.split_position == (net.num_blocks, 0)
    x = torch.randn(1, 1, 16, 16)
    _assert_same_outputs(net.stochastic_suffix(net.deterministic_prefix(x)), net.forward_all(x))


def test_repeated_state_gives_copies_of_the_batch():
    net = UNet(2, 1, 3, NetConfig(channels=(4, 8), dropout=0.2, dropout_where="decoder", deep_heads=True)).eval()
    x = torch.randn(2, 1, 15, 16)
    state = net.deterministic_prefix(x)  # eval mode: the suffix is deterministic too
    out = net.stochastic_suffix(state.repeat(3))
    ref = net.forward_all(x)
    assert out["logits"].shape == (6, 3, 15, 16)
    assert torch.allclose(out["logits"], ref["logits"].repeat(3, 1, 1, 1), atol=1e-6)
    assert all(torch.allclose(h, r.repeat(3, 1, 1, 1), atol=1e-6) for h, r in zip(out["heads"], ref["heads"]))


def test_no_dropout_modules_when_p_is_zero():
    assert not any(isinstance(m, nn.Dropout) for m in UNet(2, 1, 3, TINY).modules())


@pytest.mark.parametrize(
    "norm,cls", [("instance", nn.InstanceNorm3d), ("batch", nn.BatchNorm3d), ("group", nn.GroupNorm)]
)
def test_norms(norm, cls):
    net = UNet(3, 1, 2, NetConfig(channels=(4, 6), norm=norm))
    norms = [m for m in net.modules() if isinstance(m, cls)]
    assert len(norms) == 6  # two per block: encoder, bottleneck, decoder
    if norm == "group":
        assert sorted({m.num_groups for m in norms}) == [4, 6]  # min(8, C) dividing C
    if norm == "instance":
        assert all(m.affine for m in norms)
    assert net(torch.randn(2, 1, 8, 8, 8)).shape == (2, 2, 8, 8, 8)


def test_norm_none_uses_biases():
    net = UNet(2, 1, 2, NetConfig(channels=(4, 8), norm="none"))
    assert all(m.bias is not None for m in net.modules() if isinstance(m, nn.Conv2d))


def test_gradients_reach_every_parameter():
    net = UNet(2, 1, 3, NetConfig(channels=(4, 8), deep_heads=True), extra_outputs={"v": 1})
    out = net.forward_all(torch.randn(2, 1, 16, 16))
    loss = sum(h.square().mean() for h in out["heads"]) + out["v"].square().mean()
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_bad_config():
    with pytest.raises(ConfigError):
        UNet(2, 1, 2, NetConfig(channels=(4,)))
    with pytest.raises(ConfigError):
        UNet(4, 1, 2, TINY)
    with pytest.raises(ValueError):
        UNet(2, 1, 2, TINY)(torch.randn(1, 1, 8, 8, 8))


def test_factory_and_registry():
    assert "unet" in MODELS
    net = build_network(TINY, 2, 1, 3, extra_outputs={"rater_variance": 1})
    assert isinstance(net, UNet)
    assert "rater_variance" in net.forward_all(torch.randn(1, 1, 16, 16))
    with pytest.raises(UnknownNameError, match="did you mean 'unet'"):
        build_network(NetConfig(name="unnet", channels=(4, 8)), 2, 1, 3)
