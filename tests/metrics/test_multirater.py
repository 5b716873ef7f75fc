"""GED, Hungarian-matched IoU, QUBIQ soft Dice and variance NCC, against naive loops and hand cases."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from trustseg.core.errors import DataError
from trustseg.metrics import METRICS
from trustseg.metrics.multirater import (
    ged,
    hungarian_iou,
    pairwise_distance,
    pairwise_overlap,
    qubiq_soft_dice,
    variance_ncc,
)


def _d(a: np.ndarray, b: np.ndarray, distance: str, empty: str) -> float:
    """Naive per-pair distance, written independently of the vectorised code."""
    inter = np.logical_and(a, b).sum()
    if distance == "iou":
        den = np.logical_or(a, b).sum()
        num = inter
    else:
        den = a.sum() + b.sum()
        num = 2 * inter
    if den == 0:
        return 0.0 if empty == "zero" else float("nan")
    return 1.0 - num / den


def _naive_ged(s, y, distance="iou", empty="zero", self_pairs=True):
    def mean_pairs(u, v, same):
        pairs = [(i, j) for i in range(len(u)) for j in range(len(v)) if self_pairs or not same or i != j]
        vals = [_d(u[i], v[j], distance, empty) for i, j in pairs]
        return 0.0 if not vals else np.nanmean(vals)

    e_sy, e_ss, e_yy = mean_pairs(s, y, False), mean_pairs(s, s, True), mean_pairs(y, y, True)
    return 2 * e_sy - e_ss - e_yy, e_sy, e_ss, e_yy


def _masks(seed, n, shape=(9, 10), p_empty=0.3):
    rng = np.random.default_rng(seed)
    m = rng.random((n, *shape)) < rng.uniform(0.1, 0.6, size=(n,) + (1,) * len(shape))
    m[rng.random(n) < p_empty] = False  # some empty masks, as in LIDC
    return m


@pytest.mark.parametrize("distance", ["iou", "dice"])
@pytest.mark.parametrize("empty", ["zero", "nan"])
@pytest.mark.parametrize("self_pairs", [True, False])
def test_ged_matches_naive_loop(distance, empty, self_pairs):
    s, y = _masks(0, 7), _masks(1, 4)
    s[0] = y[0] = False  # guarantee empty-vs-empty pairs
    ref = _naive_ged(s, y, distance, empty, self_pairs)
    out = ged(torch.as_tensor(s), y, distance=distance, empty=empty, self_pairs=self_pairs)
    for key, r in zip(("ged2", "e_d_sy", "e_d_ss", "e_d_yy"), ref):
        assert out[key].item() == pytest.approx(r, abs=1e-12)
    assert out["ged"].item() == pytest.approx(math.sqrt(max(ref[0], 0.0)), abs=1e-12)


def test_ged_identical_sets_and_one_rater():
    y = _masks(2, 4, p_empty=0.0)
    same = ged(np.repeat(y[:1], 5, 0), np.repeat(y[1:2], 3, 0))
    assert same["e_d_ss"].item() == 0.0 and same["e_d_yy"].item() == 0.0
    assert same["ged2"].item() == pytest.approx(2 * _d(y[0], y[1], "iou", "zero"))
    assert ged(y, y)["ged2"].item() == pytest.approx(0.0, abs=1e-15)  # samples = raters, V-statistic
    one = ged(y, y[:1], self_pairs=False)
    assert one["e_d_yy"].item() == 0.0
    assert one["ged2"].item() == pytest.approx(_naive_ged(y, y[:1], self_pairs=False)[0])


def test_empty_convention_changes_value():
    y = np.zeros((4, 5, 5), bool)
    y[0, 1:3, 1:3] = True  # one rater marks a lesion, three mark nothing
    s = np.zeros((2, 5, 5), bool)
    zero = ged(s, y, empty="zero")
    skip = ged(s, y, empty="nan")
    # zero: E[d(S,Y)] = 1/4 (only the non-empty rater differs); nan: the empty pairs are skipped -> 1
    assert zero["e_d_sy"].item() == pytest.approx(0.25) and skip["e_d_sy"].item() == pytest.approx(1.0)
    assert math.isnan(skip["e_d_ss"].item())  # every sample pair is empty-vs-empty


def test_ged_multiclass_modes():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 3, (5, 6, 6))
    y = rng.integers(0, 3, (3, 6, 6))
    union = ged(s, y, num_classes=3, multiclass="union")
    assert union["ged2"].item() == pytest.approx(_naive_ged(s > 0, y > 0)[0])
    per = ged(s, y, num_classes=3, multiclass="per_class")
    assert per["ged2"].shape == (2,)
    for k in (1, 2):
        assert per["ged2"][k - 1].item() == pytest.approx(_naive_ged(s == k, y == k)[0])
    mean = ged(s, y, num_classes=3, multiclass="class_mean", empty="nan")

    def d_mean(a, b):
        return np.nanmean([_d(a == k, b == k, "iou", "nan") for k in (1, 2)])

    e = [np.mean([d_mean(u, v) for u in uu for v in vv]) for uu, vv in ((s, y), (s, s), (y, y))]
    assert mean["ged2"].item() == pytest.approx(2 * e[0] - e[1] - e[2])


def test_ged_bad_input():
    with pytest.raises(DataError):
        ged(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5), bool))
    with pytest.raises(DataError):
        ged(np.full((2, 4, 4), 2), np.zeros((2, 4, 4), bool))
    with pytest.raises(ValueError):
        pairwise_distance(torch.zeros(1, 3, dtype=torch.bool), torch.zeros(1, 3, dtype=torch.bool), "hamming")


def test_hungarian_permuted_set_is_one_and_tiling():
    y = _masks(4, 4, p_empty=0.0)
    perm = y[[2, 0, 3, 1]]
    assert hungarian_iou(perm, y).item() == pytest.approx(1.0)
    tiled = np.concatenate([perm, y[[1, 3, 0, 2]]])  # 8 samples = every rater twice
    assert hungarian_iou(tiled, y).item() == pytest.approx(1.0)
    assert hungarian_iou(y, tiled).item() == pytest.approx(1.0)


def test_hungarian_matches_brute_force_permutations():
    s, y = _masks(5, 4, p_empty=0.25), _masks(6, 4, p_empty=0.25)
    iou = np.array([[1 - _d(a, b, "iou", "zero") for b in y] for a in s])
    best = max(np.mean([iou[i, p[i]] for i in range(4)]) for p in itertools.permutations(range(4)))
    assert hungarian_iou(s, y).item() == pytest.approx(best)
    # 6 samples vs 3 raters, tiled twice: brute force over assignments of the 6 samples to the 6 rater copies
    s6, y3 = _masks(7, 6, p_empty=0.0), _masks(8, 3, p_empty=0.0)
    iou6 = np.array([[1 - _d(a, y3[j % 3], "iou", "zero") for j in range(6)] for a in s6])
    best6 = max(np.mean([iou6[i, p[i]] for i in range(6)]) for p in itertools.permutations(range(6)))
    assert hungarian_iou(s6, y3).item() == pytest.approx(best6)
    untiled = max(np.mean([iou6[p[j], j] for j in range(3)]) for p in itertools.permutations(range(6), 3))
    assert hungarian_iou(s6, y3, tile=False).item() == pytest.approx(untiled)


def test_qubiq_soft_dice_hand_case():
    soft = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    assert qubiq_soft_dice(soft, soft).item() == pytest.approx(1.0)
    pred = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])
    # strict ">": t in {0.1, 0.2}: soft > t = 4 voxels, pred > t = 1 -> 2/5; t in {0.3, 0.4}: 3 vs 1 -> 2/4;
    # t in {0.5, 0.6, 0.7}: 2 vs 1 (0.5 is not > 0.5) -> 2/3; t in {0.8, 0.9}: 1 vs 1 -> 1
    expected = (2 * 2 / 5 + 2 * 2 / 4 + 3 * 2 / 3 + 2 * 1.0) / 9
    assert qubiq_soft_dice(pred, soft).item() == pytest.approx(expected)
    assert qubiq_soft_dice(torch.zeros(3), torch.zeros(3)).item() == 1.0  # empty-empty at every threshold
    assert qubiq_soft_dice(pred, soft, thresholds=[0.9]).item() == 1.0


def test_variance_ncc():
    rng = np.random.default_rng(9)
    a = rng.random((8, 7))
    b = 0.5 * a + rng.random((8, 7))
    assert variance_ncc(a, 3 * a + 2).item() == pytest.approx(1.0)
    assert variance_ncc(a, -a).item() == pytest.approx(-1.0)
    assert variance_ncc(torch.as_tensor(a), b).item() == pytest.approx(pearsonr(a.ravel(), b.ravel())[0])
    assert math.isnan(variance_ncc(a, np.ones_like(a)).item())
    with pytest.raises(DataError):
        variance_ncc(a, a[:2])


def test_registered():
    for name in ("ged", "ged_iou", "ged_dice", "hungarian_iou", "qubiq_soft_dice", "variance_ncc"):
        assert name in METRICS
    s, y = _masks(10, 3), _masks(11, 2)
    torch.testing.assert_close(METRICS.get("ged_dice")(s, y)["ged2"], ged(s, y, distance="dice")["ged2"])


def test_pairwise_overlap_chunked_equals_direct():
    a = torch.as_tensor(_masks(12, 5, shape=(7, 9, 4))).reshape(5, -1)
    b = torch.as_tensor(_masks(13, 3, shape=(7, 9, 4))).reshape(3, -1)
    inter, sa, sb = pairwise_overlap(a, b, chunk=17)  # 252 voxels in 15 chunks, the last one partial
    ref = (a[:, None, :] & b[None, :, :]).sum(-1)
    assert torch.equal(inter, ref.double())
    assert torch.equal(sa, a.sum(1).double()) and torch.equal(sb, b.sum(1).double())
