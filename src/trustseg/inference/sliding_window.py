"""Sliding-window inference: predict a large volume patch by patch and blend the patches.

Windows of ``patch_size`` are placed on a regular grid with stride ``round(patch * (1 - overlap))`` per axis; the
last window of each axis is shifted back to end exactly at the border, so sizes that are not multiples of the
stride are covered without padding. Axes smaller than the patch are zero-padded (at both ends) and the result
cropped back.

Every output (``probs`` ``(M, B, K, *sp)``, ``alpha`` ``(B, K, *sp)`` and each extra map ``(B, C_e, *sp)``) is the
weighted average of the windows covering a voxel, ``out(v) = Σ_w g_w(v) f_w(v) / Σ_w g_w(v)``, with weights
``g`` either constant or a Gaussian centred on the window (σ = patch / 8 per axis, as in nnU-Net, floored at
1e-3 of its peak so that borders keep a positive weight). Averaged probabilities still sum to one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from trustseg.core.errors import ConfigError
from trustseg.core.predictive import Predictive


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start offsets along one axis covering ``[0, size)`` with windows of ``patch`` (``size >= patch``)."""
    if size <= patch:
        return [0]
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def blend_weights(patch: Sequence[int], blend: Literal["gaussian", "constant"] = "gaussian") -> Tensor:
    """Blending weights ``(*patch)`` float32 for one window."""
    if blend == "constant":
        return torch.ones(tuple(patch))
    if blend != "gaussian":
        raise ValueError(f"blend must be 'gaussian' or 'constant', got {blend!r}")
    w = torch.ones(())
    for p in patch:
        x = torch.arange(p, dtype=torch.float64) - (p - 1) / 2
        g = torch.exp(-0.5 * (x / (p / 8)) ** 2)
        w = w.unsqueeze(-1) * g
    w = w / w.max()
    return w.clamp_min(1e-3).float()


def sliding_window_predict(
    predict_fn: Callable[[Tensor], Predictive],
    image: Tensor,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    blend: Literal["gaussian", "constant"] = "gaussian",
) -> Predictive:
    """Predict ``image`` window by window and blend the windows into one :class:`Predictive`.

    Memory: one float32 accumulator per output, ``(M·K + K_alpha + Σ C_e) · N`` values for ``N`` voxels,
    allocated once at the image's own size (padding for axes smaller than the patch exists only inside each
    window); the weights of a window are computed once, each window is added in place (``addcmul_``), and the
    final division runs slab by slab. The weight sum ``Σ_w g_w`` is not stored: it is the class sum of the
    accumulated probabilities of the first sample (every window's probabilities sum to one over ``K``), so the
    blended probabilities sum to one exactly.

    Args:
        predict_fn: Maps a window ``(B, C, *patch)`` to a Predictive over the same window.
        image: ``(B, C, *spatial)``.
        patch_size: Window size per spatial axis.
        overlap: Fraction of a window shared with its neighbour along each axis, in ``[0, 1)``.
        blend: ``gaussian`` (centre-weighted) or ``constant`` (plain average).

    Returns:
        Predictive with ``probs`` ``(M, B, K, *spatial)`` (and ``alpha``/extras when ``predict_fn`` gives them),
        on the device of ``image``, float32.
    """
    patch = tuple(int(p) for p in patch_size)
    spatial = tuple(int(s) for s in image.shape[2:])
    if len(patch) != len(spatial):
        raise ConfigError(f"patch_size {list(patch)} has {len(patch)} axes, the image has {len(spatial)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    # Axes smaller than the patch are padded (half before, half after): windows live in padded coordinates.
    before = [max(0, p - s) // 2 for s, p in zip(spatial, patch)]
    padded = tuple(max(s, p) for s, p in zip(spatial, patch))
    strides = [max(1, int(round(p * (1 - overlap)))) for p in patch]
    grids = [window_starts(s, p, st) for s, p, st in zip(padded, patch, strides)]
    weight = blend_weights(patch, blend).to(image.device)

    acc: dict[str, Tensor] = {}
    for starts in itertools.product(*grids):
        # the window's part inside the image, in image coordinates (src) and in window coordinates (loc)
        src = tuple(slice(max(0, s - b), min(n, s - b + p)) for s, b, p, n in zip(starts, before, patch, spatial))
        loc = tuple(slice(r.start - (s - b), r.stop - (s - b)) for r, s, b in zip(src, starts, before))
        inside = image[(slice(None), slice(None), *src)]
        if tuple(inside.shape[2:]) == patch:
            window = inside
        else:  # zero-padded only where the image is smaller than the patch
            window = image.new_zeros((*image.shape[:2], *patch))
            window[(slice(None), slice(None), *loc)] = inside
        pred = predict_fn(window)
        parts = {"probs": pred.probs}
        if pred.alpha is not None:
            parts["alpha"] = pred.alpha
        parts.update({f"extra:{k}": v for k, v in pred.extras.items()})
        w = weight[loc]
        for name, t in parts.items():
            if name not in acc:
                acc[name] = torch.zeros((*t.shape[: t.dim() - len(patch)], *spatial), device=image.device)
            dst: tuple[Any, ...] = (..., *src)
            part: tuple[Any, ...] = (..., *loc)
            acc[name][dst].addcmul_(t[part].float(), w)
    _normalise(acc)
    extras = {name.split(":", 1)[1]: t for name, t in acc.items() if name.startswith("extra:")}
    return Predictive(probs=acc["probs"], alpha=acc.get("alpha"), extras=extras)


def _normalise(acc: dict[str, Tensor], slab_voxels: int = 1 << 20) -> None:
    """Divide every accumulator in place by the weight sum ``Σ_k acc["probs"][0, :, k]``, slab by slab along the
    first spatial axis (temporaries of about ``slab_voxels`` values)."""
    probs = acc["probs"]
    spatial = tuple(probs.shape[3:])
    per_slice = max(1, int(torch.tensor(spatial[1:]).prod().item()) if len(spatial) > 1 else 1)
    step = max(1, slab_voxels // per_slice)
    for i in range(0, spatial[0], step):
        sl = slice(i, min(spatial[0], i + step))
        norm = probs[0, :, :, sl].sum(1, keepdim=True)  # (B, 1, slab, *rest)
        for t in acc.values():
            slab: tuple[Any, ...] = (..., sl, *(slice(None),) * (len(spatial) - 1))
            t[slab].div_(norm)
