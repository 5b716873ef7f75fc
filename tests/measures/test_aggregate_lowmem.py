"""The low-memory mean and dilation of the image-level aggregators against the formulas they replace
(issue 11, F7): max-pooling of a float copy, and ``(u · m).sum / m.sum``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trustseg.measures.aggregate import agg_mean, dilate_mask


@pytest.mark.parametrize("shape", [(2, 7, 9, 6), (1, 5, 8), (2, 3, 4, 5)])
def test_dilation_and_mean_match_max_pooling_and_the_product(shape):
    g = torch.Generator().manual_seed(len(shape))
    m = torch.rand(*shape, generator=g) > 0.9
    pool = F.max_pool3d if len(shape) == 4 else F.max_pool2d
    for d in (1, 2):
        ref = pool(m.float().unsqueeze(1), kernel_size=2 * d + 1, stride=1, padding=d).squeeze(1) > 0
        assert torch.equal(dilate_mask(m, d), ref)
    u = torch.rand(*shape, generator=g)
    uf, mf = u.flatten(1), m.flatten(1)
    assert torch.equal(agg_mean(u, m), (uf * mf).sum(1) / mf.sum(1))
    ones = torch.ones_like(mf)
    assert torch.equal(agg_mean(u), (uf * ones).sum(1) / ones.sum(1))
    empty = torch.zeros_like(m)
    assert torch.isnan(agg_mean(u, empty)).all()
