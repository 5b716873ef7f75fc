"""The NaN-aware reduction: numpy's nanmean as the reference, the no-finite-value rule, input kinds and dtypes."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from trustseg.metrics import nanmean as package_nanmean
from trustseg.metrics.overlap import dice_vs_raters
from trustseg.metrics.overlap import nanmean as overlap_nanmean
from trustseg.metrics.reduction import nanmean


def _np_nanmean(a: np.ndarray, axis=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "Mean of empty slice"
        return np.nanmean(a, axis=axis)


def test_equals_numpy_nanmean_on_random_arrays_with_nans():
    g = np.random.default_rng(0)
    a = g.normal(size=(5, 7, 3))
    a[g.random(a.shape) < 0.3] = np.nan
    a[0, :, 1] = np.nan  # an all-NaN slice along axis 1
    for dim in (None, 0, 1, 2, -1):
        ours = nanmean(torch.from_numpy(a), dim=dim)
        ref = _np_nanmean(a, axis=dim)
        assert ours.dtype == torch.float64
        np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(nanmean(a, dim=dim).numpy(), ref, rtol=1e-12, equal_nan=True)


def test_no_finite_value_gives_nan_and_inf_among_finite_is_kept():
    assert math.isnan(float(nanmean([])))
    assert math.isnan(float(nanmean([math.nan, math.nan])))
    assert math.isnan(float(nanmean([math.inf])))  # no finite value
    assert float(nanmean([1.0, math.inf])) == math.inf
    x = torch.tensor([[math.nan, 1.0, math.inf], [math.nan, 3.0, 5.0]])
    out = nanmean(x, dim=0)
    assert math.isnan(out[0]) and out[1] == 2.0 and out[2] == math.inf
    assert math.isnan(nanmean(torch.tensor([[math.inf], [math.nan]]), dim=1)[0])


def test_input_kinds_and_dtypes():
    assert nanmean([1.0, math.nan, 2.0]).dtype == torch.float64  # lists give float64
    assert float(nanmean(v for v in (1.0, 4.0, math.nan))) == 2.5  # a generator
    assert float(nanmean([torch.tensor(1.0), torch.tensor(2.0)])) == 1.5  # a list of 0-d tensors
    assert nanmean(torch.tensor([1.0, 2.0], dtype=torch.float32)).dtype == torch.float32
    assert nanmean(np.array([1.0, 2.0], dtype=np.float32)).dtype == torch.float32
    assert nanmean(torch.tensor([1, 2, 4])).dtype == torch.float64  # integers give float64
    assert float(nanmean(np.array([True, False]))) == 0.5
    assert nanmean([[1.0, 2.0], [3.0, math.nan]], dim=1).tolist() == [1.5, 3.0]
    assert overlap_nanmean is nanmean and package_nanmean is nanmean  # one function, importable where it was


def test_dice_vs_raters_mean_rater_uses_it():
    labels = torch.tensor([[[0, 1], [0, 0]], [[0, 1], [2, 0]]])  # class 2 only in rater 1
    out = dice_vs_raters(torch.tensor([[0, 1], [0, 0]]), labels, 3, empty="nan")
    assert out["rater_0"][1].isnan() and out["rater_1"][1] == 0.0
    assert out["mean_rater"].tolist() == pytest.approx([1.0, 0.0])
