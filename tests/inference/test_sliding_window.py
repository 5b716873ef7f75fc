"""Sliding-window prediction: equal to whole-image prediction for a pointwise model, coverage, padding, blending."""

from __future__ import annotations

import pytest
import torch

from trustseg.core.predictive import Predictive
from trustseg.inference.sliding_window import blend_weights, sliding_window_predict, window_starts


def pointwise(dims: int, k: int = 3, c: int = 2):
    """A 1x1 convolution: its prediction at a voxel depends only on that voxel, wherever the window is."""
    conv = (torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d)(c, k, 1)

    def fn(x: torch.Tensor) -> Predictive:
        z = conv(x)
        return Predictive(
            probs=torch.stack([torch.softmax(z, 1), torch.softmax(2 * z, 1)]),  # M = 2
            alpha=torch.nn.functional.softplus(z) + 1,
            extras={"rater_variance": z[:, :1].sigmoid()},
        )

    return torch.no_grad()(fn)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize(
    ("shape", "patch"),
    [((13, 17, 11), (8, 8, 8)), ((5, 6, 7), (8, 8, 8)), ((9, 16, 4), (4, 8, 8)), ((15, 10), (8, 6))],
)
def test_equals_whole_image_for_pointwise_model(shape, patch, blend):
    fn = pointwise(len(shape))
    x = torch.randn(2, 2, *shape)
    whole = fn(x)
    sw = sliding_window_predict(fn, x, patch, overlap=0.5, blend=blend)
    assert sw.probs.shape == (2, 2, 3, *shape) and sw.alpha.shape == (2, 3, *shape)
    assert sw.extras["rater_variance"].shape == (2, 1, *shape)
    torch.testing.assert_close(sw.probs, whole.probs, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sw.alpha, whole.alpha, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sw.extras["rater_variance"], whole.extras["rater_variance"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sw.probs.sum(2), torch.ones(2, 2, *shape))


def test_window_starts_cover_and_end_at_border():
    assert window_starts(12, 8, 4) == [0, 4]
    assert window_starts(13, 8, 4) == [0, 4, 5]
    assert window_starts(5, 8, 4) == [0]
    assert window_starts(8, 8, 4) == [0]
    for size, patch, stride in [(13, 8, 4), (100, 16, 5), (17, 3, 3)]:
        starts = window_starts(size, patch, stride)
        covered = torch.zeros(size, dtype=torch.bool)
        for s in starts:
            covered[s : s + patch] = True
        assert covered.all() and starts[-1] + patch == size


def test_constant_blend_averages_overlapping_windows():
    # Each window predicts its own start offset along the last axis; windows start at 0 and 4 (patch 8, stride 4).
    def fn(x: torch.Tensor) -> Predictive:
        start = float(x[0, 0, 0, 0])  # the image holds each voxel's coordinate
        probs = torch.ones(1, x.shape[0], 2, *x.shape[2:]) / 2
        return Predictive(probs=probs, extras={"start": torch.full((x.shape[0], 1, *x.shape[2:]), start)})

    x = torch.arange(12.0).view(1, 1, 1, 12)
    out = sliding_window_predict(fn, x, (1, 8), overlap=0.5, blend="constant").extras["start"][0, 0, 0]
    assert out.tolist() == [0.0] * 4 + [2.0] * 4 + [4.0] * 4


def test_gaussian_weights_and_bad_arguments():
    w = blend_weights((9, 9), "gaussian")
    assert w.shape == (9, 9) and w[4, 4] == 1.0 and w.min() > 0 and w[0, 0] < w[4, 4]
    assert torch.equal(blend_weights((3, 4), "constant"), torch.ones(3, 4))
    fn = pointwise(2)
    with pytest.raises(ValueError, match="axes"):
        sliding_window_predict(fn, torch.zeros(1, 2, 8, 8), (4, 4, 4))
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_predict(fn, torch.zeros(1, 2, 8, 8), (4, 4), overlap=1.0)
    with pytest.raises(ValueError, match="blend"):
        blend_weights((4, 4), "median")
