"""The image-based quality CNN: input stack, network, fit on planted relations, save/load and refusals."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from scipy import stats

from trustseg.core.errors import ConfigError, DataError
from trustseg.models.protocol import Features
from trustseg.quality.cnn import CONFIG_FILE, WEIGHTS_FILE, CNNPredictor
from trustseg.quality.cnn_channels import channel_names, qc_channels
from trustseg.quality.cnn_net import QualityNet
from trustseg.quality.inputs import CaseInput
from trustseg.quality.registry import QC_PREDICTORS


def _disk(shape, centre, radius):
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    c = np.asarray(centre, float).reshape(-1, *([1] * len(shape)))
    return ((grid - c) ** 2).sum(0) < radius**2


def _case(case_id, seg, image=None, maps=None):
    p1 = (seg * 0.9 + 0.05).astype(np.float32)
    probs = torch.tensor(np.stack([1 - p1, p1]))
    img = None if image is None else torch.tensor(image[None], dtype=torch.float32)
    maps = {k: torch.tensor(v, dtype=torch.float32) for k, v in (maps or {}).items()}
    return CaseInput(case_id, probs=probs, seg=torch.tensor(seg).long(), maps=maps, image=img)


def shifted_blobs(n, seed):
    """True Dice = overlap of a bright image blob with a segmentation disk shifted from it by a random offset.

    The segmentation (and its probabilities and entropy) alone is a disk of a fixed radius: its Dice is only
    visible by comparing it with the image. Cases have different sizes (28..39) so resizing is exercised.
    """
    g = np.random.default_rng(seed)
    cases, y = [], []
    for i in range(n):
        s = int(g.integers(28, 40))
        centre = g.uniform(10, s - 10, 2)
        blob = _disk((s, s), centre, 6)
        seg = _disk((s, s), centre + g.uniform(-6, 6, 2), 6)
        image = blob + 0.2 * g.standard_normal((s, s))
        cases.append(_case(f"c{i}", seg, image=image))
        y.append(2 * (blob & seg).sum() / (blob.sum() + seg.sum()))
    return cases, np.array(y)


def map_intensity_3d(n, seed, s=12):
    """3-D cases whose Dice falls linearly with the intensity ``a`` of an uncertainty blob: y = 0.9 - 0.7 a."""
    g = np.random.default_rng(seed)
    cases, y = [], []
    seg = _disk((s,) * 3, (s / 2,) * 3, 3)
    for i in range(n):
        a = g.uniform(0, 1)
        ent = a * _disk((s,) * 3, g.uniform(4, s - 4, 3), 3) + 0.02 * g.standard_normal((s,) * 3)
        cases.append(_case(f"v{i}", seg, maps={"entropy": ent}))
        y.append(0.9 - 0.7 * a)
    return cases, np.array(y)


# ---------------------------------------------------------------- the input stack
def test_channels_order_values_and_orientation():
    g = np.random.default_rng(0)
    p = g.dirichlet([1, 1, 1], size=(6, 5)).transpose(2, 0, 1).astype(np.float32)
    seg = p.argmax(0)
    image = np.stack([g.normal(3, 2, (6, 5)), np.full((6, 5), 7.0)])
    conf = p.max(0)
    inp = CaseInput(
        "a",
        probs=torch.tensor(p),
        seg=torch.tensor(seg),
        maps={"confidence": torch.tensor(conf), "entropy": torch.tensor(-(p * np.log(p)).sum(0))},
        image=torch.tensor(image, dtype=torch.float32),
    )
    x = qc_channels(inp, ["confidence", "entropy"], (6, 5))
    names = channel_names(3, ["confidence", "entropy"], 2)
    assert names == [
        "image.0", "image.1", "fg_prob", "prob.1", "prob.2", "fg_mask", "mask.1", "mask.2",
        "map.confidence", "map.entropy",
    ]  # fmt: skip
    assert x.shape == (len(names), 6, 5) and x.dtype == torch.float32
    ch = dict(zip(names, x.numpy().astype(np.float64)))
    np.testing.assert_allclose(ch["image.0"], stats.zscore(image[0], axis=None), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ch["image.1"], 0.0)  # a constant channel: x - mean
    np.testing.assert_allclose(ch["fg_prob"], 1 - p[0], atol=1e-6)
    np.testing.assert_allclose(ch["prob.2"], p[2], atol=1e-6)
    np.testing.assert_array_equal(ch["fg_mask"], seg > 0)
    np.testing.assert_array_equal(ch["mask.1"], seg == 1)
    np.testing.assert_allclose(ch["map.confidence"], 1 - conf, atol=1e-6)  # oriented as an uncertainty
    assert qc_channels(inp, [], (6, 5), image_channels=0).shape[0] == 6  # framework (a): no image channel


def test_channels_resize_masks_nearest_and_continuous_linear():
    seg = np.zeros((10, 14), int)
    seg[2:7, 3:9] = 1
    ramp = np.tile(np.linspace(0, 1, 14, dtype=np.float32), (10, 1))
    x = qc_channels(_case("a", seg, maps={"entropy": ramp}), ["entropy"], (20, 28))
    assert x.shape == (3, 20, 28)
    assert set(np.unique(x[1].numpy())) == {0.0, 1.0}  # the mask stays binary
    np.testing.assert_array_equal(x[1].numpy(), np.kron(seg, np.ones((2, 2))))  # exact 2x nearest upsampling
    m = x[2].numpy()  # linear in the column: bilinear interpolation of a ramp is a ramp (inside the border)
    np.testing.assert_allclose(np.diff(m[:, 1:-1], 2, axis=1), 0, atol=1e-6)
    assert m.min() >= 0 and m.max() <= 1


def test_channels_refuse_what_is_missing_or_broken():
    seg = np.zeros((8, 8), int)
    with pytest.raises(DataError, match="'a'.*no uncertainty map"):
        qc_channels(_case("a", seg), ["entropy"], (8, 8))
    with pytest.raises(DataError, match="'a'.*no image"):
        qc_channels(_case("a", seg), [], (8, 8), image_channels=1)
    with pytest.raises(DataError, match="2 spatial axes"):
        qc_channels(_case("a", seg), [], (8, 8, 8))
    bad = np.zeros((8, 8))
    bad[1, 1] = np.nan
    with pytest.raises(DataError, match=r"'a'.*non-finite.*map\.entropy"):
        qc_channels(_case("a", seg, maps={"entropy": bad}), ["entropy"], (8, 8))


# ---------------------------------------------------------------- the network
@pytest.mark.parametrize("dims", [2, 3])
def test_quality_net_shapes_outputs_and_feature_contract(dims):
    x = torch.randn(3, 4, *([9] * dims))
    for output, check in (("sigmoid", lambda v: (v > 0) & (v < 1)), ("softplus", lambda v: v > 0)):
        net = QualityNet(4, spatial_dims=dims, width=4, depth=3, output=output).eval()
        y = net(x)
        assert y.shape == (3,) and bool(check(y).all())
        torch.testing.assert_close(y, net.activate(net.score(x)))
    assert isinstance(net, Features)
    layers = net.feature_layers()
    modules = dict(net.named_modules())
    assert list(layers) == ["blocks.0", "blocks.1", "blocks.2"]
    assert all(modules[name] is m for name, m in layers.items())
    feats = net.forward_features(x)
    assert [tuple(f.shape[1:]) for f in feats.values()] == [(4, *[9] * dims), (8, *[5] * dims), (16, *[3] * dims)]
    torch.testing.assert_close(net.embed(x), feats["blocks.2"].flatten(2).mean(-1))
    with pytest.raises(ValueError, match="expects"):
        net(torch.zeros(1, 3, *([9] * dims)))


@pytest.mark.parametrize(
    "kwargs", [{"spatial_dims": 1}, {"output": "relu"}, {"width": 0}, {"depth": 1.5}, {"in_channels": True}]
)
def test_quality_net_refuses_bad_arguments(kwargs):
    with pytest.raises(ConfigError):
        QualityNet(**{"in_channels": 2, **kwargs})


# ---------------------------------------------------------------- fitting
def test_cnn_recovers_a_planted_image_relation_that_needs_the_image():
    """Held-out Pearson r > 0.9 with the image; < 0.5 without it.

    The targets have spread 0.13 on 48 held-out cases: under no relation r has standard deviation 1/sqrt(47) =
    0.15, so r > 0.9 is 6 of those; the overlap is a smooth function of the offset that the image shows, so a
    working predictor is close to 1 (0.99 here). Without the image the stack holds a disk of a fixed radius at a
    random place, which says nothing about the overlap: r stays in the noise band.
    """
    train, y_train = shifted_blobs(128, 0)
    test, y_test = shifted_blobs(48, 1)
    kw = {"size": (32, 32), "width": 8, "depth": 3, "epochs": 20, "lr": 3e-3, "device": "cpu"}
    with_image = CNNPredictor([], use_image=True, **kw).fit(train, y_train)
    pred = with_image.predict(test)
    assert pred.shape == (48,) and pred.dtype == np.float64 and ((pred > 0) & (pred < 1)).all()
    assert stats.pearsonr(pred, y_test)[0] > 0.9
    assert with_image.losses[-1] < with_image.losses[0] / 4
    without = CNNPredictor([], use_image=False, **kw).fit(train, y_train)
    assert without.channels == ["fg_prob", "fg_mask"]
    assert abs(stats.pearsonr(without.predict(test), y_test)[0]) < 0.5


def test_cnn_3d_map_intensity_relation_save_load_and_determinism(tmp_path):
    """3-D: Dice driven by an uncertainty blob's intensity (r > 0.8 held out: exact linear relation, 16 cases);
    save -> load gives identical predictions, and a second fit with the same seed the same weights."""
    train, y_train = map_intensity_3d(40, 0)
    test, y_test = map_intensity_3d(16, 1)
    kw = {"size": (12, 12, 12), "use_image": False, "width": 4, "depth": 2, "epochs": 12, "lr": 3e-3}
    p = CNNPredictor(["entropy"], device="cpu", **kw).fit(train, y_train)
    pred = p.predict(test)
    assert p.spatial_dims == 3 and pred.shape == (16,)
    assert stats.pearsonr(pred, y_test)[0] > 0.8
    paths = p.save(tmp_path / "qc")
    assert sorted(x.name for x in paths) == [CONFIG_FILE, WEIGHTS_FILE]
    assert sorted(x.name for x in (tmp_path / "qc").iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]  # no temp left
    meta = json.loads((tmp_path / "qc" / CONFIG_FILE).read_text())
    assert meta["params"] == p.params() and meta["channels"] == ["fg_prob", "fg_mask", "map.entropy"]
    assert meta["spatial_dims"] == 3 and isinstance(meta["format_version"], int)
    q = CNNPredictor.load(tmp_path / "qc", device="cpu")
    np.testing.assert_array_equal(q.predict(test), pred)
    np.testing.assert_array_equal(q.embeddings(test), p.embeddings(test))
    again = CNNPredictor(["entropy"], device="cpu", **kw).fit(train, y_train)
    np.testing.assert_array_equal(again.predict(test), pred)


def test_hd95_target_is_positive_and_on_the_target_scale():
    train, _ = map_intensity_3d(8, 0, s=8)
    y = np.linspace(2.0, 30.0, 8)
    p = CNNPredictor(["entropy"], size=(8, 8, 8), use_image=False, width=2, depth=1, epochs=1, target="hd95")
    pred = p.fit(train, y).predict(train)
    assert p.net is not None and p.net.output == "softplus" and p.y_scale == pytest.approx(y.mean())
    assert (pred > 0).all() and 0.3 * y.mean() < pred.mean() < 3 * y.mean()  # the head starts at the mean target


def test_registered_as_cnn():
    assert QC_PREDICTORS.get("cnn") is CNNPredictor
    assert dict(QC_PREDICTORS.meta("cnn")) == {"input": "image", "file": WEIGHTS_FILE}


def test_fit_and_constructor_refuse_bad_input():
    cases, y = shifted_blobs(4, 0)
    with pytest.raises(DataError, match="4 cases but 3"):
        CNNPredictor().fit(cases, y[:3])
    with pytest.raises(DataError, match="non-finite.*'c1'"):
        CNNPredictor().fit(cases, np.array([0.5, np.nan, 0.5, 0.5]))
    with pytest.raises(DataError, match="must lie in"):
        CNNPredictor().fit(cases, y + 1)
    no_image = [_case("n", np.zeros((8, 8), int))]
    with pytest.raises(DataError, match="'n'.*no image"):
        CNNPredictor().fit(no_image, np.array([0.5]))
    with pytest.raises(ConfigError, match="not fitted"):
        CNNPredictor().predict(cases)
    for kwargs in ({"target": "iou"}, {"size": (4,)}, {"epochs": -1}, {"lr": 0.0}, {"map_names": "entropy"}):
        with pytest.raises(ConfigError):
            CNNPredictor(**kwargs)
    with pytest.raises(KeyError, match="did you mean"):
        CNNPredictor(["entropie"])


# ---------------------------------------------------------------- refusing foreign files
class Foreign:
    """A pickled object that weights_only loading must refuse."""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cnn") / "qc"
    cases, y = map_intensity_3d(6, 0, s=8)
    CNNPredictor(["entropy"], size=(8, 8, 8), use_image=False, width=2, depth=1, epochs=1).fit(cases, y).save(folder)
    return folder


def _break(folder, how, tmp_path):
    pt, js = folder / WEIGHTS_FILE, folder / CONFIG_FILE
    if how == "missing weights":
        pt.unlink()
    elif how == "missing json":
        js.unlink()
    elif how == "truncated weights":
        pt.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    elif how == "pickled object":
        torch.save({"net": Foreign()}, pt)
    elif how == "plain pickle":
        pt.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    elif how == "tensor, not a dict":
        torch.save(torch.zeros(3), pt)
    elif how == "another shape":
        cases, y = map_intensity_3d(6, 0, s=8)
        other = CNNPredictor(["entropy"], size=(8, 8, 8), use_image=False, width=3, depth=1, epochs=0)
        other.fit(cases, y).save(tmp_path / "other")
        shutil.copy(tmp_path / "other" / WEIGHTS_FILE, pt)
    elif how == "truncated json":
        js.write_text(js.read_text()[:40])
    elif how == "json of another kind":
        js.write_text(json.dumps({"kind": "trustseg.quality.tabular", "format_version": 1}))
    elif how == "json without params":
        meta = json.loads(js.read_text())
        del meta["params"]
        js.write_text(json.dumps(meta))
    elif how == "json channels disagree":
        meta = json.loads(js.read_text())
        meta["channels"] = ["fg_prob"]
        js.write_text(json.dumps(meta))


HOWS = {
    "missing weights": (WEIGHTS_FILE, "missing"),
    "missing json": (CONFIG_FILE, "missing"),
    "truncated weights": (WEIGHTS_FILE, "truncated"),
    "pickled object": (WEIGHTS_FILE, "pickled object.*Foreign.*weights_only"),
    "plain pickle": (WEIGHTS_FILE, "not a torch checkpoint"),
    "tensor, not a dict": (WEIGHTS_FILE, "not a state dict"),
    "another shape": (WEIGHTS_FILE, "do not fit"),
    "truncated json": (CONFIG_FILE, "not valid JSON"),
    "json of another kind": (CONFIG_FILE, "tabular"),
    "json without params": (CONFIG_FILE, "not a valid"),
    "json channels disagree": (CONFIG_FILE, "not a valid"),
}


@pytest.mark.parametrize("how", sorted(HOWS))
def test_load_refuses_missing_truncated_and_foreign_files(saved, how, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(saved, folder)
    CNNPredictor.load(folder, device="cpu")  # intact: loads
    _break(folder, how, tmp_path)
    name, words = HOWS[how]
    with pytest.raises(ConfigError, match=words) as err:
        CNNPredictor.load(folder, device="cpu")
    assert str(folder / name) in str(err.value)


def test_predict_refuses_cases_of_another_class_count(saved):
    p = CNNPredictor.load(saved, device="cpu")
    probs = torch.full((3, 8, 8, 8), 1 / 3)
    inp = CaseInput("k3", probs=probs, seg=torch.zeros(8, 8, 8).long(), maps={"entropy": torch.zeros(8, 8, 8)})
    with pytest.raises(DataError, match="'k3'.*3 classes"):
        p.predict([inp])
