"""Image-level scores: each aggregator's convention against scipy/numpy, the old OOD code path, agreement scores."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.ndimage
import torch

from trustseg import Predictive
from trustseg.core.errors import ConfigError
from trustseg.measures import AGGREGATORS, MEASURES
from trustseg.measures.aggregate import aggregate
from trustseg.measures.image import (
    DEFAULT_AGGREGATORS,
    image_score,
    image_scores,
    layer_agreement,
    pooled_foreground_dice,
    sample_agreement,
)
from trustseg.measures.pixel import uncertainty_map
from trustseg.methods import layer_ensemble
from trustseg.metrics import overlap
from trustseg.ood import scores as ood_scores


def _preds() -> list[Predictive]:
    """Seeded predictions of every kind: softmax, samples, Dirichlet, Dirichlet + samples, EDUE extras, 3D."""
    g = torch.Generator().manual_seed(0)
    out = []
    for m, k, shape, alpha, extra in [
        (1, 2, (12, 12), False, False),
        (4, 3, (10, 11), False, True),
        (1, 3, (9, 10), True, False),
        (3, 3, (6, 7, 8), True, False),
        (5, 2, (16, 16), False, False),
    ]:
        probs = torch.softmax(3 * torch.randn(2 if alpha else m, 2, k, *shape, generator=g), 2)[:m]
        a = torch.nn.functional.softplus(3 * torch.randn(2, k, *shape, generator=g)) + 1 if alpha else None
        extras = {"rater_variance": torch.rand(2, 1, *shape, generator=g)} if extra else {}
        out.append(Predictive(probs=probs if (m > 1 or not alpha) else None, alpha=a, extras=extras))
    return out


def old_image_scores(pred: Predictive, names: list[str], aggregators, layer_heads: bool) -> dict[str, torch.Tensor]:
    """ood/scores.py:image_scores as of the base commit (with layer_agreement passed in)."""
    fg = pred.hard() > 0
    out = {}
    for name in names:
        umap = uncertainty_map(pred, name).float()
        for agg in aggregators:
            kw = {"dilate": 2} if agg == "fg_mean" else {}
            out[f"{name}:{agg}"] = aggregate(umap, agg, mask=fg if agg == "fg_mean" else None, **kw)
    if pred.num_samples > 1:
        hard = pred.probs.argmax(2)
        m = hard.shape[0]
        vals = [pooled_foreground_dice(hard[i], hard[j]) for i in range(m) for j in range(i + 1, m)]
        out["sample_disagreement"] = 1.0 - torch.stack(vals).mean(0).float()
    if layer_heads and pred.num_samples > 1:
        out["layer_disagreement"] = 1.0 - layer_agreement(pred.probs)
    return out


def old_available(pred: Predictive) -> list[str]:  # measures/pixel.py:available_measures as of the base commit
    names = ["confidence", "entropy"]
    if pred.num_samples > 1 or pred.alpha is not None:
        names += ["expected_entropy", "mi", "epkl", "variance"]
    if pred.alpha is not None:
        names.append("vacuity")
    if "rater_variance" in pred.extras:
        names.append("predicted_variance")
    return names


@pytest.mark.parametrize("layer_heads", [False, True])
def test_image_scores_equal_the_old_code_path(layer_heads):
    aggs = ("mean", "fg_mean", "sum", "patch_max")
    for pred in _preds():
        names = old_available(pred)
        new = image_scores(pred, aggregators=aggs, layer_heads=layer_heads)
        old = old_image_scores(pred, names, aggs, layer_heads)
        assert list(new) == list(old)
        for key in old:
            assert new[key].dtype == old[key].dtype and torch.equal(new[key], old[key]), key
        assert list(image_scores(pred)) == [f"{n}:{a}" for n in names for a in DEFAULT_AGGREGATORS] + (
            ["sample_disagreement"] if pred.num_samples > 1 else []
        )


def _fg_mean_reference(u: np.ndarray, fg: np.ndarray, dilate: int) -> np.ndarray:
    out = []
    for ub, fb in zip(u, fg):
        cube = np.ones((2 * dilate + 1,) * ub.ndim, dtype=bool)
        grown = scipy.ndimage.binary_dilation(fb, structure=cube)
        out.append(ub[grown].mean() if grown.any() else ub.mean())
    return np.array(out)


@pytest.mark.parametrize("shape", [(2, 15, 13), (2, 7, 8, 9)])
def test_image_score_conventions_against_scipy_and_numpy(shape):
    g = torch.Generator().manual_seed(1)
    u = torch.rand(*shape, generator=g, dtype=torch.float64)
    fg = torch.zeros(shape, dtype=torch.bool)
    fg[(0,) + (slice(2, 4),) * (len(shape) - 1)] = True  # image 1 has no foreground: whole-image mean
    un, fn = u.numpy(), fg.numpy()
    np.testing.assert_allclose(image_score(u, "mean", fg).numpy(), un.reshape(2, -1).mean(1), rtol=1e-12)
    np.testing.assert_allclose(image_score(u, "sum", fg).numpy(), un.reshape(2, -1).sum(1), rtol=1e-12)
    np.testing.assert_allclose(image_score(u, "fg_mean", fg).numpy(), _fg_mean_reference(un, fn, 2), rtol=1e-12)
    np.testing.assert_allclose(
        image_score(u, "fg_mean", fg, dilate=0).numpy(), _fg_mean_reference(un, fn, 0), rtol=1e-12
    )
    win = tuple(min(8, n) for n in shape[1:])
    ref = [
        max(ub[tuple(slice(o, o + w) for o, w in zip(origin, win))].mean() for origin in itertools.product(*starts))
        for ub in un
        for starts in [[range(n - w + 1) for n, w in zip(ub.shape, win)]]
    ]
    np.testing.assert_allclose(image_score(u, "patch_max").numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(
        image_score(u, "frac_above", threshold=0.7).numpy(), (un > 0.7).reshape(2, -1).mean(1), rtol=1e-12
    )


def test_image_score_needs():
    u = torch.rand(1, 6, 6)
    with pytest.raises(ConfigError, match="foreground"):
        image_score(u, "fg_mean")
    with pytest.raises(ConfigError, match="threshold"):
        image_score(u, "frac_above")
    with pytest.raises(KeyError, match="did you mean"):
        image_score(u, "fg_maen")


def test_pooled_foreground_dice_against_a_direct_count():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randint(0, 3, (2, 4, 50), generator=g)
    for x, y in ((a, b), (a, a), (torch.zeros_like(a), torch.zeros_like(a)), (a, torch.zeros_like(a))):
        ref = []
        for xi, yi in zip(x.numpy(), y.numpy()):
            inter = sum(((xi == k) & (yi == k)).sum() for k in (1, 2))
            den = sum((xi == k).sum() + (yi == k).sum() for k in (1, 2))
            ref.append(2 * inter / den if den else 1.0)
        np.testing.assert_allclose(pooled_foreground_dice(x, y).numpy(), ref, rtol=1e-12)


def _confident(classes: torch.Tensor, k: int = 2) -> torch.Tensor:
    return torch.nn.functional.one_hot(classes, k).movedim(-1, 1).float() * 0.98 + 0.01


def test_sample_and_layer_agreement_values():
    seg = torch.zeros(1, 8, 8, dtype=torch.long)
    seg[:, 2:6, 2:6] = 1
    half = seg.clone()
    half[:, 2:6, 2:4] = 0
    assert torch.equal(sample_agreement(Predictive(probs=_confident(seg)[None])), torch.ones(1))
    two = torch.stack([_confident(seg), _confident(half)])
    assert sample_agreement(Predictive(probs=two)).item() == pytest.approx(2 * 8 / 24)
    # three heads seg, half, seg: curve d = (2/3, 2/3), x-spacing 1 -> trapezoid area 2/3
    heads = torch.stack([_confident(seg), _confident(half), _confident(seg)])
    assert layer_agreement(heads).item() == pytest.approx(2 / 3)
    assert layer_agreement(two).item() == pytest.approx(2 / 3)  # H = 2: the single Dice
    # mean pairwise agreement of the three: pairs (seg, half), (seg, seg), (half, seg)
    assert sample_agreement(Predictive(probs=heads)).item() == pytest.approx((2 / 3 + 1 + 2 / 3) / 3)


def test_moved_names_are_the_same_objects_where_they_used_to_live():
    assert ood_scores.image_scores is image_scores and ood_scores.sample_agreement is sample_agreement
    assert layer_ensemble.layer_agreement is layer_agreement
    assert overlap.pooled_foreground_dice is pooled_foreground_dice
    assert set(DEFAULT_AGGREGATORS) <= set(AGGREGATORS.names()) and "entropy" in MEASURES
