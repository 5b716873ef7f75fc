"""The training loader carries each case's field-of-view mask as the batch's ``valid`` map."""

from __future__ import annotations

import numpy as np
import torch

from trustseg.data.augmentation import AugmentConfig
from trustseg.data.case import Case
from trustseg.data.dataset import load_dataset, write_dataset
from trustseg.engine.loader import CaseLoader


def _dataset(tmp_path, masked=(True, True, False)):
    """Images whose intensity is the column index; masks = columns >= 3 (a known geometry to check crops by)."""
    cols = np.tile(np.arange(10, dtype=np.float32), (9, 1))
    cases = []
    for i, m in enumerate(masked):
        labels = np.stack([(cols > 4).astype(np.int64), (cols > 5).astype(np.int64)])
        cases.append(Case(f"c{i}", cols[None] + 0, labels, mask=(cols >= 3) if m else None))
    write_dataset(cases * 1, tmp_path / "ds", classes=["bg", "fg"], name="x", ext=".npy")
    return load_dataset(tmp_path / "ds")


def test_valid_follows_crops_and_padding(tmp_path):
    ds = _dataset(tmp_path)
    loader = CaseLoader(ds.__getitem__, ds.ids, 2, batch_size=3, patch_size=(12, 6), seed=3, pad_multiple=4)
    for _ in range(3):
        ids, batch = next(iter(loader.batches(epoch=_)))
        assert batch.valid is not None and batch.valid.shape == (3, 12, 8)
        assert batch.labels.shape == (3, 2, 12, 8)  # the mask is not a rater
        for b, cid in enumerate(ids):
            img = batch.image[b, 0]
            real = torch.zeros_like(batch.valid[b])
            real[:9, :6] = True  # rows beyond 9 (image height) and columns beyond the patch are padding
            expect = real & (img >= 3) if cid != "c2" else real
            assert torch.equal(batch.valid[b], expect), cid


def test_no_mask_no_valid(tmp_path):
    ds = _dataset(tmp_path, masked=(False, False, False))
    _, batch = next(iter(CaseLoader(ds.__getitem__, ds.ids, 2, batch_size=3).batches()))
    assert batch.valid is None


def test_augmentation_moves_the_mask_with_the_labels(tmp_path):
    ds = _dataset(tmp_path, masked=(True, True, True))
    aug = AugmentConfig(rotate_prob=1.0, flip_prob=1.0, scale_prob=0.0, shift_prob=0.0)
    loader = CaseLoader(ds.__getitem__, ds.ids, 2, batch_size=3, augment=aug, seed=1)
    _, batch = next(iter(loader.batches()))
    # inside the (rotated, flipped) field of view the first rater's label is the image's "column > 4" ...
    fov = batch.valid
    assert fov.any() and (~fov).any()
    # ... and the mask and the labels moved together: every foreground label voxel is inside the field of view
    assert not (batch.labels[:, 0].bool() & ~fov).any()
