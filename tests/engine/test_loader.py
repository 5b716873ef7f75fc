"""CaseLoader's normalisation and augmentation: off = today's batches, normalised once per case, augmented after
cropping with seeds of (seed, epoch, case), the same after a restart and across data-parallel ranks."""

from __future__ import annotations

import numpy as np
import torch

from trustseg.data.augmentation import AugmentConfig, Augmenter
from trustseg.data.case import Case
from trustseg.data.normalization import NormConfig, fit_normalization
from trustseg.engine.loader import CaseLoader, random_crop
from trustseg.engine.seeding import epoch_seed, make_generator


def _cases(n: int = 5, size: tuple[int, ...] = (12, 12)) -> dict[str, Case]:
    rng = np.random.default_rng(0)
    out = {}
    for i in range(n):
        image = (200.0 + 50.0 * rng.standard_normal((1, *size))).astype(np.float32)
        out[f"c{i}"] = Case(f"c{i}", image, (image > 220).astype(np.int64).repeat(2, axis=0))
    return out


class Counting:
    """``get_case`` that counts its reads."""

    def __init__(self, cases):
        self.cases, self.reads = cases, []

    def __call__(self, cid):
        self.reads.append(cid)
        return self.cases[cid]


def _batches(loader, epoch, **kw):
    return [(ids, b.image.clone(), b.labels.clone()) for ids, b in loader.batches(epoch, **kw)]


def test_without_normalisation_and_augmentation_the_batches_are_the_crops():
    cases = _cases()
    loader = CaseLoader(cases.__getitem__, list(cases), 2, 2, True, (8, 8), seed=4)
    assert loader.normalization is None and loader.augmenter is None
    off = CaseLoader(cases.__getitem__, list(cases), 2, 2, True, (8, 8), seed=4, augment=AugmentConfig(enabled=False))
    gen = make_generator(epoch_seed(4, "patch", 1))  # the reference: today's crops, by hand
    for (ids, img, lab), (ids2, img2, lab2) in zip(_batches(loader, 1), _batches(off, 1)):
        assert ids == ids2 and torch.equal(img, img2) and torch.equal(lab, lab2)
        for j, cid in enumerate(ids):
            ref_img, ref_lab = random_crop(cases[cid].image, cases[cid].labels, (8, 8), gen)
            assert torch.equal(img[j], torch.from_numpy(ref_img)) and torch.equal(lab[j], torch.from_numpy(ref_lab))


def test_normalisation_is_applied_once_per_case_to_training_and_validation():
    cases = _cases()
    stats = fit_normalization([c.image for c in cases.values()], None, NormConfig("zscore"))
    get = Counting(cases)
    loader = CaseLoader(get, list(cases), 2, batch_size=5, normalization=stats)
    for epoch in range(3):
        ids, batch = next(loader.batches(epoch))
        for j, cid in enumerate(ids):
            np.testing.assert_array_equal(batch.image[j].numpy(), stats.apply(cases[cid].image))
    assert sorted(get.reads) == sorted(cases)  # read (and normalised) once, then cached
    all_voxels = batch.image.double()
    assert abs(all_voxels.mean().item()) < 1e-5 and abs(all_voxels.std(unbiased=False).item() - 1.0) < 1e-5
    assert cases["c0"].image.mean() > 100  # the dataset's case is untouched
    uncached = Counting(cases)
    loader = CaseLoader(uncached, ["c0"], 2, normalization=stats, cache=False)
    for _ in range(2):
        np.testing.assert_array_equal(loader.case("c0").image, stats.apply(cases["c0"].image))
    assert uncached.reads == ["c0", "c0"]


def test_augmentation_follows_the_crop_with_case_seeds():
    cases = _cases()
    cfg = AugmentConfig(rotate_prob=0.5, scale_prob=0.5, shift_prob=0.5)
    plain = CaseLoader(cases.__getitem__, list(cases), 2, 2, True, (8, 8), seed=7)
    loader = CaseLoader(cases.__getitem__, list(cases), 2, 2, True, (8, 8), seed=7, augment=cfg)
    aug = Augmenter(cfg)
    changed = 0
    for (ids, img, lab), (ids0, img0, lab0) in zip(_batches(loader, 2), _batches(plain, 2)):
        assert ids == ids0  # the same order and the same patch positions
        for j, cid in enumerate(ids):
            ref_img, ref_lab = aug(img0[j].numpy(), lab0[j].numpy(), epoch_seed(7, "augment", 2, cid))
            np.testing.assert_array_equal(img[j].numpy(), ref_img)
            np.testing.assert_array_equal(lab[j].numpy(), ref_lab)
            changed += not torch.equal(img[j], img0[j])
    assert changed > 0


def test_augmented_epochs_are_reproducible_after_a_restart_and_differ_between_epochs():
    cases = _cases()

    def make():
        return CaseLoader(cases.__getitem__, list(cases), 2, 2, True, (8, 8), seed=1, augment=AugmentConfig())

    first = make()
    _batches(first, 0)
    a = _batches(first, 1)
    b = _batches(make(), 1)  # a resumed run: a new loader starts at epoch 1
    for (ids, img, lab), (ids2, img2, lab2) in zip(a, b):
        assert ids == ids2 and torch.equal(img, img2) and torch.equal(lab, lab2)
    c = _batches(make(), 2)
    assert any(not torch.equal(x[1], y[1]) for x, y in zip(a, c))


def test_augmented_ranks_together_equal_one_process():
    cases = _cases(4)
    stats = fit_normalization([c.image for c in cases.values()])

    def make():
        return CaseLoader(
            cases.__getitem__, list(cases), 2, 4, True, (8, 8), seed=5, normalization=stats, augment=AugmentConfig()
        )

    whole = _batches(make(), 3)
    r0, r1 = _batches(make(), 3, rank=0, world_size=2), _batches(make(), 3, rank=1, world_size=2)
    for (ids, img, _), (ids0, img0, _), (ids1, img1, _) in zip(whole, r0, r1):
        assert ids == [ids0[0], ids1[0], ids0[1], ids1[1]]
        assert torch.equal(img[0::2], img0) and torch.equal(img[1::2], img1)


def test_the_cache_holds_labels_as_uint8_and_batches_get_the_same_int64_labels():
    cases = _cases()
    loader = CaseLoader(Counting(cases), list(cases), 2, batch_size=5, shuffle=False)
    ids, batch = next(loader.batches(0))
    assert batch.labels.dtype == torch.int64
    for j, cid in enumerate(ids):
        np.testing.assert_array_equal(batch.labels[j].numpy(), cases[cid].labels)
        cached = loader.case(cid).labels
        assert cached.dtype == np.uint8 and cached.nbytes * 8 == cases[cid].labels.astype(np.int64).nbytes
