"""Streaming core of the calibration metrics: one fixed-size, sum-mergeable state and the numbers read from it.

The public functions live in :mod:`trustseg.metrics.calibration`; this module holds what they share.

Everything here is computed from one fixed-size, sum-mergeable state (:func:`calibration_state`): per fine
confidence bin the count, Σ confidence and Σ "accuracy", for the top label and for every class, plus running
NLL and Brier sums. Two backends fill it with the same numbers: the compiled one-pass kernel
(:mod:`~trustseg.metrics.calibration_kernel`, no temporaries) where it is built, else the pure-torch path
(:mod:`~trustseg.metrics.calibration_torch`, chunks of ``chunk_size`` voxels). :class:`CalibrationAccumulator`
only sums these states.

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
  does). Edges are the exact reals b/n (the test is done in float64, exact for float32 inputs). torchmetrics
  instead compares float32 confidences with float32 edges: a float32 edge below b/n (31 of the 49 inner edges
  for n = 50, e.g. float32(0.7)) is its bin b and our bin b − 1, so "torchmetrics" mode equals torchmetrics'
  binning only away from those values (``docs/metrics_calibration.md``, Bins).
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

import math
from typing import Any, Literal

import torch
from torch import Tensor

from trustseg.core.errors import ConfigError, DataError
from trustseg.metrics import calibration_kernel as kernel
from trustseg.metrics import calibration_torch as torch_path
from trustseg.metrics.calibration_torch import CHUNK

Closed = Literal["left", "right", "torchmetrics"]
Backend = Literal["auto", "kernel", "torch"]
_CLOSED = ("left", "right", "torchmetrics")


def _fine_per_bin(bins: int, ace_resolution: int) -> int:
    """Fine bins per coarse bin, m = max(1, round(ace_resolution / bins)); the fine histogram has bins·m bins."""
    return max(1, round(ace_resolution / bins))


def check_args(bins: int, closed: str) -> None:
    if not isinstance(bins, int) or bins < 1:
        raise ConfigError(f"bins must be a positive integer, got {bins!r}")
    if closed not in _CLOSED:
        raise ConfigError(f"closed must be one of {_CLOSED}, got {closed!r}")


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
        opts: dict[str, Any] = {
            "binary": binary,
            "fine": fine,
            "closed": closed,
            "toplabel": toplabel,
            "classes": which,
        }
        if (
            use_kernel
            and kernel.supports(p_all, t_all, binary)
            and kernel.add_item(state, p_all, t_all, sum_tol=sum_tol, workers=workers, **opts)
        ):
            continue  # else: not taken, or invalid input (the torch path below raises the detailed error)
        torch_path.add_item(state, p_all, t_all, sum_tol=sum_tol, chunk_size=chunk_size, workers=workers, **opts)
    if state is None:
        raise DataError("empty batch: no image to score")
    return state


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
