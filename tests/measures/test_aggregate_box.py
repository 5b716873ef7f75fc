"""fg_mean on the foreground's bounding box against the whole-image dilation it replaces (issue 14)."""

from __future__ import annotations

import pytest
import torch

from trustseg.measures.aggregate import agg_fg_mean, dilate_mask, foreground_box


def _whole_image_fg_mean(u: torch.Tensor, mask: torch.Tensor, dilate: int) -> torch.Tensor:
    """The former formula: dilate the whole mask, float64 mean over it, whole-image mean for an empty mask."""
    m = dilate_mask(mask, dilate)
    out = []
    for b in range(u.shape[0]):
        sel = u[b][m[b]]
        out.append(sel.double().mean() if sel.numel() else u[b].double().mean())
    return torch.stack(out).float()


@pytest.mark.parametrize("dilate", [0, 1, 2, 3])
@pytest.mark.parametrize("shape", [(9, 10, 11), (13, 12)])
def test_box_dilation_equals_the_whole_image(dilate, shape):
    g = torch.Generator().manual_seed(dilate)
    u = torch.rand(4, *shape, generator=g)
    mask = torch.zeros(4, *shape, dtype=torch.bool)
    mask[0, 2:4, 3:5] = True  # inside
    mask[1, 0, 0] = True  # at a corner: the box is clipped
    mask[1, -1, -1] = True  # two far apart blobs: the box spans the image
    mask[2] = torch.rand(shape, generator=g) > 0.97  # scattered
    # image 3: empty -> the whole-image mean
    got = agg_fg_mean(u, mask, dilate=dilate)
    torch.testing.assert_close(got, _whole_image_fg_mean(u, mask, dilate), rtol=1e-6, atol=0)
    assert got[3] == pytest.approx(float(u[3].double().mean()), rel=1e-6)


def test_foreground_box_known_answers():
    m = torch.zeros(6, 7, 8, dtype=torch.bool)
    assert foreground_box(m) is None
    m[2, 3, 4] = m[3, 5, 4] = True
    assert foreground_box(m) == (slice(2, 4), slice(3, 6), slice(4, 5))
    assert foreground_box(m, (1, 2, 10)) == (slice(1, 5), slice(1, 7), slice(0, 8))  # clipped
    assert foreground_box(torch.tensor([0, 3, 0, 1]), 0) == (slice(1, 4),)  # non-bool: != 0
