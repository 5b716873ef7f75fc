"""Dice / IoU per class, the confusion-count accumulator and Dice against several raters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score, jaccard_score

from trustseg.core.errors import DataError
from trustseg.metrics import METRICS
from trustseg.metrics.overlap import (
    ConfusionCounts,
    consensus_dice,
    dice,
    dice_vs_raters,
    iou,
    majority_vote,
    nanmean,
)


def _random_maps(seed: int, shape=(6, 7, 5), k_used: int = 3):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, k_used, shape, generator=g), torch.randint(0, k_used, shape, generator=g)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dice_iou_match_sklearn_per_class(seed):
    pred, target = _random_maps(seed)  # classes 0..2 used, class 3 absent from both
    labels = list(range(4))
    ref_f1 = f1_score(target.flatten(), pred.flatten(), labels=labels, average=None, zero_division=1.0)
    ref_j = jaccard_score(target.flatten(), pred.flatten(), labels=labels, average=None, zero_division=1.0)
    np.testing.assert_allclose(dice(pred, target, 4, include_background=True).numpy(), ref_f1, rtol=1e-12)
    np.testing.assert_allclose(iou(pred, target, 4, include_background=True).numpy(), ref_j, rtol=1e-12)
    assert dice(pred, target, 4).shape == (3,)
    np.testing.assert_allclose(dice(pred.numpy(), target.numpy(), 4).numpy(), ref_f1[1:], rtol=1e-12)


def test_dice_matches_monai():
    from monai.metrics import compute_dice

    pred, target = _random_maps(3, shape=(9, 8))
    oh = lambda x: torch.nn.functional.one_hot(x, 3).permute(2, 0, 1)[None].float()  # noqa: E731
    ref = compute_dice(oh(pred), oh(target), include_background=True)[0]
    np.testing.assert_allclose(dice(pred, target, 3, include_background=True).numpy(), ref.numpy(), rtol=1e-6)


def test_batched_equals_per_item():
    pred, target = _random_maps(4, shape=(3, 5, 6))
    batched = dice(pred, target, 3, batch=True)
    assert batched.shape == (3, 2)
    for b in range(3):
        torch.testing.assert_close(batched[b], dice(pred[b], target[b], 3))
    assert iou(pred, target, 3, include_background=True, batch=True).shape == (3, 3)


def test_two_squares_known_overlap():
    a = torch.zeros(8, 8, dtype=torch.long)
    b = torch.zeros(8, 8, dtype=torch.long)
    a[0:4, 0:4] = 1  # 16 voxels
    b[2:6, 0:4] = 1  # 16 voxels, 8 shared
    assert dice(a, b, 2).item() == pytest.approx(2 * 8 / 32)
    assert iou(a, b, 2).item() == pytest.approx(8 / 24)


def test_empty_policies():
    full = torch.ones(4, 4, dtype=torch.long)
    none = torch.zeros(4, 4, dtype=torch.long)
    assert dice(none, full, 2).item() == 0.0  # empty prediction
    assert dice(full, none, 2).item() == 0.0  # empty label
    assert dice(none, none, 2, empty="one").item() == 1.0
    assert math.isnan(dice(none, none, 2, empty="nan").item())
    assert dice(none, none, 2, empty="zero").item() == 0.0
    assert iou(none, none, 2, empty="zero").item() == 0.0
    with pytest.raises(ValueError):
        dice(none, none, 2, empty="skip")


def test_nanmean_skips_nan_classes():
    pred = torch.tensor([[1, 1], [0, 0]])
    target = torch.tensor([[1, 0], [0, 0]])
    d = dice(pred, target, 3, empty="nan")  # class 2 absent from both
    assert math.isnan(d[1].item())
    assert nanmean(d).item() == pytest.approx(2 / 3)
    assert nanmean(np.array([[1.0, np.nan], [3.0, 5.0]]), dim=0).tolist() == [2.0, 5.0]


def test_bad_input_raises():
    with pytest.raises(DataError):
        dice(torch.tensor([0, 3]), torch.tensor([0, 1]), 3)
    with pytest.raises(DataError):
        dice(torch.zeros(3), torch.zeros(3, dtype=torch.long), 2)
    with pytest.raises(DataError):
        dice(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long), 2)


def test_confusion_counts_streaming_equals_one_shot_and_merges():
    pred, target = _random_maps(5, shape=(12, 10))
    acc = ConfusionCounts(3)
    for rows in (slice(0, 5), slice(5, 9), slice(9, 12)):
        acc.update(pred[rows], target[rows])
    torch.testing.assert_close(acc.dice(), dice(pred, target, 3))
    torch.testing.assert_close(acc.iou(include_background=True), iou(pred, target, 3, include_background=True))
    a, b = ConfusionCounts(3).update(pred[:6], target[:6]), ConfusionCounts(3).update(pred[6:], target[6:])
    torch.testing.assert_close(a.merge(b).counts, acc.counts)
    assert int(acc.counts[0].sum()) == pred.numel()  # TP + FP + FN + TN = all voxels
    with pytest.raises(ValueError):
        acc.merge(ConfusionCounts(4))


def test_majority_vote_ties_to_lower_class():
    labels = torch.tensor([[[0, 2, 1]], [[1, 2, 1]], [[1, 0, 2]], [[0, 0, 2]]])  # (R=4, 1, 3)
    # voxel 0: 0,1,1,0 -> tie 0/1 -> 0; voxel 1: 2,2,0,0 -> tie 0/2 -> 0; voxel 2: 1,1,2,2 -> tie -> 1
    assert majority_vote(labels, 3).tolist() == [[0, 0, 1]]


def test_consensus_dice_hand_case():
    labels = torch.tensor([[[1, 1, 0, 0]], [[1, 0, 1, 0]]])  # consensus fg {0}, consensus bg {3}, dissensus {1, 2}
    pred = torch.tensor([[1, 1, 1, 1]])
    # TP = 1 (voxel 0); prediction inside consensus region = voxels 0 and 3 -> Dice = 2 / (2 + 1)
    assert consensus_dice(pred, labels, 2).item() == pytest.approx(2 / 3)
    # no consensus foreground and nothing predicted in the consensus region -> empty policy
    pred_dis = torch.tensor([[0, 1, 1, 0]])
    assert consensus_dice(pred_dis, torch.tensor([[[0, 1, 0, 0]], [[0, 0, 1, 0]]]), 2, empty="one").item() == 1.0


def test_dice_vs_raters_keys_and_one_rater():
    pred, target = _random_maps(6, shape=(7, 7))
    out = dice_vs_raters(pred, target[None], 3)
    assert set(out) == {"rater_0", "mean_rater", "majority", "consensus"}
    for key in ("mean_rater", "majority", "consensus"):
        torch.testing.assert_close(out[key], out["rater_0"])
    torch.testing.assert_close(out["rater_0"], dice(pred, target, 3))


def test_dice_vs_raters_several():
    g = torch.Generator().manual_seed(7)
    labels = torch.randint(0, 3, (3, 6, 6), generator=g)
    pred = labels[0]
    out = dice_vs_raters(pred, labels, 3, empty="nan")
    assert torch.all(out["rater_0"] == 1.0)
    torch.testing.assert_close(out["mean_rater"], torch.stack([out[f"rater_{i}"] for i in range(3)]).mean(0))
    torch.testing.assert_close(out["majority"], dice(pred, majority_vote(labels, 3), 3, empty="nan"))
    with pytest.raises(DataError):
        dice_vs_raters(pred, labels[:, :5], 3)


def test_registered():
    for name in ("dice", "iou", "dice_vs_raters"):
        assert name in METRICS


def test_consensus_dice_matches_naive_regions():
    g = torch.Generator().manual_seed(11)
    labels = torch.randint(0, 3, (3, 8, 9), generator=g)
    labels[:, :4] = labels[0, :4]  # an area of full agreement so that consensus regions are not empty
    pred = torch.randint(0, 3, (8, 9), generator=g)
    out = consensus_dice(pred, labels, 3, include_background=True)
    for k in range(3):
        fg = (labels == k).all(0)
        region = fg | (labels != k).all(0)
        p = (pred == k) & region
        ref = 2 * (p & fg).sum().item() / (p.sum().item() + fg.sum().item())
        assert out[k].item() == pytest.approx(ref)
