"""Streaming core of the calibration metrics: one fixed-size, sum-mergeable state and the numbers read from it.

The public functions live in :mod:`trustseg.metrics.calibration`; this module holds what they share.

Everything here is computed from one fixed-size, sum-mergeable state (:func:`calibration_state`): per fine
confidence bin the count, Σ confidence and Σ "accuracy", for the top label and for every class, plus running
NLL and Brier sums. The voxels are streamed in chunks of ``chunk_size`` voxels, so a 256³ volume never needs a
temporary larger than a few chunk-sized arrays. :class:`CalibrationAccumulator` only sums these states.

Conventions (see ``docs/metrics_calibration.md``):

* **Inputs.** ``probs`` ``(K, *sp)`` (or ``(B, K, *sp)`` with ``batched=True``) class probabilities, each voxel
  summing to 1 (checked to ``sum_tol``); ``target`` a hard class map ``(*sp)`` (integers in ``[0, K)``) or a
  soft label ``(K, *sp)`` (floating, each voxel summing to 1, e.g. the mean of the raters' one-hot labels).
  With ``binary=True``, ``probs`` is the foreground probability map ``(*sp)`` = P(class 1) and ``target`` is
  ``(*sp)`` in {0, 1} (hard) or [0, 1] (soft); it is read as the two-class input ``[1 − p, p]``.
* **Top-label** (Guo et al. 2017): confidence c = max_k p_k, prediction k̂ = argmax_k p_k (first maximum on
  ties); accuracy a = 1[y = k̂] for a hard label, a = ȳ_k̂ for a soft label.
* **Class-wise** (Kull et al. 2019): for each class k, confidence p_k and accuracy 1[y = k] (or ȳ_k); the
  class-wise ECE is the unweighted mean over classes of the per-class ECEs (MONAI's ``CalibrationErrorMetric``
  with its default mean reduction over channels).
* **Foreground** (binary only; torchmetrics ``binary_calibration_error``): confidence = p (the foreground
  probability, not max(p, 1 − p)), accuracy = y. It is the class-wise entry of class 1.
* **Bins** (equal width on [0, 1]): bin b holds b/n ≤ c < (b+1)/n with the last bin closed (``closed="left"``,
  the default); ``closed="right"``: b/n < c ≤ (b+1)/n with the first bin closed at 0; ``closed="torchmetrics"``:
  as "left" plus an extra bin holding exactly c = 1 (what torchmetrics' ``bucketize(..., right=True) - 1``
  does). Edges are the exact reals b/n (the test is done in float64, exact for float32 inputs).
* ECE = Σ_b (n_b / N) |acc_b − conf_b| = Σ_b |Σacc_b − Σconf_b| / N; MCE = max over non-empty bins.
* ACE (Nixon et al. 2019, adaptive / equal-mass bins): for each class, the N confidences sorted and cut into
  ``bins`` ranges of equal count, ACE = mean over classes and ranges of |acc_r − conf_r|. Exact in
  :func:`ace`; the streaming state gives an approximation from its fine histogram (``*_approx`` keys), where the
  fine bin straddling a range boundary is split in proportion to counts.
* NLL = mean over voxels of −Σ_k ȳ_k ln max(p_k, eps) (hard label: −ln p_y), eps = machine epsilon of the
  probability dtype (as scikit-learn's ``log_loss``).
* Brier = mean over voxels of Σ_k (p_k − ȳ_k)² (sum over classes, range [0, 2]; Brier 1950). With
  ``brier_reduction="mean"`` it is divided by K; for K = 2 that equals scikit-learn's binary
  ``brier_score_loss`` (p − y)².
"""

from __future__ import annotations

import contextlib
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import torch
from torch import Tensor

from trustseg.core.errors import ConfigError, DataError
from trustseg.metrics import calibration_kernel as kernel

Closed = Literal["left", "right", "torchmetrics"]
Backend = Literal["auto", "kernel", "torch"]
CHUNK = 1 << 17
_CLOSED = ("left", "right", "torchmetrics")


def _fine_per_bin(bins: int, ace_resolution: int) -> int:
    """Fine bins per coarse bin, m = max(1, round(ace_resolution / bins)); the fine histogram has bins·m bins."""
    return max(1, round(ace_resolution / bins))


def check_args(bins: int, closed: str) -> None:
    if not isinstance(bins, int) or bins < 1:
        raise ConfigError(f"bins must be a positive integer, got {bins!r}")
    if closed not in _CLOSED:
        raise ConfigError(f"closed must be one of {_CLOSED}, got {closed!r}")


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


def iter_items(probs: Tensor, target: Tensor, binary: bool, batched: bool):
    """Yield (probs_2d (K, N) or (N,), target_1d (N,) or (K, N)) per image, as views where possible."""
    probs, target = torch.as_tensor(probs), torch.as_tensor(target)
    if binary:
        if probs.shape != target.shape:
            raise DataError(f"binary probs {tuple(probs.shape)} and target {tuple(target.shape)} differ in shape")
        yield probs.reshape(-1), target.reshape(-1)
        return
    if batched:
        if probs.ndim < 3 or target.shape[0] != probs.shape[0]:
            raise DataError(f"batched probs must be (B, K, *sp) with target (B, ...); got {tuple(probs.shape)}")
        for b in range(probs.shape[0]):
            yield from iter_items(probs[b], target[b], False, False)
        return
    k = probs.shape[0]
    if target.is_floating_point():
        if target.shape != probs.shape:
            raise DataError(f"soft target {tuple(target.shape)} must have the shape of probs {tuple(probs.shape)}")
        yield probs.reshape(k, -1), target.reshape(k, -1)
    else:
        if target.shape != probs.shape[1:]:
            raise DataError(f"hard target {tuple(target.shape)} must be probs' spatial shape {tuple(probs.shape[1:])}")
        yield probs.reshape(k, -1), target.reshape(-1)


def empty_state(num_classes: int, bins: int = 15, ace_resolution: int = 2048) -> dict[str, Tensor]:
    """All-zero calibration state: ``top`` (3, S), ``cls`` (K, 3, S), ``nll``, ``brier``, ``n`` (float64).

    S = bins·m + 1 fine slots (m from ``ace_resolution``; the last slot holds c = 1 in torchmetrics mode).
    """
    size = bins * _fine_per_bin(bins, ace_resolution) + 1
    z = torch.zeros((), dtype=torch.float64)
    return {
        "top": torch.zeros(3, size, dtype=torch.float64),
        "cls": torch.zeros(num_classes, 3, size, dtype=torch.float64),
        "nll": z.clone(),
        "brier": z.clone(),
        "n": z.clone(),
    }


def _terms_binary(p: Tensor, t: Tensor, a: int, classes, toplabel: bool):
    """Chunk terms of a foreground map p (n,) with t (n,): [(slot, conf, acc)], Σ NLL, Σ Brier (no [1−p, p] copy)."""
    validate_binary(p, a, "foreground probabilities")
    q = 1 - p
    eps = torch.finfo(p.dtype).eps
    if t.is_floating_point():
        t = t.to(p.dtype)
        validate_binary(t, a, "soft foreground labels")
        y1, y0, py = t, 1 - t, None
        nll = -(t * p.clamp_min(eps).log() + y0 * q.clamp_min(eps).log()).sum(dtype=torch.float64)
    else:
        if bool((t.amax() > 1) | (t.amin() < 0)):
            raise DataError(f"binary labels must be 0 or 1; found values {sorted(t.unique().tolist())}")
        y1 = t.bool()
        y0 = ~y1
        py = torch.lerp(q, p, t.to(p.dtype))  # probability of the true class (exact for weights 0 and 1)
        nll = -py.clamp_min(eps).log().sum(dtype=torch.float64)
    brier = 2 * ((1 - py) if y1.dtype == torch.bool else (p - t)).square().sum(dtype=torch.float64)
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


def calibration_state(
    probs: Tensor,
    target: Tensor,
    *,
    bins: int = 15,
    closed: Closed = "left",
    ace_resolution: int = 2048,
    binary: bool = False,
    batched: bool = False,
    toplabel: bool = True,
    classes: bool | list[int] = True,
    sum_tol: float = 1e-4,
    chunk_size: int = CHUNK,
    workers: int | None = None,
    backend: Backend = "auto",
) -> dict[str, Tensor]:
    """Fixed-size, sum-mergeable calibration state of one prediction (one streaming pass).

    Args:
        probs: ``(K, *sp)`` probabilities, ``(B, K, *sp)`` with ``batched``, or ``(*sp)`` foreground with ``binary``.
        target: hard ``(*sp)`` int map, soft ``(K, *sp)`` label, or ``(*sp)`` with ``binary``.
        bins: Equal-width bins of the ECE / MCE / reliability diagram.
        closed: Bin-edge convention, "left", "right" or "torchmetrics" (module docstring).
        ace_resolution: About how many fine bins the ACE approximation uses.
        binary: ``probs`` is the foreground probability (read as ``[1 − p, p]``, K = 2).
        batched: ``probs`` is ``(B, K, *sp)``.
        toplabel: Fill the top-label histogram.
        classes: Classes whose class-wise histograms are filled: True (all), False (none) or a list
            (e.g. ``[1]`` for the binary foreground ECE alone). Each class costs about one top-label pass.
        sum_tol: Tolerance on Σ_k p_k = 1 (and on the soft label's sum).
        chunk_size: Voxels processed at a time by the torch path (temporaries are a few chunk-sized arrays per
            worker); the compiled kernel needs no temporaries.
        workers: Threads working in parallel (default: ``torch.get_num_threads()``). The kernel gives each thread
            one contiguous voxel range; the torch path gives them chunks and runs torch single-threaded during
            the call (the global setting is restored afterwards).
        backend: "auto" (the compiled kernel of :mod:`~trustseg.metrics.calibration_kernel` where it is built
            and takes the input, else torch), "kernel" (as auto, but an error if the kernel is not built) or
            "torch" (always the pure-torch path). Both give the same state up to float64 summation order.

    Returns:
        The state of :func:`empty_state`, filled (histograms not asked for stay zero).

    Raises:
        DataError: NaN/inf or negative probabilities, sums off 1, labels out of range, shape mismatch.
        ConfigError: Bad ``bins``, ``closed``, ``classes`` or ``backend``; ``backend="kernel"`` without a kernel.
    """
    check_args(bins, closed)
    if backend not in ("auto", "kernel", "torch"):
        raise ConfigError(f"backend must be 'auto', 'kernel' or 'torch', got {backend!r}")
    if backend == "kernel" and not kernel.available():
        raise ConfigError(f"backend='kernel' but the compiled calibration kernel is {kernel.why_unavailable()}")
    use_kernel = backend != "torch" and kernel.available()
    fine = bins * _fine_per_bin(bins, ace_resolution)
    state: dict[str, Tensor] | None = None
    workers = max(1, torch.get_num_threads() if workers is None else workers)
    for p_all, t_all in iter_items(probs, target, binary, batched):
        k = 2 if binary else p_all.shape[0]
        if state is None:
            state = empty_state(k, bins, ace_resolution)
        which = list(range(k)) if classes is True else list(classes or [])
        if any(not 0 <= c < k for c in which):
            raise ConfigError(f"classes {which} out of range for {k} classes")
        opts = {"binary": binary, "fine": fine, "closed": closed, "toplabel": toplabel, "classes": which}
        if (
            use_kernel
            and kernel.supports(p_all, t_all, binary)
            and kernel.add_item(state, p_all, t_all, sum_tol=sum_tol, workers=workers, **opts)
        ):
            continue  # else: not taken, or invalid input (the torch path below raises the detailed error)
        part = _torch_item(p_all, t_all, k, bins, ace_resolution, sum_tol, chunk_size, workers, **opts)
        state = merge_states(state, part)
    if state is None:
        raise DataError("empty batch: no image to score")
    return state


def _torch_item(
    p_all: Tensor,
    t_all: Tensor,
    k: int,
    bins: int,
    ace_resolution: int,
    sum_tol: float,
    chunk_size: int,
    workers: int,
    *,
    binary: bool,
    fine: int,
    closed: str,
    toplabel: bool,
    classes: list[int],
) -> dict[str, Tensor]:
    """State of one item by the pure-torch path: chunks of ``chunk_size`` voxels over a thread pool."""

    def one_chunk(a: int) -> dict[str, Tensor]:
        p, t = p_all[..., a : a + chunk_size], t_all[..., a : a + chunk_size]
        if p.dtype not in (torch.float32, torch.float64):
            p = p.float()
        if binary:
            terms, nll_sum, brier_sum = _terms_binary(p, t, a, classes, toplabel)
        else:
            terms, nll_sum, brier_sum = _terms_multi(p, t, a, classes, toplabel, sum_tol)
        part = empty_state(k, bins, ace_resolution)
        part["nll"] += nll_sum
        part["brier"] += brier_sum
        part["n"] += p.shape[-1]
        for slot, conf, acc in terms:
            h = _hist(_fine_index(conf, fine, closed), conf, acc, fine + 1)
            if slot < 0:
                part["top"] += h
            else:
                part["cls"][slot] += h
        return part

    state = empty_state(k, bins, ace_resolution)
    with _single_threaded(), ThreadPoolExecutor(workers) as pool:
        for part in pool.map(one_chunk, range(0, p_all.shape[-1], chunk_size)):
            state = merge_states(state, part)
    return state


@contextlib.contextmanager
def _single_threaded():
    """Run torch ops single-threaded inside (chunks are parallelised by a thread pool instead); restores after.

    Many small intra-op parallel regions are slow, badly so on a shared machine (measured 5–30× slower than
    single-threaded chunks on 2 busy cores); coarse-grained parallelism over chunks is not.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def merge_states(a: dict[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
    """Sum of two calibration states (same bins, resolution and number of classes)."""
    if a["cls"].shape != b["cls"].shape:
        raise ConfigError(f"cannot merge calibration states of shapes {a['cls'].shape} and {b['cls'].shape}")
    return {key: a[key] + b[key] for key in a}


def _coarse(h: Tensor, bins: int, closed: str) -> Tensor:
    """(..., 3, S) fine state -> (..., 3, B) coarse bins (B = bins, + 1 extra bin for c = 1 in torchmetrics mode)."""
    fine = h.shape[-1] - 1
    c = h[..., :fine].reshape(*h.shape[:-1], bins, fine // bins).sum(-1)
    return torch.cat([c, h[..., fine:]], -1) if closed == "torchmetrics" else c


def _ece_mce(c: Tensor) -> tuple[Tensor, Tensor]:
    """ECE and MCE from coarse (..., 3, B) bins; NaN when no voxel was seen."""
    count, sconf, sacc = c.unbind(-2)
    n = count.sum(-1)
    ece = (sacc - sconf).abs().sum(-1) / n
    gap = torch.where(count > 0, (sacc - sconf).abs() / count.clamp_min(1), torch.full_like(count, -1.0))
    mce = gap.amax(-1)
    return ece, torch.where(n > 0, mce, torch.full_like(mce, math.nan))


def _ace_from_hist(h: Tensor, ranges: int) -> Tensor:
    """Equal-mass ACE approximated from a fine (..., 3, S) histogram; mean over ranges of |acc_r − conf_r|."""
    count = h[..., 0, :]
    cum = count.cumsum(-1)
    lo_bin, hi_bin = cum - count, cum
    n = cum[..., -1:]
    r = torch.arange(ranges, dtype=torch.float64)
    lo_r, hi_r = (r * n / ranges)[..., :, None], ((r + 1) * n / ranges)[..., :, None]  # (..., R, 1)
    overlap = (torch.minimum(hi_bin[..., None, :], hi_r) - torch.maximum(lo_bin[..., None, :], lo_r)).clamp_min(0)
    w = overlap / count.clamp_min(1e-300)[..., None, :]
    sums = w @ h.transpose(-1, -2)  # (..., R, 3)
    gap = (sums[..., 2] - sums[..., 1]).abs() / sums[..., 0].clamp_min(1e-300)
    return gap.mean(-1)


def metrics_from_state(state: dict[str, Tensor], bins: int = 15, closed: Closed = "left") -> dict[str, Any]:
    """Every calibration number of a state (see the module docstring for the conventions).

    Returns:
        dict with ``ece_toplabel``, ``mce_toplabel``, ``ace_toplabel_approx``, ``ece_classwise``,
        ``mce_classwise`` (max over classes), ``ace_classwise_approx``, ``ece_classwise_per_class`` (K,),
        ``mce_classwise_per_class`` (K,), for K = 2 also ``ece_foreground`` / ``mce_foreground`` (class 1),
        ``nll``, ``brier`` (sum over classes), ``n_voxels``. Class-wise entries are NaN if not accumulated.
    """
    check_args(bins, closed)
    n = float(state["n"])
    ece_t, mce_t = _ece_mce(_coarse(state["top"], bins, closed))
    seen = state["cls"][:, 0].sum(-1) > 0  # classes whose histograms were filled
    cls_seen = bool(seen.any())
    ece_k, mce_k = _ece_mce(_coarse(state["cls"], bins, closed))
    nan_k = torch.full_like(ece_k, math.nan)
    ece_k, mce_k = torch.where(seen, ece_k, nan_k), torch.where(seen, mce_k, nan_k)
    out: dict[str, Any] = {
        "ece_toplabel": float(ece_t),
        "mce_toplabel": float(mce_t),
        "ace_toplabel_approx": float(_ace_from_hist(state["top"], bins)),
        "ece_classwise": float(ece_k[seen].mean()) if cls_seen else math.nan,
        "mce_classwise": float(mce_k[seen].max()) if cls_seen else math.nan,
        "ace_classwise_approx": float(_ace_from_hist(state["cls"], bins)[seen].mean()) if cls_seen else math.nan,
        "ece_classwise_per_class": ece_k.tolist(),
        "mce_classwise_per_class": mce_k.tolist(),
        "nll": float(state["nll"]) / n if n else math.nan,
        "brier": float(state["brier"]) / n if n else math.nan,
        "n_voxels": int(n),
    }
    if state["cls"].shape[0] == 2:
        out["ece_foreground"], out["mce_foreground"] = float(ece_k[1]), float(mce_k[1])
    return out


def reliability_from_state(
    state: dict[str, Tensor], bins: int = 15, closed: Closed = "left", convention: str = "toplabel"
) -> dict[str, Tensor]:
    """Reliability-diagram data: per bin ``lower``/``upper`` edge, mean ``confidence``, ``accuracy``, ``count``.

    ``convention`` "toplabel" gives (B,) arrays, "classwise" (K, B), "foreground" (B,) (class 1 of a K = 2 state).
    Empty bins have NaN confidence and accuracy. In torchmetrics mode the extra last bin is [1, 1].
    """
    check_args(bins, closed)
    if convention == "toplabel":
        c = _coarse(state["top"], bins, closed)
    elif convention in ("classwise", "foreground"):
        c = _coarse(state["cls"], bins, closed)
        c = c[1] if convention == "foreground" else c
    else:
        raise ConfigError(f"convention must be 'toplabel', 'classwise' or 'foreground', got {convention!r}")
    count, sconf, sacc = c.unbind(-2)
    safe = count.clamp_min(1)
    nan = torch.full_like(count, math.nan)
    edges = torch.arange(bins + 1, dtype=torch.float64) / bins
    lower, upper = edges[:-1], edges[1:]
    if closed == "torchmetrics":
        one = torch.ones(1, dtype=torch.float64)
        lower, upper = torch.cat([lower, one]), torch.cat([upper, one])
    return {
        "lower": lower,
        "upper": upper,
        "confidence": torch.where(count > 0, sconf / safe, nan),
        "accuracy": torch.where(count > 0, sacc / safe, nan),
        "count": count,
    }
