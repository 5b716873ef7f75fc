"""Pure-torch path of :func:`~trustseg.metrics.calibration_state.calibration_state` (the fallback of the kernel).

Chunks of ``chunk_size`` voxels are validated and turned into per-chunk terms (confidence and accuracy per
histogram, Σ NLL, Σ Brier) with torch ops, on a thread pool with torch's own intra-op threading off for the
duration of the call (many small parallel regions are slow on a busy machine). It fills the same state as the
compiled kernel (:mod:`trustseg.metrics.calibration_kernel`) with the same conventions, and owns the detailed
validation errors: the kernel hands invalid input back here. Conventions: :mod:`trustseg.metrics.calibration_state`.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from trustseg.core.errors import DataError
from trustseg.metrics.voxel_stats import single_threaded

CHUNK = 1 << 17


def _fine_index(x: Tensor, fine: int, closed: str) -> Tensor:
    """Fine bin of every confidence in ``x`` (values in [0, 1]); slot ``fine`` holds x = 1 in torchmetrics mode."""
    t = x.double() * fine  # exact for float32 x: the edges are the exact reals j / fine
    if closed == "right":
        idx = torch.ceil(t).int() - 1
        return idx.clamp_(0, fine - 1)
    idx = t.int()  # floor, x >= 0 (int32: cheaper than int64, enough for any histogram here)
    # "left": the last bin is closed; "torchmetrics": a K-class p_k may exceed 1 by up to the sum tolerance
    idx.clamp_(max=fine - 1 if closed == "left" else fine)
    return idx


def _hist(idx: Tensor, conf: Tensor, acc: Tensor, size: int) -> Tensor:
    """(3, size) float64: per bin count, Σ confidence, Σ accuracy (acc bool for hard labels, float for soft)."""
    if acc.dtype == torch.bool:
        pair = torch.bincount(torch.add(acc, idx, alpha=2), minlength=2 * size).view(size, 2).double()
        count, sacc = pair.sum(1), pair[:, 1]
    else:
        count = torch.bincount(idx, minlength=size).double()
        sacc = torch.bincount(idx, weights=acc.double(), minlength=size)
    sconf = torch.bincount(idx, weights=conf.double(), minlength=size)
    return torch.stack([count, sconf, sacc])


def validate_probabilities(p: Tensor, start: int, sum_tol: float, what: str = "probabilities") -> None:
    """Raise :class:`DataError` for NaN/inf, negative values or voxels whose K values do not sum to 1."""
    s = p.sum(0)
    if not float((s - 1).abs_().amax()) <= sum_tol:  # NaN propagates through amax and fails the test
        bad = ~((s - 1).abs() <= sum_tol)
        i = int(bad.nonzero()[0, 0])
        if not bool(torch.isfinite(p[:, i]).all()):
            raise DataError(f"{what} contain NaN or inf (first at flat voxel {start + i})")
        raise DataError(
            f"{what} do not sum to 1 over the classes (flat voxel {start + i} sums to {float(s[i]):.6g}; "
            f"tolerance {sum_tol:g}); pass probabilities (softmax), not logits, or normalise them"
        )
    if bool((p.amin() < 0).item()):
        raise DataError(f"{what} contain negative values")


def validate_binary(p: Tensor, start: int, what: str) -> None:
    lo, hi = torch.aminmax(p)  # NaN propagates
    if not (float(lo) >= 0 and float(hi) <= 1):
        ok = (p >= 0) & (p <= 1)
        i = int((~ok).nonzero()[0, 0])
        v = float(p[i])
        problem = "NaN or inf" if not math.isfinite(v) else f"a value outside [0, 1] ({v:.6g})"
        raise DataError(f"{what} contain {problem} (first at flat voxel {start + i})")


def _terms_binary(p: Tensor, t: Tensor, a: int, classes, toplabel: bool):
    """Chunk terms of a foreground map p (n,) with t (n,): [(slot, conf, acc)], Σ NLL, Σ Brier (no [1−p, p] copy)."""
    validate_binary(p, a, "foreground probabilities")
    q = 1 - p
    eps = torch.finfo(p.dtype).eps
    if t.is_floating_point():
        t = t.to(p.dtype)
        validate_binary(t, a, "soft foreground labels")
        y1, y0 = t, 1 - t
        nll = -(t * p.clamp_min(eps).log() + y0 * q.clamp_min(eps).log()).sum(dtype=torch.float64)
        brier = 2 * (p - t).square().sum(dtype=torch.float64)
    else:
        if bool((t.amax() > 1) | (t.amin() < 0)):
            raise DataError(f"binary labels must be 0 or 1; found values {sorted(t.unique().tolist())}")
        y1 = t.bool()
        y0 = ~y1
        py = torch.lerp(q, p, t.to(p.dtype))  # probability of the true class (exact for weights 0 and 1)
        nll = -py.clamp_min(eps).log().sum(dtype=torch.float64)
        brier = 2 * (1 - py).square().sum(dtype=torch.float64)
    terms = []
    if toplabel:
        pred1 = p > q  # argmax of [1 − p, p], first maximum (class 0) on ties
        acc = (pred1 == y1) if y1.dtype == torch.bool else torch.where(pred1, y1, y0)
        terms.append((-1, torch.maximum(p, q), acc))
    for k in classes:
        terms.append((k, q, y0) if k == 0 else (k, p, y1))
    return terms, nll, brier


def _terms_multi(p: Tensor, t: Tensor, a: int, classes, toplabel: bool, sum_tol: float):
    """Chunk terms of K-class probabilities p (K, n) with hard t (n,) or soft t (K, n)."""
    validate_probabilities(p, a, sum_tol)
    k = p.shape[0]
    eps = torch.finfo(p.dtype).eps
    soft = t.is_floating_point()
    if soft:
        t = t.to(p.dtype)
        validate_probabilities(t, a, sum_tol, "soft labels")
        nll = -(t * p.clamp_min(eps).log()).sum(dtype=torch.float64)
        brier = (p - t).square().sum(dtype=torch.float64)
    else:
        if bool((t.amax() >= k) | (t.amin() < 0)):
            raise DataError(f"labels must lie in [0, {k}); found values {sorted(t.unique().tolist())}")
        t = t.long()
        py = p.gather(0, t[None])[0]
        nll = -py.clamp_min(eps).log().sum(dtype=torch.float64)
        brier = p.square().sum(dtype=torch.float64) - 2 * py.sum(dtype=torch.float64) + p.shape[1]
    terms = []
    if toplabel and soft:
        conf, pred = p.max(0)  # first maximum on ties, as torch.argmax and torchmetrics
        terms.append((-1, conf, t.gather(0, pred[None])[0]))
    elif toplabel:
        # argmax == y  <=>  p_y is the maximum and no earlier class ties with it. Cheaper than p.max(0), which
        # reduces over the strided class axis; voxels with tied maxima are resolved exactly with argmax.
        conf = p.amax(0)
        acc = py == conf
        ties = (p == conf).sum(0, dtype=torch.uint8) > 1
        if bool(ties.any()):
            acc[ties] = p[:, ties].argmax(0) == t[ties]
        terms.append((-1, conf, acc))
    for c in classes:
        terms.append((c, p[c], t[c] if soft else t == c))
    return terms, nll, brier


def add_item(
    state: dict[str, Tensor],
    p_all: Tensor,
    t_all: Tensor,
    *,
    binary: bool,
    fine: int,
    closed: str,
    toplabel: bool,
    classes: list[int],
    sum_tol: float,
    chunk_size: int,
    workers: int,
) -> None:
    """Add one item into ``state`` (in place): chunks of ``chunk_size`` voxels over ``workers`` threads.

    Args as :func:`trustseg.metrics.calibration_kernel.add_item`, plus ``chunk_size``. Raises
    :class:`DataError` on invalid input (the first bad chunk in voxel order names its first bad voxel).
    """

    def one_chunk(a: int) -> tuple[list[tuple[int, Tensor]], Tensor, Tensor, int]:
        p, t = p_all[..., a : a + chunk_size], t_all[..., a : a + chunk_size]
        if p.dtype not in (torch.float32, torch.float64):
            p = p.float()
        if binary:
            terms, nll_sum, brier_sum = _terms_binary(p, t, a, classes, toplabel)
        else:
            terms, nll_sum, brier_sum = _terms_multi(p, t, a, classes, toplabel, sum_tol)
        hists = [(slot, _hist(_fine_index(conf, fine, closed), conf, acc, fine + 1)) for slot, conf, acc in terms]
        return hists, nll_sum, brier_sum, p.shape[-1]

    with single_threaded(), ThreadPoolExecutor(workers) as pool:
        for hists, nll_sum, brier_sum, n in pool.map(one_chunk, range(0, p_all.shape[-1], chunk_size)):
            for slot, h in hists:
                (state["top"] if slot < 0 else state["cls"][slot]).add_(h)
            state["nll"] += nll_sum
            state["brier"] += brier_sum
            state["n"] += n
