"""Calibration metrics: top-label / class-wise / foreground ECE, MCE, ACE, NLL, Brier, reliability diagrams.

The conventions (inputs, top-label vs class-wise vs foreground, bin edges, ACE, NLL, Brier) are stated in
:mod:`trustseg.metrics.calibration_state`, which holds the fixed-size, sum-mergeable state every number here is
computed from. :class:`CalibrationAccumulator` only sums such states, so it streams over voxels, images and
processes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from trustseg.core.errors import ConfigError, DataError
from trustseg.data.targets import soft_label  # re-exported: calibration against the soft label
from trustseg.metrics.calibration_state import (
    CHUNK,
    Closed,
    calibration_state,
    check_args,
    empty_state,
    iter_items,
    merge_states,
    metrics_from_state,
    reliability_from_state,
)
from trustseg.metrics.calibration_torch import validate_binary, validate_probabilities
from trustseg.metrics.registry import METRICS

__all__ = [
    "CHUNK",
    "CalibrationAccumulator",
    "Closed",
    "calibration_state",
    "empty_state",
    "merge_states",
    "metrics_from_state",
    "reliability_from_state",
]


class CalibrationAccumulator:
    """Streams calibration over voxels, images and processes; state is O(K · bins · m), never voxels.

    Args:
        num_classes: K (2 for binary inputs given as a foreground map).
        bins: Equal-width bins of ECE/MCE.
        closed: Bin-edge convention ("left", "right", "torchmetrics").
        ace_resolution: Fine bins (about) behind the ACE approximation.
        toplabel: Keep the top-label histogram.
        classes: Class-wise histograms to keep: True (all), False (none) or a list (``[1]``: foreground only).
        chunk_size: Voxels processed at a time in :meth:`update`.

    Example:
        >>> acc = CalibrationAccumulator(4)
        >>> for probs, label in cases:  # (4, D, H, W), (D, H, W)
        ...     acc.update(probs, label)
        >>> acc.compute()["ece_toplabel"]
    """

    def __init__(
        self,
        num_classes: int,
        bins: int = 15,
        *,
        closed: Closed = "left",
        ace_resolution: int = 2048,
        toplabel: bool = True,
        classes: bool | list[int] = True,
        chunk_size: int = CHUNK,
    ):
        check_args(bins, closed)
        self.num_classes, self.bins, self.closed = num_classes, bins, closed
        self.ace_resolution, self.chunk_size = ace_resolution, chunk_size
        self.toplabel, self.classes = toplabel, classes
        self.state = empty_state(num_classes, bins, ace_resolution)

    def update(self, probs: Tensor, target: Tensor, *, binary: bool = False, batched: bool = False) -> None:
        """Add one prediction (shapes as in :func:`calibration_state`)."""
        s = calibration_state(
            probs,
            target,
            bins=self.bins,
            closed=self.closed,
            ace_resolution=self.ace_resolution,
            binary=binary,
            batched=batched,
            toplabel=self.toplabel,
            classes=self.classes,
            chunk_size=self.chunk_size,
        )
        if s["cls"].shape[0] != self.num_classes:
            raise DataError(f"expected {self.num_classes} classes, got {s['cls'].shape[0]}")
        self.state = merge_states(self.state, s)

    def merge(self, other: CalibrationAccumulator) -> CalibrationAccumulator:
        """Add another accumulator's state (same settings) into this one; returns self."""
        if (other.bins, other.closed) != (self.bins, self.closed):
            raise ConfigError("cannot merge calibration accumulators with different bins or edge conventions")
        self.state = merge_states(self.state, other.state)
        return self

    def compute(self) -> dict[str, Any]:
        """All metrics of :func:`metrics_from_state`."""
        return metrics_from_state(self.state, self.bins, self.closed)

    def reliability(self, convention: str = "toplabel") -> dict[str, Tensor]:
        """Reliability-diagram data (:func:`reliability_from_state`)."""
        return reliability_from_state(self.state, self.bins, self.closed, convention)


# ----------------------------------------------------------------------------------------------------------------
# One-shot functions (each a thin view of calibration_state), registered in METRICS.


def calibration_metrics(probs: Tensor, target: Tensor, **kw: Any) -> dict[str, Any]:
    """All calibration numbers of one prediction: :func:`calibration_state` then :func:`metrics_from_state`.

    Keyword arguments are those of :func:`calibration_state` (``bins``, ``closed``, ``binary``, ``batched``, ...).
    """
    state = calibration_state(probs, target, **kw)
    return metrics_from_state(state, kw.get("bins", 15), kw.get("closed", "left"))


def ece_toplabel(probs: Tensor, target: Tensor, *, bins: int = 15, closed: Closed = "left", **kw: Any) -> float:
    """Top-label ECE: Σ_b (n_b/N) |acc_b − conf_b| with c = max_k p_k, acc = 1[y = argmax p] (or ȳ_argmax)."""
    return calibration_metrics(probs, target, bins=bins, closed=closed, classes=False, **kw)["ece_toplabel"]


def mce_toplabel(probs: Tensor, target: Tensor, *, bins: int = 15, closed: Closed = "left", **kw: Any) -> float:
    """Top-label MCE: max over non-empty bins of |acc_b − conf_b| (top-label confidence)."""
    return calibration_metrics(probs, target, bins=bins, closed=closed, classes=False, **kw)["mce_toplabel"]


def ece_classwise(probs: Tensor, target: Tensor, *, bins: int = 15, closed: Closed = "left", **kw: Any) -> float:
    """Class-wise ECE: (1/K) Σ_k Σ_b (n_kb/N) |acc_kb − conf_kb| with confidence p_k, accuracy 1[y = k] (or ȳ_k)."""
    return calibration_metrics(probs, target, bins=bins, closed=closed, toplabel=False, **kw)["ece_classwise"]


def mce_classwise(probs: Tensor, target: Tensor, *, bins: int = 15, closed: Closed = "left", **kw: Any) -> float:
    """Class-wise MCE: max over classes and non-empty bins of |acc_kb − conf_kb|."""
    return calibration_metrics(probs, target, bins=bins, closed=closed, toplabel=False, **kw)["mce_classwise"]


def ece_foreground(p: Tensor, target: Tensor, *, bins: int = 15, closed: Closed = "left", **kw: Any) -> float:
    """Binary foreground-probability ECE (torchmetrics' binary convention): confidence p, accuracy y.

    Args:
        p: ``(*sp)`` foreground probabilities; target: ``(*sp)`` hard {0, 1} or soft [0, 1] labels.
    """
    kw.update(binary=True, toplabel=False, classes=[1])
    return calibration_metrics(p, target, bins=bins, closed=closed, **kw)["ece_foreground"]


def nll(probs: Tensor, target: Tensor, **kw: Any) -> float:
    """Mean negative log-likelihood −Σ_k ȳ_k ln max(p_k, eps) per voxel (hard label: −ln p_y)."""
    return calibration_metrics(probs, target, toplabel=False, classes=False, **kw)["nll"]


def brier(probs: Tensor, target: Tensor, *, reduction: str = "sum", **kw: Any) -> float:
    """Mean Brier score per voxel: Σ_k (p_k − ȳ_k)² (``reduction="sum"``) or that / K (``"mean"``).

    For K = 2, ``"mean"`` equals scikit-learn's binary ``brier_score_loss`` (p − y)².
    """
    if reduction not in ("sum", "mean"):
        raise ConfigError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    state = calibration_state(probs, target, toplabel=False, classes=False, **kw)
    value = float(state["brier"] / state["n"])
    return value / state["cls"].shape[0] if reduction == "mean" else value


def reliability_diagram(
    probs: Tensor, target: Tensor, *, bins: int = 15, closed: Closed = "left", convention: str = "toplabel", **kw: Any
) -> dict[str, Tensor]:
    """Per-bin ``lower``, ``upper``, mean ``confidence``, ``accuracy`` and ``count`` for a reliability diagram."""
    top = convention == "toplabel"
    classes = False if top else ([1] if convention == "foreground" else True)
    state = calibration_state(probs, target, bins=bins, closed=closed, toplabel=top, classes=classes, **kw)
    return reliability_from_state(state, bins, closed, convention)


def _equal_mass_gap(conf: Tensor, acc: Tensor, ranges: int) -> Tensor:
    """Mean over equal-count ranges (sizes ⌈N/R⌉ first, as torch.tensor_split) of |mean acc − mean conf|."""
    order = torch.sort(conf, stable=True).indices
    cs = torch.cat([torch.zeros(1, dtype=torch.float64), conf[order].double().cumsum(0)])
    ca = torch.cat([torch.zeros(1, dtype=torch.float64), acc[order].double().cumsum(0)])
    n = conf.numel()
    sizes = torch.full((ranges,), n // ranges, dtype=torch.long)
    sizes[: n % ranges] += 1
    ends = sizes.cumsum(0)
    starts = ends - sizes
    keep = sizes > 0
    gap = ((ca[ends] - ca[starts]) - (cs[ends] - cs[starts])).abs() / sizes.clamp_min(1)
    return gap[keep].mean()


def ace(probs: Tensor, target: Tensor, *, bins: int = 15, convention: str = "classwise", binary: bool = False) -> float:
    """Exact adaptive calibration error (equal-mass bins; Nixon et al. 2019). Memory O(K·N) (sorts voxels).

    ``convention="classwise"``: ACE = (1/(K R)) Σ_k Σ_r |acc(r, k) − conf(r, k)|, each class's confidences p_k
    sorted (stable) and cut into R = ``bins`` ranges of ⌈N/R⌉ or ⌊N/R⌋ voxels. ``"toplabel"``: the same on the
    top-label confidence and accuracy. The streaming state gives ``ace_*_approx`` instead.
    """
    check_args(bins, "left")
    rows = []
    for p, t in iter_items(probs, target, binary, batched=False):
        p = p.double()
        if binary:
            validate_binary(p, 0, "foreground probabilities")
            p = torch.stack([1 - p, p])
            t = torch.stack([1 - t.double(), t.double()]) if t.is_floating_point() else t
        else:
            validate_probabilities(p, 0, 1e-4)
        k = p.shape[0]
        onehot = t.double() if t.is_floating_point() else (t.long()[None] == torch.arange(k)[:, None]).double()
        rows.append((p, onehot))
    p, onehot = rows[0]
    if convention == "classwise":
        return float(torch.stack([_equal_mass_gap(p[c], onehot[c], bins) for c in range(p.shape[0])]).mean())
    if convention == "toplabel":
        conf, pred = p.max(0)
        return float(_equal_mass_gap(conf, onehot.gather(0, pred[None])[0], bins))
    raise ConfigError(f"convention must be 'classwise' or 'toplabel', got {convention!r}")


def calibration_vs_raters(probs: Tensor, raters: Tensor, **kw: Any) -> dict[str, dict[str, Any]]:
    """Calibration against each rater (``rater_0`` ...) and against the soft label (``soft``).

    Args:
        probs: ``(K, *sp)`` probabilities; raters: ``(R, *sp)`` hard labels. Other keywords: :func:`calibration_state`.
    """
    raters = torch.as_tensor(raters)
    out = {f"rater_{r}": calibration_metrics(probs, raters[r], **kw) for r in range(raters.shape[0])}
    out["soft"] = calibration_metrics(probs, soft_label(raters, torch.as_tensor(probs).shape[0]), **kw)
    return out


for _name, _fn in [
    ("ece_toplabel", ece_toplabel),
    ("ece_classwise", ece_classwise),
    ("ece_foreground", ece_foreground),
    ("mce_toplabel", mce_toplabel),
    ("mce_classwise", mce_classwise),
    ("ace", ace),
    ("nll", nll),
    ("brier", brier),
    ("reliability_diagram", reliability_diagram),
    ("calibration", calibration_metrics),
    ("calibration_vs_raters", calibration_vs_raters),
]:
    METRICS.add(_name, _fn)
