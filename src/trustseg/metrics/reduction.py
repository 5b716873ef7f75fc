"""The NaN-aware reduction every average of metric values goes through.

Metrics mark an undefined value (a class absent from both maps under ``empty="nan"``, a constant map's
correlation, a case without errors, ...) as NaN. Averages over classes, raters, cases or images skip those
values with :func:`nanmean`: the evaluation suite, the engine and the per-metric helpers (e.g.
:func:`trustseg.metrics.overlap.dice_vs_raters`'s ``mean_rater``) all use this one function, so a NaN is treated
the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor


def nanmean(x: Tensor | np.ndarray | Iterable[float], dim: int | None = None) -> Tensor:
    """Mean that ignores NaN values; NaN where a slice has no finite value.

    ``nanmean(x) = Σ_{i: x_i ≠ NaN} x_i / #{i: x_i ≠ NaN}``, and NaN when no ``x_i`` is finite (an empty input,
    all NaN, or only ±inf). An infinite value among finite ones is kept (the mean is then infinite): it is
    a value, not a missing one.

    Args:
        x: A tensor, a numpy array or an iterable of numbers (a list, nested lists, a generator of floats, ...).
        dim: Axis to reduce; ``None`` reduces everything to a scalar.

    Returns:
        A tensor: ``x.shape`` without ``dim`` (a 0-d tensor for ``dim=None``). Floating inputs keep their dtype;
        integer and bool tensors/arrays and Python iterables give float64.

    Example:
        >>> nanmean([1.0, float("nan"), 2.0])
        tensor(1.5000, dtype=torch.float64)
        >>> nanmean([float("nan")])
        tensor(nan, dtype=torch.float64)
        >>> nanmean(torch.tensor([[1.0, float("nan")], [3.0, 5.0]]), dim=0)
        tensor([2., 5.])
    """
    if isinstance(x, Tensor):
        t = x
    elif isinstance(x, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("=")))
    else:
        t = torch.as_tensor(list(x), dtype=torch.float64)
    if not t.is_floating_point():
        t = t.double()
    finite = torch.isfinite(t)
    if dim is None:
        return torch.nanmean(t) if bool(finite.any()) else torch.tensor(torch.nan, dtype=t.dtype, device=t.device)
    out = torch.nanmean(t, dim=dim)
    return torch.where(finite.any(dim), out, torch.full_like(out, torch.nan))
