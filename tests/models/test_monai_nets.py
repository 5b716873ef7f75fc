"""MONAI networks behind the trustseg protocol (:mod:`trustseg.models.monai_nets`).

The generic contract (shapes, size multiple, declared capabilities, gradients) runs for every registered model
in ``test_contract.py``; here: the MONAI-specific parts (size multiples from the architecture, extra heads
tapped vs widened, dropout, weights round trip), capability refusals, the CLI's ``--set net.name=monai.X``, and
training one epoch under two methods.
"""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest
import torch
from torch import nn
from torch.nn.modules.dropout import _DropoutNd

from tests.engine.test_train import make_data, tiny_cfg
from trustseg.cli.main import build_parser, run_config_from_args
from trustseg.core.errors import ConfigError, UnknownNameError
from trustseg.engine.run import train
from trustseg.inference.predictor import load_predictor
from trustseg.methods.base import build_method
from trustseg.models import MODELS, MONAI_MODELS, NetConfig, build_network, size_multiple
from trustseg.models.monai_wrapper import ChannelSlice

TINY = {
    "monai.UNet": {"channels": (4, 8, 8), "strides": (2, 2), "num_res_units": 1},
    "monai.AttentionUnet": {"channels": (4, 8, 8), "strides": (2, 2)},
    "monai.DynUNet": {"filters": (4, 8, 8), "strides": (1, 2, 2)},
    "monai.SegResNet": {"init_filters": 8, "blocks_down": (1, 1, 1)},
    "monai.SwinUNETR": {"feature_size": 12, "depths": (1, 1, 1, 1), "num_heads": (1, 1, 1, 1), "window_size": 4},
}
HAS_EINOPS = importlib.util.find_spec("einops") is not None
RUNNABLE = [n for n in MONAI_MODELS if n != "monai.SwinUNETR" or HAS_EINOPS]


def _net(name: str, **changes) -> NetConfig:
    return NetConfig(name, {**TINY[name], **changes})


def test_every_monai_model_is_registered():
    assert set(MONAI_MODELS) <= set(MODELS.names()) and set(TINY) == set(MONAI_MODELS)


@pytest.mark.parametrize(
    "name,params,multiple",
    [
        ("monai.UNet", {"channels": (4, 8, 8, 8), "strides": (2, 2, 2)}, 8),
        ("monai.UNet", {"channels": (4, 8), "strides": (3,)}, 3),
        ("monai.AttentionUnet", {"channels": (4, 8, 8), "strides": (2, 2)}, 4),
        ("monai.DynUNet", {"filters": (4, 8, 8, 8), "strides": (1, 2, 2, 2)}, 8),
        ("monai.SegResNet", {"blocks_down": (1, 2, 2, 4)}, 8),
        ("monai.SegResNet", {"blocks_down": (1, 1)}, 2),
        ("monai.SwinUNETR", {}, 32),
        ("monai.SwinUNETR", {"patch_size": 1}, 1),
    ],
)
def test_size_multiple_from_the_architecture(name, params, multiple):
    assert size_multiple(NetConfig(name, params)) == multiple


@pytest.mark.parametrize("name,dims", [(n, 2) for n in RUNNABLE] + [("monai.UNet", 3), ("monai.SegResNet", 3)])
def test_forward_extra_heads_and_refused_sizes(name, dims):
    net = _net(name)
    model = build_network(net, dims, 2, 3, extra_outputs={"v": 1, "w": 2}).eval()
    m = model.size_multiple
    x = torch.randn(1, 2, *((2 * m, m, m)[:dims]))
    out = model(x, all_outputs=True)
    assert out["logits"].shape == (1, 3, *x.shape[2:])
    assert out["v"].shape == (1, 1, *x.shape[2:]) and out["w"].shape == (1, 2, *x.shape[2:])
    assert torch.equal(model(x), out["logits"])
    if m > 1:
        with pytest.raises(ValueError, match=f"size multiple {m}"):
            model(x[..., :-1])


def test_tapped_heads_are_1x1_convs_on_the_final_features():
    model = build_network(_net("monai.SegResNet"), 2, 1, 2, extra_outputs={"v": 1}).eval()
    head = model.extra_heads["v"]
    assert isinstance(head, nn.Conv2d) and head.kernel_size == (1, 1) and head.in_channels == 8
    x = torch.randn(1, 1, 8, 8)
    feats = []
    handle = model.net.conv_final[2].register_forward_pre_hook(lambda _m, a: feats.append(a[0]))
    out = model(x, all_outputs=True)
    handle.remove()
    torch.testing.assert_close(out["v"], head(feats[0]))  # the head reads what the logits' 1x1 conv reads
    assert not model.net.conv_final[2]._forward_pre_hooks  # the tap is removed after each pass


def test_unet_extra_heads_are_widened_output_channels():
    model = build_network(_net("monai.UNet"), 2, 1, 3, extra_outputs={"v": 2}).eval()
    assert isinstance(model.extra_heads["v"], ChannelSlice)
    x = torch.randn(1, 1, 8, 8)
    raw = model.net(x)
    assert raw.shape[1] == 5
    out = model(x, all_outputs=True)
    assert torch.equal(out["logits"], raw[:, :3]) and torch.equal(out["v"], raw[:, 3:5])


@pytest.mark.parametrize("name", RUNNABLE)
def test_dropout_modules_only_when_asked(name):
    plain = build_network(_net(name), 2, 1, 2)
    assert not any(isinstance(m, _DropoutNd) for m in plain.modules()) and "dropout" not in plain.capabilities
    drop = build_network(_net(name, dropout=0.25), 2, 1, 2)
    ps = {float(m.p) for m in drop.modules() if isinstance(m, _DropoutNd)}
    assert ps == {0.25} and "dropout" in drop.capabilities


def test_bad_params_and_names():
    with pytest.raises(UnknownNameError, match="did you mean 'monai.SegResNet'"):
        NetConfig("monai.SegResNt")
    with pytest.raises(ConfigError, match="did you mean 'init_filters'"):
        NetConfig("monai.SegResNet", {"init_filter": 16})
    with pytest.raises(ConfigError, match="multiple of 8"):
        NetConfig("monai.SegResNet", {"init_filters": 12})
    with pytest.raises(ConfigError, match="len\\(channels\\) - 1"):
        NetConfig("monai.UNet", {"channels": (4, 8), "strides": (2, 2)})
    with pytest.raises(ConfigError, match="dropout_where must be 'monai'.*where=null"):
        NetConfig("monai.DynUNet", {"dropout_where": "last"})


@pytest.mark.parametrize("method", ["layer-ensemble"])
def test_methods_needing_deep_heads_are_refused(method):
    with pytest.raises(ConfigError, match="needs a network with deep_heads; monai.SegResNet offers all_outputs"):
        build_method(method, _net("monai.SegResNet"), 2, 1, 2)


def test_mc_dropout_needs_where_null_and_then_builds():
    with pytest.raises(ConfigError, match="where=null"):
        build_method("mc-dropout", _net("monai.DynUNet"), 2, 1, 2).build_model()
    method = build_method("mc-dropout", _net("monai.DynUNet"), 2, 1, 2, {"where": None, "samples": 3})
    model = method.build_model().eval()
    pred = method.predict([model], torch.randn(1, 1, 8, 8))
    assert pred.num_samples == 3 and not torch.equal(pred.probs[0], pred.probs[1])


def test_weights_round_trip_with_weights_only(tmp_path):
    net = _net("monai.AttentionUnet")
    a = build_network(net, 2, 1, 2, extra_outputs={"v": 1}).eval()
    torch.save({"model": a.state_dict()}, tmp_path / "w.pt")
    b = build_network(net, 2, 1, 2, extra_outputs={"v": 1}).eval()
    b.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True)["model"])
    x = torch.randn(1, 1, 8, 8)
    assert torch.equal(a(x), b(x))


def test_cli_set_net_name_starts_from_the_models_defaults(tmp_path):
    args = build_parser().parse_args(
        [
            "train",
            "--out",
            str(tmp_path / "r"),
            "--set",
            "net.name=monai.SegResNet",
            "--set",
            "net.params.init_filters=16",
        ]
    )
    cfg = run_config_from_args(args)
    assert cfg.net.name == "monai.SegResNet" and cfg.net.params["init_filters"] == 16
    assert "channels" not in cfg.net.params  # not the U-Net's parameters
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "r"), "--set", "net.name=monai.DynUNet"])
    assert run_config_from_args(args).net == NetConfig("monai.DynUNet")


@pytest.mark.parametrize(
    "name,method,params",
    [
        ("monai.SegResNet", "softmax", {}),
        ("monai.SegResNet", "edue", {}),
        ("monai.DynUNet", "ensemble", {"members": 2}),
    ],
)
def test_a_monai_backbone_trains_one_epoch_and_predicts(tmp_path, name, method, params):
    data = make_data(tmp_path, cases=6, size=16)
    cfg = dataclasses.replace(tiny_cfg(data, method, params, epochs=1), net=_net(name))
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["method"] == method
    predictor = load_predictor(tmp_path / "run", device="cpu")
    image = torch.randn(1, 18, 20)  # not a multiple of the size multiple: padded and cropped back
    pred = predictor.predict(image)
    assert pred.probs.shape[1:] == (1, predictor.info.num_classes, 18, 20)
    torch.testing.assert_close(pred.probs.sum(2), torch.ones(pred.probs.shape[0], 1, 18, 20))
    if method == "edue":
        assert pred.extras["rater_variance"].shape == (1, 1, 18, 20)
