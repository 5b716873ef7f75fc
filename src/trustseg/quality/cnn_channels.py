"""The image-based quality predictor's input stack: one case's image, prediction and uncertainty maps as
channels of a fixed size.

**Channel order** of :func:`qc_channels` (names as :func:`channel_names` gives them), with K classes and
``F = K - 1`` foreground classes:

1. ``image.c`` for each image channel ``c`` (only with image channels): the intensities z-scored per case and
   channel, ``(x - mean) / std`` (``x - mean`` where std = 0);
2. ``fg_prob``: the pooled foreground probability ``1 - p̄_0``; then, with ``K > 2``, ``prob.k`` = ``p̄_k`` for
   ``k = 1 .. K-1``;
3. ``fg_mask``: the predicted foreground ``seg > 0`` (0/1); then, with ``K > 2``, ``mask.k`` = ``seg == k``;
4. ``map.NAME`` for each named uncertainty map, oriented as an uncertainty
   (:func:`trustseg.measures.registry.as_uncertainty`: ``1 - confidence``), raw scale otherwise (entropy in nats).

Every channel is resized to the predictor's fixed ``size`` (bilinear/trilinear, ``align_corners=False``, for the
continuous channels; nearest, ``nearest-exact``, for the masks) so that cases of different sizes batch together.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from trustseg.core.errors import DataError
from trustseg.measures.registry import as_uncertainty
from trustseg.quality.inputs import CaseInput


def channel_names(num_classes: int, map_names: Sequence[str], image_channels: int = 0) -> list[str]:
    """The names of :func:`qc_channels`' channels, in order (see the module docstring).

    Example:
        >>> channel_names(2, ["entropy"], image_channels=1)
        ['image.0', 'fg_prob', 'fg_mask', 'map.entropy']
        >>> channel_names(3, [])
        ['fg_prob', 'prob.1', 'prob.2', 'fg_mask', 'mask.1', 'mask.2']
    """
    fg = range(1, num_classes) if num_classes > 2 else range(0)
    return (
        [f"image.{c}" for c in range(image_channels)]
        + ["fg_prob"]
        + [f"prob.{k}" for k in fg]
        + ["fg_mask"]
        + [f"mask.{k}" for k in fg]
        + [f"map.{m}" for m in map_names]
    )


def _resize(x: Tensor, size: tuple[int, ...], mask: bool) -> Tensor:
    """``(C, *sp)`` -> ``(C, *size)``."""
    if tuple(x.shape[1:]) == tuple(size):
        return x
    if mask:
        return F.interpolate(x[None], size=size, mode="nearest-exact")[0]
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return F.interpolate(x[None], size=size, mode=mode, align_corners=False)[0]


def qc_channels(
    inp: CaseInput, map_names: Sequence[str], size: Sequence[int], *, image_channels: int | None = None
) -> Tensor:
    """The CNN's input stack of one case, ``(C', *size)`` float32, channels as :func:`channel_names` orders them.

    Args:
        inp: The case.
        map_names: Uncertainty maps to stack (names of registered measures, keys of ``inp.maps``), in order.
        size: The fixed spatial size, one entry per spatial axis of the case.
        image_channels: The number of image channels to stack: ``None`` = those of ``inp.image`` (none without
            an image), ``0`` = no image (framework (a): a predictor configured without images ignores the image),
            ``n > 0`` = ``inp.image`` must have ``n`` channels.

    Returns:
        ``(C', *size)`` with ``C' = image_channels + 2 (K = 2)`` or ``image_channels + 2K`` (K > 2), plus one per
        map.

    Raises:
        DataError: a named map the case lacks, an image asked for but missing or with another channel count,
            ``size`` of another dimensionality, or non-finite values in a channel (naming the case and channel).

    Example:
        >>> import torch
        >>> p = torch.tensor([[[0.9, 0.2], [0.4, 0.1]]])
        >>> inp = CaseInput("a", probs=torch.cat([p, 1 - p]), seg=(p[0] < 0.5).long(), maps={"confidence": p[0]})
        >>> x = qc_channels(inp, ["confidence"], (2, 2))
        >>> x.shape
        torch.Size([3, 2, 2])
        >>> x[0].tolist() == (1 - p[0]).tolist() and x[2].tolist() == (1 - p[0]).tolist()  # fg_prob, 1 - conf
        True
        >>> x[1].tolist()  # fg_mask
        [[0.0, 1.0], [1.0, 1.0]]
    """
    where = f"case {inp.case_id!r}"
    size = tuple(int(s) for s in size)
    sp = inp.spatial_shape
    if len(size) != len(sp):
        raise DataError(f"{where}: has {len(sp)} spatial axes, the quality predictor's size {size} {len(size)}")
    if image_channels is None:
        image_channels = 0 if inp.image is None else int(inp.image.shape[0])
    parts: list[Tensor] = []
    if image_channels > 0:
        if inp.image is None:
            raise DataError(f"{where}: no image, but the quality predictor uses {image_channels} image channel(s)")
        if inp.image.shape[0] != image_channels:
            raise DataError(
                f"{where}: image has {inp.image.shape[0]} channel(s), the quality predictor {image_channels}"
            )
        img = inp.image.float()
        flat = img.flatten(1)
        mean = flat.mean(1).view(-1, *([1] * len(sp)))
        std = flat.std(1, unbiased=False).view(-1, *([1] * len(sp)))
        parts.append(_resize((img - mean) / torch.where(std > 0, std, torch.ones_like(std)), size, mask=False))
    probs = inp.probs.float()
    k = inp.num_classes
    prob = [1 - probs[0]] + ([probs[c] for c in range(1, k)] if k > 2 else [])
    parts.append(_resize(torch.stack(prob), size, mask=False))
    masks = [inp.seg > 0] + ([inp.seg == c for c in range(1, k)] if k > 2 else [])
    parts.append(_resize(torch.stack(masks).float(), size, mask=True))
    if map_names:
        missing = [m for m in map_names if m not in inp.maps]
        if missing:
            raise DataError(f"{where}: no uncertainty map {missing} (it has {sorted(inp.maps)})")
        maps = torch.stack([as_uncertainty(m, inp.maps[m].float()) for m in map_names])
        parts.append(_resize(maps, size, mask=False))
    x = torch.cat(parts).contiguous()
    bad = ~torch.isfinite(x.flatten(1)).all(1)
    if bool(bad.any()):
        names = channel_names(k, map_names, image_channels)
        raise DataError(f"{where}: non-finite values in channel(s) {[n for n, b in zip(names, bad) if b]}")
    return x
