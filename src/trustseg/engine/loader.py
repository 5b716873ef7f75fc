"""Batches of cases for training and validation: seeded shuffling, random patches, padding, caching.

Cases are read through any ``get_case(case_id) -> Case`` callable (a ``Dataset`` instance works, being
indexable by id) and kept in memory after the first read (the datasets this toolkit targets are small).

Every epoch draws its order and its patch positions from a generator seeded by ``(seed, epoch)``, so a given
epoch produces the same batches whether training ran straight through or was resumed.

Optional steps (both off by default, which keeps the batches exactly as without them):

- ``normalization`` (a fitted :class:`~trustseg.data.normalization.NormStats`): applied to each image once,
  when the case is read (before caching), so cropping pads with 0 *normalised* units (the training mean for the
  z-score schemes) and every later step sees normalised intensities. Give it to the training and the validation
  loader alike.
- ``augment`` (:class:`~trustseg.data.augmentation.AugmentConfig`, training loader only): applied to each case of
  a batch **after** cropping, seeded by ``(seed, "augment", epoch, case_id)``. After, because the cost then
  scales with the patch rather than the volume (rotating or deforming a whole CT volume every step would dominate
  the step), the patch positions are exactly those drawn without augmentation, and the output keeps the patch
  shape. The price: a rotated or deformed patch is filled with ``padding_mode`` (zeros) in its corners instead of
  the tissue just outside it (nnU-Net crops a larger region first to avoid this); with small angles (±15°,
  p = 0.2) it touches few voxels. Under data parallelism each rank augments only its own cases; the seeds depend
  on the case, not on the rank, so the union over the ranks equals the single-process batch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from trustseg.core.errors import ConfigError
from trustseg.data.augmentation import AugmentConfig, Augmenter
from trustseg.data.case import Case
from trustseg.data.normalization import NormStats
from trustseg.engine.seeding import epoch_seed, make_generator
from trustseg.methods.base import Batch


def pad_to(array: np.ndarray, shape: Sequence[int], value: float = 0) -> np.ndarray:
    """Pad the trailing spatial axes of ``array`` ``(C, *spatial)`` at their end up to ``shape``.

    Args:
        array: ``(C, *spatial)`` image or ``(R, *spatial)`` label maps.
        shape: Target spatial shape; axes already at least this large are left alone.
        value: Fill value (0: background for labels, zero intensity for images).
    """
    spatial = array.shape[1:]
    pads = [(0, 0)] + [(0, max(0, int(t) - s)) for s, t in zip(spatial, shape)]
    if all(p == (0, 0) for p in pads):
        return array
    return np.pad(array, pads, mode="constant", constant_values=value)


def random_crop(
    image: np.ndarray, labels: np.ndarray, patch: Sequence[int], generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A random patch of ``image`` ``(C, *sp)`` and ``labels`` ``(R, *sp)``; smaller images are padded first.

    Args:
        image: ``(C, *spatial)`` float image.
        labels: ``(R, *spatial)`` int label maps.
        patch: Patch size, one entry per spatial axis.
        generator: Draws the patch position (one integer per axis).

    Returns:
        ``(C, *patch)`` image and ``(R, *patch)`` labels.
    """
    if len(patch) != image.ndim - 1:
        raise ConfigError(f"patch_size {list(patch)} has {len(patch)} axes, the image has {image.ndim - 1}")
    image = pad_to(image, patch)
    labels = pad_to(labels, patch)
    slices = []
    for size, p in zip(image.shape[1:], patch):
        start = int(torch.randint(size - p + 1, (1,), generator=generator)) if size > p else 0
        slices.append(slice(start, start + p))
    return image[(slice(None), *slices)], labels[(slice(None), *slices)]


def label_dtype(num_classes: int) -> type[np.integer]:
    """The smallest unsigned integer type that holds class indices ``0 .. num_classes − 1``.

    Example:
        >>> label_dtype(3), label_dtype(300)
        (<class 'numpy.uint8'>, <class 'numpy.uint16'>)
    """
    return np.uint8 if num_classes <= 256 else np.uint16 if num_classes <= 65536 else np.int64


def collate(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    num_classes: int,
    multiple: int = 1,
    valid: Sequence[np.ndarray] | None = None,
) -> Batch:
    """Stack cases into a :class:`Batch`, padding every spatial axis to the batch maximum (rounded up).

    Args:
        images: Each ``(C, *spatial_i)``.
        labels: Each ``(R, *spatial_i)``; all cases need the same R.
        num_classes: K.
        multiple: Pad spatial sizes up to a multiple of this (U-Nets need sizes divisible by 2**(depth-1)).
        valid: Each ``(*spatial_i)`` bool field of view, or ``None`` for a batch without masks; padding is
            outside it.

    Returns:
        Batch with image ``(B, C, *spatial)`` float32, labels ``(B, R, *spatial)`` int64 and ``valid``
        ``(B, *spatial)`` bool (``None`` without ``valid``).
    """
    ndim = images[0].ndim - 1
    shape = [max(im.shape[1 + d] for im in images) for d in range(ndim)]
    shape = [math.ceil(s / multiple) * multiple for s in shape]
    img = np.stack([pad_to(np.asarray(im, dtype=np.float32), shape) for im in images])
    lab = np.stack([pad_to(np.asarray(lb, dtype=np.int64), shape) for lb in labels])
    mask = None
    if valid is not None:
        mask = torch.from_numpy(np.stack([pad_to(np.asarray(v, dtype=bool)[None], shape)[0] for v in valid]))
    return Batch(torch.from_numpy(img), torch.from_numpy(lab), num_classes, mask)


class CaseLoader:
    """Seeded batches over a list of case ids.

    Args:
        get_case: ``case_id -> Case`` (a ``Dataset`` is fine).
        ids: The case ids to iterate over.
        num_classes: K.
        batch_size: Cases per batch (the global batch under DDP).
        shuffle: Shuffle the order each epoch (seeded by ``(seed, epoch)``).
        patch_size: Random crop size per case, or ``None`` for whole images.
        seed: Seed of the order and patch streams.
        pad_multiple: Pad batched spatial sizes to a multiple of this.
        cache: Keep cases in memory after the first read.
        normalization: Fitted statistics applied to each image when it is read (``None``: raw intensities).
        augment: Augmentation of each (cropped) case, seeded by ``(seed, "augment", epoch, case_id)``; for the
            training loader only (``None`` or ``enabled=False``: none).
    """

    def __init__(
        self,
        get_case: Callable[[str], Case],
        ids: Sequence[str],
        num_classes: int,
        batch_size: int = 1,
        shuffle: bool = False,
        patch_size: Sequence[int] | None = None,
        seed: int = 0,
        pad_multiple: int = 1,
        cache: bool = True,
        normalization: NormStats | None = None,
        augment: AugmentConfig | None = None,
    ):
        if not ids:
            raise ValueError("CaseLoader needs at least one case id")
        self.get_case = get_case
        self.ids = list(ids)
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.patch_size = None if patch_size is None else tuple(int(p) for p in patch_size)
        self.seed = seed
        self.pad_multiple = pad_multiple
        self._cache: dict[str, Case] | None = {} if cache else None
        self.normalization = normalization
        self.augmenter = Augmenter(augment) if augment is not None and augment.enabled else None

    def __len__(self) -> int:
        """Batches per epoch."""
        return math.ceil(len(self.ids) / self.batch_size)

    def case(self, case_id: str) -> Case:
        """The case ``case_id``, normalised if the loader normalises (from the cache when loaded before).

        Its labels are held in the smallest integer type of the class count (``uint8`` up to 256 classes: an
        eighth of ``int64``, e.g. 0.3 GB instead of 2.3 GB for the LIDC slices with 4 raters); batches widen them
        to ``int64`` after cropping.
        """
        if self._cache is None:
            return self._read(case_id)
        if case_id not in self._cache:
            self._cache[case_id] = self._read(case_id)
        return self._cache[case_id]

    def _read(self, case_id: str) -> Case:
        case = self.get_case(case_id)
        labels = case.labels.astype(label_dtype(self.num_classes), copy=False)
        if self.normalization is None:
            return dataclasses.replace(case, labels=labels)
        image = self.normalization.apply(case.image, where=f"case {case_id!r}")
        return dataclasses.replace(case, image=image, labels=labels)

    def order(self, epoch: int) -> list[str]:
        """The case order of ``epoch`` (shuffled with a generator seeded by ``(seed, epoch)`` if enabled)."""
        if not self.shuffle:
            return list(self.ids)
        gen = make_generator(epoch_seed(self.seed, "order", epoch))
        perm = torch.randperm(len(self.ids), generator=gen).tolist()
        return [self.ids[i] for i in perm]

    def batches(self, epoch: int = 0, rank: int = 0, world_size: int = 1) -> Iterator[tuple[list[str], Batch]]:
        """Yield ``(case_ids, batch)`` for one epoch.

        Under data parallelism every rank computes the same order and keeps its share ``[rank::world_size]`` of
        each global batch; a last batch with fewer cases than ranks is topped up from the start of the order so
        that every rank runs the same number of steps.

        Args:
            epoch: Epoch index (seeds the order, the patch positions and the augmentation).
            rank: This process's rank.
            world_size: Number of data-parallel processes.
        """
        order = self.order(epoch)
        patch_gen = make_generator(epoch_seed(self.seed, "patch", epoch))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            if len(chunk) < world_size:
                chunk = chunk + [order[i % len(order)] for i in range(world_size - len(chunk))]
            # Crops are drawn for the whole global batch on every rank, so ranks stay in step.
            cases = [self.case(cid) for cid in chunk]
            masked = any(c.mask is not None for c in cases)
            crops = []
            for cid, case in zip(chunk, cases):
                image, labels = case.image, case.labels
                if masked:  # the mask rides along as one more label map: cropped, padded (0) and moved with them
                    fov = np.ones(case.spatial_shape, np.uint8) if case.mask is None else case.mask.astype(np.uint8)
                    labels = np.concatenate([labels, fov[None].astype(labels.dtype)], 0)
                if self.patch_size is not None:
                    image, labels = random_crop(image, labels, self.patch_size, patch_gen)
                crops.append((cid, image, np.asarray(labels, dtype=np.int64)))
            mine = crops[rank::world_size]
            if self.augmenter is not None:
                mine = [
                    (cid, *self.augmenter(im, lb, epoch_seed(self.seed, "augment", epoch, cid))) for cid, im, lb in mine
                ]
            maps = [c[2][:-1] if masked else c[2] for c in mine]
            valid = [c[2][-1] > 0 for c in mine] if masked else None
            yield (
                [c[0] for c in mine],
                collate([c[1] for c in mine], maps, self.num_classes, self.pad_multiple, valid),
            )
