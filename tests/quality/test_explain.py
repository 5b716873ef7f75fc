"""Interpretation of the quality CNN: Grad-CAM (analytic, planted region, shapes), embeddings, figures."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np
import pytest
import torch
from scipy import ndimage, stats
from torch import nn

from trustseg.core.errors import ConfigError, DataError
from trustseg.quality.cnn import CNNPredictor
from trustseg.quality.cnn_net import QualityNet
from trustseg.quality.explain import (
    cnn_grad_cams,
    embed,
    grad_cam,
    largest_cam_slice,
    plot_embedding,
    plot_grad_cam,
)
from trustseg.quality.inputs import CaseInput

PNG = b"\x89PNG\r\n\x1a\n"


class Linear1x1(nn.Module):
    """y = Σ_c coef_c · mean(A_c), A = conv1x1(x) (weights w, bias b): Grad-CAM is relu(Σ_c coef_c A_c) / max."""

    def __init__(self, stride=1):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1, stride=stride)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.conv.bias.copy_(torch.tensor([0.0, 0.3]))
        self.coef = torch.tensor([0.5, 2.0])

    def feature_layers(self):
        return {"conv": self.conv}

    def forward(self, x):
        return self.conv(x).mean((2, 3)) @ self.coef


@pytest.mark.parametrize("negate", [False, True])
def test_grad_cam_matches_the_analytic_map(negate):
    x = np.random.default_rng(0).normal(size=(7, 9))
    a = np.stack([x, -x + 0.3])  # the activation, by hand
    ref = np.maximum((-1 if negate else 1) * (0.5 * a[0] + 2.0 * a[1]), 0)
    cam = grad_cam(Linear1x1(), torch.tensor(x[None], dtype=torch.float32), negate=negate)
    np.testing.assert_allclose(cam.numpy(), ref / ref.max(), atol=1e-5)


def test_grad_cam_upsamples_to_the_input_and_leaves_the_network_as_it_was():
    net = Linear1x1(stride=2).train()
    cam = grad_cam(net, torch.randn(1, 11, 8), layer="conv")
    assert cam.shape == (11, 8) and 0 <= float(cam.min()) and float(cam.max()) == pytest.approx(1.0)
    assert net.training and all(p.grad is None for p in net.parameters())
    with pytest.raises(ConfigError, match="unknown layer 'fc'.*conv"):
        grad_cam(net, torch.randn(1, 8, 8), layer="fc")
    with pytest.raises(ConfigError, match="feature_layers"):
        grad_cam(nn.Conv2d(1, 1, 1), torch.randn(1, 8, 8))


@pytest.mark.parametrize("dims", [2, 3])
def test_grad_cam_of_quality_net_every_layer_2d_and_3d(dims):
    net = QualityNet(3, spatial_dims=dims, width=4, depth=3)
    x = torch.randn(3, *([10] * dims))
    for layer in [None, *net.feature_layers()]:
        cam = grad_cam(net, x, layer=layer, negate=layer == "blocks.1")
        assert cam.shape == x.shape[1:] and float(cam.min()) >= 0 and float(cam.max()) <= 1


def _blob_cases(n, seed):
    """Dice = 0.9 - 0.7 a, a = intensity of an uncertainty blob (radius 5) at a random place; sizes 28..36."""
    g = np.random.default_rng(seed)
    cases, y, blobs = [], [], []
    for i in range(n):
        s = int(g.integers(28, 37))
        yy, xx = np.mgrid[:s, :s]
        cy, cx = g.uniform(8, s - 8, 2)
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 < 25
        seg = (yy - s / 2) ** 2 + (xx - s / 2) ** 2 < 64
        a = g.uniform(0, 1)
        p1 = (seg * 0.9 + 0.05).astype(np.float32)
        ent = (a * blob + 0.02 * g.standard_normal((s, s))).astype(np.float32)
        probs = torch.tensor(np.stack([1 - p1, p1]))
        cases.append(CaseInput(f"b{i}", probs=probs, seg=torch.tensor(seg).long(), maps={"entropy": torch.tensor(ent)}))
        y.append(0.9 - 0.7 * a)
        blobs.append(blob)
    return cases, np.array(y), blobs


@pytest.fixture(scope="module")
def blob_model():
    cases, y, _ = _blob_cases(96, 0)
    kw = {"size": (32, 32), "use_image": False, "width": 8, "depth": 2, "epochs": 15, "lr": 3e-3, "device": "cpu"}
    return CNNPredictor(["entropy"], **kw).fit(cases, y)


def test_grad_cam_peaks_on_the_planted_region(blob_model):
    """Only the blob carries the quality signal; the map of what lowers the predicted Dice (negate) must sit on it.

    Checked on held-out cases whose blob matters (a > 0.29, Dice < 0.7): the CAM's maximum lies in the blob
    (dilated by 3 pixels, the receptive-field halo of the 3x3 convolutions), which holds most of its mass
    (> 60%; the dilated blob is ~15% of the image).
    """
    cases, y, blobs = _blob_cases(16, 1)
    assert stats.pearsonr(blob_model.predict(cases), y)[0] > 0.9
    cams = cnn_grad_cams(blob_model, cases, negate=True)
    checked = 0
    for cam, blob, inp, dice in zip(cams, blobs, cases, y):
        assert cam.shape == inp.spatial_shape and 0 <= float(cam.min()) and float(cam.max()) <= 1
        if dice >= 0.7:
            continue
        near = ndimage.binary_dilation(blob, iterations=3)
        c = cam.numpy()
        assert near.reshape(-1)[int(c.argmax())], inp.case_id
        assert c[near].sum() > 0.6 * c.sum(), inp.case_id
        checked += 1
    assert checked >= 5


def test_cnn_grad_cams_refuses_an_unfitted_predictor():
    with pytest.raises(ConfigError, match="not fitted"):
        cnn_grad_cams(CNNPredictor(), [])


@pytest.mark.skipif(importlib.util.find_spec("captum") is None, reason="captum is not installed")
def test_grad_cam_agrees_with_captum():
    from captum.attr import LayerAttribution, LayerGradCam

    net = QualityNet(2, spatial_dims=2, width=4, depth=3).eval()
    x = torch.randn(2, 16, 16)
    attr = LayerGradCam(net.score, net.feature_layers()["blocks.2"]).attribute(x[None], relu_attributions=True)
    ref = LayerAttribution.interpolate(attr, (16, 16), interpolate_mode="bilinear")[0, 0].detach()
    torch.testing.assert_close(grad_cam(net, x), ref / ref.max() if ref.max() > 0 else ref)


# ---------------------------------------------------------------- embeddings
@pytest.fixture
def no_umap(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` raises ImportError


def test_pca_embedding_matches_svd_of_the_standardised_features(no_umap):
    X = np.random.default_rng(0).normal(size=(20, 5)) * [1, 10, 100, 0.1, 1] + [0, 5, 0, 0, -3]
    emb, used = embed(X)
    assert used == "pca" and emb.shape == (20, 2)
    Z = (X - X.mean(0)) / X.std(0)
    u, s, _ = np.linalg.svd(Z, full_matrices=False)
    for j in range(2):  # equal up to the sign of each component
        assert min(np.abs(emb[:, j] - u[:, j] * s[j]).max(), np.abs(emb[:, j] + u[:, j] * s[j]).max()) < 1e-8
    np.testing.assert_array_equal(embed(X, seed=0)[0], emb)
    one, _ = embed(X[:, :1], method="pca")  # one feature: second coordinate 0
    assert one.shape == (20, 2) and (one[:, 1] == 0).all()
    const = embed(np.c_[X[:, :2], np.ones(20)], method="pca")[0]  # a constant column is ignored, not a NaN
    assert np.isfinite(const).all()


def test_umap_missing_falls_back_to_pca_or_refuses_when_asked(no_umap):
    assert embed(np.eye(12), method="auto")[1] == "pca"
    with pytest.raises(ConfigError, match="umap-learn"):
        embed(np.eye(12), method="umap")


def test_umap_is_used_when_installed(monkeypatch):
    calls = []

    class FakeUMAP:
        def __init__(self, **kw):
            calls.append(kw)

        def fit_transform(self, Z):
            return Z[:, :2] * 2

    monkeypatch.setitem(sys.modules, "umap", types.SimpleNamespace(UMAP=FakeUMAP))
    X = np.random.default_rng(1).normal(size=(12, 4))
    emb, used = embed(X, seed=7)
    assert used == "umap" and calls == [{"n_components": 2, "n_neighbors": 11, "random_state": 7}]
    np.testing.assert_allclose(emb, 2 * ((X - X.mean(0)) / X.std(0))[:, :2])
    assert embed(X[:5], method="auto")[1] == "pca"  # too few cases for UMAP unless asked
    assert embed(X[:5], method="umap")[1] == "umap" and calls[-1]["n_neighbors"] == 4


@pytest.mark.parametrize(
    ("X", "method", "error", "words"),
    [
        (np.zeros((2, 3)), "pca", DataError, "at least 3 cases, got 2"),
        (np.zeros(5), "pca", DataError, r"\(N, F\)"),
        (np.full((4, 2), np.nan), "pca", DataError, "finite"),
        (np.zeros((4, 2)), "tsne", ConfigError, "method"),
    ],
)
def test_embed_refuses_bad_input(X, method, error, words):
    with pytest.raises(error, match=words):
        embed(X, method=method)


# ---------------------------------------------------------------- figures
def test_plot_embedding_writes_a_png(tmp_path):
    emb = np.random.default_rng(0).normal(size=(10, 2))
    colour = np.linspace(0, 1, 10)
    colour[3] = np.nan
    path = plot_embedding(emb, colour, tmp_path / "fig" / "emb.png", "true Dice", "cases")
    assert path.read_bytes()[:8] == PNG and [p.name for p in path.parent.iterdir()] == ["emb.png"]
    with pytest.raises(DataError, match="N colours"):
        plot_embedding(emb, colour[:5], tmp_path / "bad.png")


def test_plot_grad_cam_2d_3d_and_without_image(tmp_path):
    seg = np.zeros((12, 12), int)
    seg[3:7, 3:7], seg[8:10, 8:11] = 1, 2
    cam = np.random.default_rng(0).uniform(size=(12, 12))
    assert plot_grad_cam(np.ones((12, 12)), cam, seg, tmp_path / "a.png", "case a").read_bytes()[:8] == PNG
    assert plot_grad_cam(None, torch.tensor(cam), torch.tensor(seg), tmp_path / "b.png").read_bytes()[:8] == PNG
    cam3 = np.zeros((5, 12, 12))
    cam3[3, 2:4, 2:4] = 1.0
    cam3[1] = 0.01
    assert largest_cam_slice(cam3) == 3
    seg3 = np.repeat(seg[None], 5, 0)
    assert plot_grad_cam(np.ones((5, 12, 12)), cam3, seg3, tmp_path / "c.png").read_bytes()[:8] == PNG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "c.png"]
    with pytest.raises(DataError, match="one 2D or 3D shape"):
        plot_grad_cam(np.ones((12, 11)), cam, seg, tmp_path / "d.png")
