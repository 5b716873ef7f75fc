"""Multi-rater targets: analytic values, scipy's mode, and equality with the five implementations they replace."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from trustseg.core.errors import DataError
from trustseg.data.case import Case
from trustseg.data.targets import majority_vote, rater_disagreement, soft_label


# -- the implementations data.targets replaced, copied verbatim (as of the base commit) -----------------------------
def old_case_soft_label(labels: np.ndarray, num_classes: int) -> np.ndarray:  # data/case.py
    out = np.zeros((num_classes, *labels.shape[1:]), dtype=np.float32)
    for k in range(num_classes):
        out[k] = (labels == k).mean(0)
    return out


def old_case_rater_variance(labels: np.ndarray, num_classes: int) -> np.ndarray:  # data/case.py
    y = old_case_soft_label(labels, num_classes)
    return (y * (1.0 - y)).sum(0)


def old_batch_soft(labels: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:  # methods/base.py Batch.soft
    oh = torch.nn.functional.one_hot(labels.long(), k)
    return oh.to(dtype).mean(1).movedim(-1, 1)


def old_batch_rater_variance(labels: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:  # Batch
    y = old_batch_soft(labels, k, dtype)
    return (y * (1 - y)).sum(1, keepdim=True)


def old_calibration_soft_label(raters: torch.Tensor, num_classes: int) -> torch.Tensor:  # metrics/calibration.py
    return torch.stack([(raters == k).float().mean(0) for k in range(num_classes)])


def old_overlap_majority_vote(labels: torch.Tensor, num_classes: int) -> torch.Tensor:  # metrics/overlap.py
    votes = torch.nn.functional.one_hot(labels.long(), num_classes).sum(0)
    return votes.argmax(-1)


def old_pixel_rater_disagreement(lab: torch.Tensor, num_classes: int, rater_dim: int, classes=None) -> torch.Tensor:
    out_dtype = torch.float64 if lab.dtype == torch.float64 else torch.float32  # measures/pixel.py
    lab = lab.long()
    out = torch.zeros(lab.shape[:rater_dim] + lab.shape[rater_dim + 1 :], dtype=out_dtype)
    for k in range(num_classes) if classes is None else classes:
        ybar = (lab == k).to(out_dtype).mean(rater_dim)
        out += ybar * (1 - ybar)
    return out


CASES = [((6, 7), 3, 3), ((4, 5, 6), 4, 2), ((9, 9), 2, 4), ((5, 6), 5, 5), ((3, 4), 1, 3), ((8,), 6, 3)]


def _labels(shape, r, k, seed, batch=None):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, k, ((batch,) if batch else ()) + (r, *shape), generator=g)


# -- analytic -----------------------------------------------------------------------------------------------------
def test_hand_computed_values_and_ties():
    labels = torch.tensor([[0, 1, 2, 0], [1, 1, 2, 2], [1, 1, 0, 2], [0, 1, 0, 1]])  # R = 4 raters, 4 pixels
    ybar = soft_label(labels, 3)
    expect = torch.tensor([[0.5, 0.0, 0.5, 0.25], [0.5, 1.0, 0.0, 0.25], [0.0, 0.0, 0.5, 0.5]])
    assert ybar.dtype == torch.float32 and torch.equal(ybar, expect)
    # pixel 0 ties 0/1 -> 0, pixel 2 ties 0/2 -> 0: ties go to the lower class
    assert torch.equal(majority_vote(labels, 3), torch.tensor([0, 1, 0, 2]))
    d = rater_disagreement(labels, 3)
    assert torch.allclose(d, torch.tensor([0.5, 0.0, 0.5, 2 * 0.25 * 0.75 + 0.25]))
    assert torch.allclose(rater_disagreement(labels, 3, classes=[1]), torch.tensor([0.25, 0.0, 0.0, 0.1875]))
    # all raters agree -> 0; the maximum over K classes is 1 − 1/K (every class equally often)
    assert torch.equal(rater_disagreement(torch.ones(3, 5, dtype=torch.long), 2), torch.zeros(5))
    spread = torch.arange(4).view(4, 1)
    assert torch.allclose(rater_disagreement(spread, 4), torch.tensor([0.75]))


def test_batched_equals_per_item_and_numpy_input():
    lab = _labels((5, 6), 3, 3, seed=1, batch=4)
    for fn in (soft_label, majority_vote, rater_disagreement):
        batched = fn(lab, 3, rater_dim=1)
        assert torch.equal(batched, torch.stack([fn(lab[b], 3) for b in range(4)]))
        assert torch.equal(fn(lab.numpy(), 3, rater_dim=1), batched)
        last = fn(lab.movedim(1, -1), 3, rater_dim=-1)  # raters last: the classes of the soft label come last
        assert torch.equal(last.movedim(-1, 1) if fn is soft_label else last, batched)
    assert soft_label(lab, 3, rater_dim=1).shape == (4, 3, 5, 6)
    assert majority_vote(lab, 3, rater_dim=1).dtype == torch.int64
    flipped = lab[0].numpy().astype(">i4")[..., ::-1]  # negative strides, big-endian
    assert torch.equal(soft_label(flipped, 3), soft_label(lab[0].flip(-1), 3))


def test_majority_vote_equals_scipy_mode():
    for i, (shape, r, k) in enumerate(CASES):
        lab = _labels(shape, r, k, seed=10 + i)
        ref = scipy.stats.mode(lab.numpy(), axis=0, keepdims=False).mode  # the smallest of tied modes
        assert np.array_equal(majority_vote(lab, k).numpy(), ref)


# -- equality with every implementation it replaced ---------------------------------------------------------------
@pytest.mark.parametrize(("shape", "r", "k"), CASES)
def test_equals_the_replaced_implementations_bit_for_bit(shape, r, k):
    lab = _labels(shape, r, k, seed=r * 7 + k)
    ybar = soft_label(lab, k)
    assert torch.equal(ybar, torch.from_numpy(old_case_soft_label(lab.numpy(), k)))
    assert torch.equal(ybar, old_calibration_soft_label(lab, k))
    assert torch.equal(majority_vote(lab, k), old_overlap_majority_vote(lab, k))
    assert np.array_equal(majority_vote(lab, k).numpy(), old_case_soft_label(lab.numpy(), k).argmax(0))
    d = rater_disagreement(lab, k)
    assert torch.equal(d, torch.from_numpy(old_case_rater_variance(lab.numpy(), k)))
    assert torch.equal(d, old_pixel_rater_disagreement(lab, k, 0))
    assert torch.equal(rater_disagreement(lab.double(), k), old_pixel_rater_disagreement(lab.double(), k, 0))
    assert torch.equal(rater_disagreement(lab, k, classes=[k - 1]), old_pixel_rater_disagreement(lab, k, 0, [k - 1]))
    case = Case("c", np.zeros((1, *shape), np.float32), lab.numpy())
    assert np.array_equal(case.soft_label(k), old_case_soft_label(lab.numpy(), k))
    assert np.array_equal(case.majority_vote(k), old_case_soft_label(lab.numpy(), k).argmax(0))
    assert np.array_equal(case.rater_variance(k), old_case_rater_variance(lab.numpy(), k))
    assert case.soft_label(k).dtype == np.float32 and case.rater_variance(k).dtype == np.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("shape", "r", "k"), CASES)
def test_batched_equals_the_replaced_batch_methods(shape, r, k, dtype):
    lab = _labels(shape, r, k, seed=100 + r, batch=3)
    soft = soft_label(lab, k, rater_dim=1, dtype=dtype)
    assert torch.equal(soft, old_batch_soft(lab, k, dtype))
    onehot = torch.nn.functional.one_hot(majority_vote(lab, k, rater_dim=1), k).movedim(-1, 1).to(dtype)
    assert torch.equal(onehot, torch.nn.functional.one_hot(old_batch_soft(lab, k, dtype).argmax(1), k).movedim(-1, 1))
    var = rater_disagreement(lab, k, rater_dim=1, dtype=dtype).unsqueeze(1)
    # the sum over classes is accumulated class by class (as measures.pixel and Case did), Batch summed with
    # torch's reduction: equal to rounding; Σ_k over the soft label reproduces Batch bit for bit
    torch.testing.assert_close(var, old_batch_rater_variance(lab, k, dtype), rtol=0, atol=2 * torch.finfo(dtype).eps)
    assert torch.equal((soft * (1 - soft)).sum(1, keepdim=True), old_batch_rater_variance(lab, k, dtype))
    assert torch.equal(rater_disagreement(lab, k, rater_dim=1), old_pixel_rater_disagreement(lab, k, 1))


# -- bad input ----------------------------------------------------------------------------------------------------
def test_bad_labels_raise_data_error():
    lab = torch.tensor([[0, 1], [1, 2]])
    with pytest.raises(DataError, match=r"\[0, 2\)"):
        soft_label(lab, 2)
    with pytest.raises(DataError, match="integer"):
        majority_vote(torch.tensor([[0.5, 1.0]]), 2)
    with pytest.raises(DataError, match="rater_dim"):
        rater_disagreement(lab, 3, rater_dim=2)
    with pytest.raises(DataError, match="no rater"):
        soft_label(torch.zeros(0, 3, dtype=torch.long), 2)
    assert torch.equal(soft_label(torch.tensor([[0.0, 1.0]]), 2), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
