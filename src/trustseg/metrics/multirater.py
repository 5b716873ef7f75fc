"""Metrics for sampling models against several raters: generalised energy distance (GED), Hungarian-matched IoU,
QUBIQ soft Dice and the normalised cross-correlation of variance maps.

GED (Kohl et al. 2018, Probabilistic U-Net; Baumgartner et al. 2019, PHiSeg)::

    GED² = 2 E[d(S, Y)] − E[d(S, S')] − E[d(Y, Y')],   d = 1 − IoU  (or 1 − Dice)

with S, S' model samples and Y, Y' rater masks. Conventions the papers leave open are parameters:

- ``empty``: d(∅, ∅) when both masks are empty. ``"zero"`` (default): IoU(∅, ∅) = 1, d = 0. ``"nan"``: the
  pair is skipped (NaN-skipping means). Versions of the Probabilistic U-Net evaluation code in circulation do
  each: the Cityscapes version sets IoU = NaN and takes ``nanmean``, LIDC versions set IoU = 1 (NaN line commented
  out). On LIDC, where many rater masks are empty, the two give very different values.
- ``self_pairs``: whether the i = j pairs (d = 0, or NaN when empty under ``"nan"``) enter E[d(S, S')] and
  E[d(Y, Y')]. ``True`` (default) follows the published codes (mean over the full N×N and R×R matrices, a
  V-statistic); ``False`` averages over i ≠ j only (the unbiased U-statistic; with 4 raters E[d(Y, Y')] grows by
  4/3). A term with no pair left (one sample or one rater, ``self_pairs=False``) is 0.
- ``multiclass`` for class maps: ``"union"`` (foreground = any class > 0), ``"per_class"`` (one GED per
  foreground class), ``"class_mean"`` (d = NaN-skipping mean over foreground classes of per-class d, as the
  published multi-class code does).

Everything is computed from pairwise intersections: matrix products of flattened float masks (chunked over voxels).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from trustseg.core.errors import DataError
from trustseg.metrics.registry import METRICS
from trustseg.metrics.voxel_stats import CHUNK, chunked_sum, spans

Distance = Literal["iou", "dice"]


def _as_tensor(x: torch.Tensor | np.ndarray) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))


def _binary_stack(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """(N, *spatial) masks -> (N, P) bool."""
    t = _as_tensor(x)
    if t.ndim < 2:
        raise DataError(f"{name} must be (N, *spatial) masks, got shape {tuple(t.shape)}")
    if t.dtype != torch.bool:
        if t.numel() and not bool(((t == 0) | (t == 1)).all()):
            raise DataError(f"{name} must hold binary masks (bool or 0/1); pass num_classes for class maps")
        t = t != 0
    return t.reshape(t.shape[0], -1)


def pairwise_overlap(
    a: torch.Tensor, b: torch.Tensor, chunk: int = 2**18
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intersections and sizes of every pair of masks by matrix products of flattened float masks.

    The voxel axis is processed in chunks of ``chunk`` voxels (float32 products, exact since a chunk holds fewer
    than 2²⁴ voxels; accumulated in float64), so memory stays ``O((N + M) · chunk)`` for 3D volumes too.

    Args:
        a: bool ``(N, P)``.
        b: bool ``(M, P)``.
        chunk: Voxels per matrix product.

    Returns:
        ``inter (N, M)``, ``|a_i| (N,)``, ``|b_j| (M,)``, float64.
    """
    inter = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64)
    sa = torch.zeros(a.shape[0], dtype=torch.float64)
    sb = torch.zeros(b.shape[0], dtype=torch.float64)
    for start in range(0, a.shape[1], chunk):
        fa, fb = a[:, start : start + chunk].float(), b[:, start : start + chunk].float()
        inter += fa @ fb.T
        sa += fa.sum(1)
        sb += fb.sum(1)
    return inter, sa, sb


def pairwise_distance(
    a: torch.Tensor, b: torch.Tensor, distance: Distance = "iou", empty: Literal["zero", "nan"] = "zero"
) -> torch.Tensor:
    """``d(a_i, b_j)`` for every pair: ``1 − |a∩b| / |a∪b|`` (IoU) or ``1 − 2|a∩b| / (|a| + |b|)`` (Dice).

    Args:
        a: bool ``(N, P)``.
        b: bool ``(M, P)``.
        distance: ``"iou"`` or ``"dice"``.
        empty: d for two empty masks: ``"zero"`` -> 0, ``"nan"`` -> NaN.

    Returns:
        float64 ``(N, M)``.
    """
    return distance_from_overlap(*pairwise_overlap(a, b), distance, empty)


def distance_from_overlap(
    inter: torch.Tensor,
    sa: torch.Tensor,
    sb: torch.Tensor,
    distance: Distance = "iou",
    empty: Literal["zero", "nan"] = "zero",
) -> torch.Tensor:
    """:func:`pairwise_distance` from the intersections ``inter (N, M)`` and sizes ``sa (N,)``, ``sb (M,)``."""
    total = sa[:, None] + sb[None, :]
    if distance == "iou":
        den, num = total - inter, inter
    elif distance == "dice":
        den, num = total, 2 * inter
    else:
        raise ValueError(f"distance must be 'iou' or 'dice', got {distance!r}")
    if empty not in ("zero", "nan"):
        raise ValueError(f"empty must be 'zero' or 'nan', got {empty!r}")
    d = 1 - num / den.clamp_min(1)
    return torch.where(den == 0, torch.full_like(d, 0.0 if empty == "zero" else float("nan")), d)


def _expectation(d: torch.Tensor, self_pairs: bool) -> torch.Tensor:
    """NaN-skipping mean of a square distance matrix, with or without its diagonal; 0 when no pair is left."""
    if not self_pairs:
        n = d.shape[-1]
        off = ~torch.eye(n, dtype=torch.bool)
        if n < 2:
            return torch.zeros(d.shape[:-2], dtype=torch.float64)
        d = d[..., off]
    return torch.nanmean(d.reshape(*d.shape[: d.ndim - (2 if self_pairs else 1)], -1), dim=-1)


def _ged_terms(d_sy: torch.Tensor, d_ss: torch.Tensor, d_yy: torch.Tensor, self_pairs: bool) -> dict[str, torch.Tensor]:
    e_sy = torch.nanmean(d_sy.reshape(*d_sy.shape[:-2], -1), dim=-1)
    e_ss, e_yy = _expectation(d_ss, self_pairs), _expectation(d_yy, self_pairs)
    ged2 = 2 * e_sy - e_ss - e_yy
    return {"ged": ged2.clamp_min(0).sqrt(), "ged2": ged2, "e_d_sy": e_sy, "e_d_ss": e_ss, "e_d_yy": e_yy}


def ged_from_gram(gram: torch.Tensor, n_samples: int, self_pairs: bool = True) -> dict[str, torch.Tensor]:
    """:func:`ged` (d = 1 − IoU, d(∅, ∅) = 0) from the Gram matrix ``G_ij = |m_i ∩ m_j|`` of the ``N`` sample
    masks followed by the ``R`` rater masks (:func:`trustseg.metrics.multirater_counts.sample_gram`)."""
    size = gram.diagonal()
    s, y = slice(0, n_samples), slice(n_samples, gram.shape[0])
    d = [distance_from_overlap(gram[u, v], size[u], size[v]) for u, v in ((s, y), (s, s), (y, y))]
    return _ged_terms(d[0], d[1], d[2], self_pairs)


@METRICS.register("ged", doc="generalised energy distance of samples vs raters, d = 1 - IoU or 1 - Dice")
def ged(
    samples: torch.Tensor | np.ndarray,
    raters: torch.Tensor | np.ndarray,
    distance: Distance = "iou",
    empty: Literal["zero", "nan"] = "zero",
    self_pairs: bool = True,
    num_classes: int | None = None,
    multiclass: Literal["union", "per_class", "class_mean"] = "union",
) -> dict[str, torch.Tensor]:
    """Generalised energy distance between a model's samples and the raters' masks (module docstring).

    Args:
        samples: ``(N, *spatial)`` bool/0-1 masks, or int class maps with ``num_classes``.
        raters: ``(R, *spatial)``, same kind.
        distance: ``"iou"`` (d = 1 − IoU) or ``"dice"`` (d = 1 − Dice).
        empty: d(∅, ∅): ``"zero"`` or ``"nan"`` (skip the pair).
        self_pairs: Include i = j pairs in E[d(S, S')] and E[d(Y, Y')].
        num_classes: K for class maps; ``None`` for binary masks.
        multiclass: ``"union"``, ``"per_class"`` or ``"class_mean"`` (class maps only).

    Returns:
        ``{"ged": GED = sqrt(max(GED², 0)), "ged2": GED² (unclamped; can dip below 0 with self_pairs=False),
        "e_d_sy": E[d(S, Y)], "e_d_ss": E[d(S, S')], "e_d_yy": E[d(Y, Y')]}``, float64 0-dim tensors, or
        ``(K - 1,)`` with ``multiclass="per_class"``. Note that many papers report GED² under the name GED.
    """
    s, y = _as_tensor(samples), _as_tensor(raters)
    if s.shape[1:] != y.shape[1:]:
        raise DataError(f"samples {tuple(s.shape)} and raters {tuple(y.shape)} differ in spatial shape")
    if num_classes is None or multiclass == "union":
        sb = _binary_stack(s if num_classes is None else s > 0, "samples")
        yb = _binary_stack(y if num_classes is None else y > 0, "raters")
        d = [pairwise_distance(u, v, distance, empty) for u, v in ((sb, yb), (sb, sb), (yb, yb))]
        return _ged_terms(d[0], d[1], d[2], self_pairs)
    if multiclass not in ("per_class", "class_mean"):
        raise ValueError(f"multiclass must be union, per_class or class_mean, got {multiclass!r}")
    per_class = []
    for k in range(1, num_classes):
        sk, yk = (s == k).reshape(s.shape[0], -1), (y == k).reshape(y.shape[0], -1)
        per_class.append([pairwise_distance(u, v, distance, empty) for u, v in ((sk, yk), (sk, sk), (yk, yk))])
    stacked = [torch.stack([pc[i] for pc in per_class]) for i in range(3)]  # (K-1, ., .)
    if multiclass == "per_class":
        return _ged_terms(stacked[0], stacked[1], stacked[2], self_pairs)
    means = [torch.nanmean(m, dim=0) for m in stacked]
    return _ged_terms(means[0], means[1], means[2], self_pairs)


@METRICS.register("hungarian_iou", doc="mean IoU of samples and raters after Hungarian matching (raters tiled)")
def hungarian_iou(
    samples: torch.Tensor | np.ndarray,
    raters: torch.Tensor | np.ndarray,
    empty: Literal["one", "zero"] = "one",
    tile: bool = True,
) -> torch.Tensor:
    """Mean IoU over the one-to-one matching of samples to raters that maximises total IoU.

    When the set sizes differ and ``tile=True``, the smaller set is repeated ``ceil(L / S)`` times (as in Kohl et
    al. 2019, who repeat the 4 LIDC raters to match 16 samples) and every element of the larger set is matched
    (``scipy.optimize.linear_sum_assignment`` on ``1 − IoU``); the mean runs over the L elements of the larger
    set. With ``tile=False`` only ``min(N, R)`` pairs are matched and averaged.

    Args:
        samples: bool/0-1 ``(N, *spatial)``.
        raters: bool/0-1 ``(R, *spatial)``.
        empty: IoU(∅, ∅): ``"one"`` (default) or ``"zero"``.
        tile: Repeat the smaller set (see above).

    Returns:
        0-dim float64 tensor in [0, 1].
    """
    sb, yb = _binary_stack(samples, "samples"), _binary_stack(raters, "raters")
    if sb.shape[1] != yb.shape[1]:
        raise DataError(f"samples and raters differ in spatial size: {sb.shape[1]} vs {yb.shape[1]} voxels")
    if empty not in ("one", "zero"):
        raise ValueError(f"empty must be 'one' or 'zero', got {empty!r}")
    big, small = (sb, yb) if sb.shape[0] >= yb.shape[0] else (yb, sb)
    if tile:
        small = small.repeat(-(-big.shape[0] // small.shape[0]), 1)
    return _matched_mean(pairwise_distance(big, small, "iou", "zero" if empty == "one" else "nan"))


def hungarian_from_gram(gram: torch.Tensor, n_samples: int, empty: Literal["one", "zero"] = "one") -> torch.Tensor:
    """:func:`hungarian_iou` (raters tiled) from the Gram matrix of :func:`ged_from_gram`: the same matching of
    the larger set against the smaller one repeated ``ceil(L / S)`` times."""
    if empty not in ("one", "zero"):
        raise ValueError(f"empty must be 'one' or 'zero', got {empty!r}")
    size = gram.diagonal()
    n, m = n_samples, gram.shape[0] - n_samples
    big, small = (slice(0, n), slice(n, n + m)) if n >= m else (slice(n, n + m), slice(0, n))
    reps = -(-max(n, m) // min(n, m))
    d = distance_from_overlap(gram[big, small], size[big], size[small], "iou", "zero" if empty == "one" else "nan")
    return _matched_mean(d.repeat(1, reps))


def _matched_mean(d: torch.Tensor) -> torch.Tensor:
    """Mean IoU ``1 − d`` (d = NaN counts as IoU 0) over the assignment maximising the total IoU (every row
    matched)."""
    iou_m = 1 - d.nan_to_num(1.0)
    rows, cols = linear_sum_assignment(iou_m.numpy(), maximize=True)
    return iou_m[torch.as_tensor(rows), torch.as_tensor(cols)].mean()


@METRICS.register("qubiq_soft_dice", doc="QUBIQ: mean Dice over thresholds 0.1..0.9 of prediction and soft label")
def qubiq_soft_dice(
    pred_prob: torch.Tensor | np.ndarray,
    soft_label: torch.Tensor | np.ndarray,
    thresholds: Sequence[float] | None = None,
    chunk: int = CHUNK,
) -> torch.Tensor:
    """QUBIQ soft Dice: ``mean_t Dice(pred > t, soft > t)`` over thresholds t (default 0.1, 0.2, …, 0.9).

    Binarisation is strict (``>``); at a threshold where both binarised masks are empty the Dice is 1.

    Args:
        pred_prob: Foreground probability ``(*spatial)`` in [0, 1].
        soft_label: Rater mean ``(*spatial)`` in [0, 1].
        thresholds: Thresholds t.
        chunk: Voxels per pass (temporaries ``O(chunk)``: float64 copies of a chunk and one mask per threshold).

    Returns:
        0-dim float64 tensor.
    """
    p, q = _as_tensor(pred_prob), _as_tensor(soft_label)
    if p.shape != q.shape:
        raise DataError(f"pred_prob and soft_label shapes differ: {tuple(p.shape)} vs {tuple(q.shape)}")
    t = torch.tensor([k / 10 for k in range(1, 10)] if thresholds is None else list(thresholds), dtype=torch.float64)
    inter = torch.zeros(len(t), dtype=torch.float64)
    total = torch.zeros(len(t), dtype=torch.float64)
    pf, qf = p.reshape(-1), q.reshape(-1)
    for a, b in spans(pf.numel(), chunk):  # float64 chunk copies, one bool mask per threshold: O(chunk) memory
        pc, qc = pf[a:b].double(), qf[a:b].double()
        for i, ti in enumerate(t.tolist()):
            pb, qb = pc > ti, qc > ti
            inter[i] += int((pb & qb).sum())
            total[i] += int(pb.sum()) + int(qb.sum())
    dice_t = torch.where(total == 0, torch.ones_like(total), 2 * inter / total.clamp_min(1))
    return dice_t.mean()


@METRICS.register("variance_ncc", doc="normalised cross-correlation of model and rater variance maps")
def variance_ncc(
    model_var: torch.Tensor | np.ndarray, rater_var: torch.Tensor | np.ndarray, chunk: int = CHUNK
) -> torch.Tensor:
    """Normalised cross-correlation ``mean((a − ā)(b − b̄)) / (σ_a σ_b)`` of two maps (population std).

    Equals the Pearson correlation over voxels; NaN when either map is constant (σ = 0).

    Args:
        model_var: The model's per-voxel variance (or any uncertainty) map ``(*spatial)``.
        rater_var: The raters' per-voxel variance map, same shape.
        chunk: Voxels per pass (float64 sums over chunks; no float64 copy of the maps).

    Returns:
        0-dim float64 tensor in [−1, 1] or NaN.
    """
    a, b = _as_tensor(model_var).flatten(), _as_tensor(rater_var).flatten()
    if a.shape != b.shape:
        raise DataError(f"model_var and rater_var sizes differ: {a.numel()} vs {b.numel()} voxels")
    n = a.numel()
    ma, mb = chunked_sum(a, chunk) / n, chunked_sum(b, chunk) / n  # float64 means, chunk by chunk
    saa = sbb = sab = 0.0
    for s, e in spans(n, chunk):
        ca, cb = a[s:e].double() - ma, b[s:e].double() - mb
        saa, sbb, sab = saa + float((ca * ca).sum()), sbb + float((cb * cb).sum()), sab + float((ca * cb).sum())
    sa, sb = math.sqrt(saa / n), math.sqrt(sbb / n)
    if sa == 0 or sb == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    return torch.tensor(sab / n / (sa * sb), dtype=torch.float64).clamp(-1, 1)


for _d in ("iou", "dice"):
    METRICS.add(f"ged_{_d}", functools.partial(ged, distance=_d), f"generalised energy distance, d = 1 - {_d}")
