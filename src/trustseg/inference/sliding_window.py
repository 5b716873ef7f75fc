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
import torch.nn.functional as F
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
    spatial = tuple(image.shape[2:])
    if len(patch) != len(spatial):
        raise ConfigError(f"patch_size {list(patch)} has {len(patch)} axes, the image has {len(spatial)}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    # Pad axes smaller than the patch (half before, half after).
    before = [max(0, p - s) // 2 for s, p in zip(spatial, patch)]
    after = [max(0, p - s) - b for s, p, b in zip(spatial, patch, before)]
    pad: list[int] = []
    for b, a in zip(reversed(before), reversed(after)):
        pad += [b, a]
    x = F.pad(image, pad) if any(pad) else image
    padded = tuple(x.shape[2:])

    strides = [max(1, int(round(p * (1 - overlap)))) for p in patch]
    grids = [window_starts(s, p, st) for s, p, st in zip(padded, patch, strides)]
    weight = blend_weights(patch, blend).to(image.device)

    acc: dict[str, Tensor] = {}
    norm = torch.zeros(padded, device=image.device)
    for starts in itertools.product(*grids):
        sl = tuple(slice(s, s + p) for s, p in zip(starts, patch))
        window: tuple[Any, ...] = (..., *sl)  # the window over the trailing spatial axes
        pred = predict_fn(x[(slice(None), slice(None), *sl)])
        parts = {"probs": pred.probs}
        if pred.alpha is not None:
            parts["alpha"] = pred.alpha
        parts.update({f"extra:{k}": v for k, v in pred.extras.items()})
        for name, t in parts.items():
            if name not in acc:
                acc[name] = torch.zeros((*t.shape[: t.dim() - len(patch)], *padded), device=image.device)
            acc[name][window] += t.float() * weight
        norm[sl] += weight

    crop: tuple[Any, ...] = (..., *(slice(b, b + s) for b, s in zip(before, spatial)))
    out = {name: (t / norm)[crop] for name, t in acc.items()}
    extras = {name.split(":", 1)[1]: t for name, t in out.items() if name.startswith("extra:")}
    return Predictive(probs=out["probs"], alpha=out.get("alpha"), extras=extras)
