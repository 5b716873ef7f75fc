"""Calibration states of many targets in one pass: every target a function of a per-voxel code.

The evaluation scores one prediction against the majority vote, the soft label and every rater. Each of them is a
function of the voxel's rater code ``c`` (:mod:`trustseg.data.rater_codes`): a hard target ``t(c)`` or a soft one
``ȳ_k(c)``. So one pass over the probabilities fills histograms over (fine bin, code) — for the top label over
(fine bin of the confidence, predicted class, code), for class k over (fine bin of ``p_k``, code) — plus per code
the sums ``Σ −ln max(p_k, eps)``, ``Σ p_k`` and ``Σ_k p_k²``; each target's state
(:func:`~trustseg.metrics.calibration_state.calibration_state`'s layout and conventions) is then a weighted sum
over codes:

* top label: count and Σ confidence of every (bin, ĥ, c); Σ accuracy weighs them by ``1[ĥ = t(c)]`` (hard) or
  ``ȳ_ĥ(c)`` (soft), with ĥ the first maximum (as both backends);
* class k: Σ accuracy weighs (bin, c) by ``1[t(c) = k]`` or ``ȳ_k(c)``;
* NLL ``Σ_c Σ_k w_k(c) L_k(c)`` with ``L_k(c) = Σ_{voxels of c} −ln max(p_k, eps)`` (logs in the probabilities'
  dtype, as the torch path); Brier ``Σ_c Q(c) − 2 Σ_k w_k(c) P_k(c) + N(c) Σ_k w_k(c)²``.

The histograms' counts are exact and their sums are float64 sums of the same per-voxel terms in another order, so
the states equal the per-target ones up to float64 round-off (the NLL to the ~1e-9 relative agreement of the two
backends, :mod:`trustseg.metrics.calibration_kernel`). ``bincount`` keys span ``S · K · C`` slots (S fine bins);
:func:`fits` says whether that is small (else callers use one state per target).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from trustseg.core.errors import DataError
from trustseg.metrics.calibration_state import _fine_per_bin, check_args, empty_state
from trustseg.metrics.calibration_torch import _fine_index, validate_probabilities
from trustseg.metrics.voxel_stats import single_threaded

#: Largest ``S · K · C`` key space of the one-pass histograms.
MAX_KEYS = 1 << 22


def fits(num_classes: int, num_codes: int, bins: int = 15, ace_resolution: int = 2048) -> bool:
    """Whether the (fine bin, class, code) key space is at most :data:`MAX_KEYS`."""
    size = bins * _fine_per_bin(bins, ace_resolution) + 1
    return size * num_classes * num_codes <= MAX_KEYS


def _chunk_sums(p: Tensor, hard: Tensor, code: Tensor, size: int, fine: int, closed: str, num_codes: int, a: int):
    """The per-chunk histograms and per-code sums of ``p`` (K, n) with its argmax ``hard`` and ``code`` (n,)."""
    validate_probabilities(p, a, 1e-4)
    k, c = p.shape[0], num_codes
    code = code.long()
    conf = p.amax(0)
    key = _fine_index(conf, fine, closed).long().mul_(k).add_(hard.long()).mul_(c).add_(code)
    top_n = torch.bincount(key, minlength=size * k * c).double().view(size, k, c)
    top_s = torch.bincount(key, weights=conf.double(), minlength=size * k * c).view(size, k, c)
    cls_n, cls_s, nll, psum = [], [], [], []
    sq = torch.zeros(p.shape[1], dtype=torch.float64)  # Σ_k p_k² per voxel
    eps = torch.finfo(p.dtype).eps
    for j in range(k):
        kj = _fine_index(p[j], fine, closed).long().mul_(c).add_(code)
        cls_n.append(torch.bincount(kj, minlength=size * c).double().view(size, c))
        pj = p[j].double()  # one float64 row at a time, not a (K, n) copy
        cls_s.append(torch.bincount(kj, weights=pj, minlength=size * c).view(size, c))
        psum.append(torch.bincount(code, weights=pj, minlength=c))
        sq.add_(pj.square_())
        del kj, pj
        nll.append(torch.bincount(code, weights=p[j].clamp_min(eps).log().neg_().double(), minlength=c))
    q = torch.bincount(code, weights=sq, minlength=c)
    return top_n, top_s, torch.stack(cls_n), torch.stack(cls_s), torch.stack(nll), torch.stack(psum), q


def coded_states(
    probs: Tensor,
    hard: Tensor,
    code: Tensor,
    targets: dict[str, Tensor],
    *,
    bins: int = 15,
    closed: str = "left",
    ace_resolution: int = 2048,
    valid: Tensor | None = None,
    chunk: int = 1 << 17,
) -> dict[str, dict[str, Tensor]]:
    """One calibration state per target (module docstring), from one pass over ``probs``.

    Args:
        probs: ``(K, n)`` probabilities (float32/float64), each voxel summing to 1 (checked as
            :func:`~trustseg.metrics.calibration_state.calibration_state`, tolerance 1e-4).
        hard: ``(n,)`` ``argmax_k probs_k`` (first maximum on ties), any integer dtype.
        code: ``(n,)`` codes in ``[0, C)``.
        targets: Name -> ``(C,)`` integer table (a hard target per code) or ``(K, C)`` float table (a soft target).
        bins, closed, ace_resolution: As in ``calibration_state``.
        valid: ``(n,)`` bool: only these voxels enter (selected chunk by chunk; ``None``: all).
        chunk: Voxels per pass step (temporaries of a few int64/float64 copies of one chunk per thread; chunks
            run in parallel on ``torch.get_num_threads()`` threads, each single-threaded, and are summed in order).

    Returns:
        Name -> state (``top``, ``cls``, ``nll``, ``brier``, ``n``), as ``calibration_state(probs, target)``.

    Example:
        >>> p = torch.tensor([[0.9, 0.2, 0.6], [0.1, 0.8, 0.4]])
        >>> st = coded_states(p, p.argmax(0), torch.tensor([0, 1, 1]), {"t": torch.tensor([0, 1])})
        >>> float(st["t"]["top"][2].sum()), round(float(st["t"]["nll"]) / 3, 4)  # 2 of 3 right; mean −ln p_t
        (2.0, 0.4149)
    """
    check_args(bins, closed)
    k, n = probs.shape
    first = next(iter(targets.values()))
    c = first.shape[-1]
    fine = bins * _fine_per_bin(bins, ace_resolution)
    size = fine + 1
    if hard.shape != (n,) or code.shape != (n,):
        raise DataError(f"hard {tuple(hard.shape)} and code {tuple(code.shape)} must be ({n},)")
    acc = torch.zeros(size, k, c, dtype=torch.float64)
    sums = [acc.clone(), torch.zeros(k, size, c, dtype=torch.float64), torch.zeros(k, size, c, dtype=torch.float64)]
    per_code = [torch.zeros(k, c, dtype=torch.float64), torch.zeros(k, c, dtype=torch.float64)]
    q = torch.zeros(c, dtype=torch.float64)

    def one(a: int):
        b = min(a + chunk, n)
        p, h, cd = probs[:, a:b], hard[a:b], code[a:b]
        if valid is not None:
            keep = valid[a:b]
            if not bool(keep.any()):
                return None
            p, h, cd = p[:, keep], h[keep], cd[keep]
        return p.shape[1], _chunk_sums(p, h, cd, size, fine, closed, c, a)

    seen = 0
    # chunks in parallel on torch's thread count, each op single-threaded (bincount is; see calibration_torch)
    workers = max(1, min(torch.get_num_threads(), -(-n // chunk)))
    with single_threaded(), ThreadPoolExecutor(workers) as pool:
        for got in pool.map(one, range(0, n, chunk)):
            if got is None:
                continue
            m, (top_n, top_s, cls_n, cls_s, nll, psum, qc) = got
            seen += m
            acc += top_n
            sums[0] += top_s
            sums[1] += cls_n
            sums[2] += cls_s
            per_code[0] += nll
            per_code[1] += psum
            q += qc
    top_n, top_s, cls_n, cls_s = acc, sums[0], sums[1], sums[2]
    nll, psum = per_code
    count = top_n.sum((0, 1))  # (C,) voxels per code
    out: dict[str, dict[str, Tensor]] = {}
    for name, table in targets.items():
        if table.is_floating_point():  # soft (K, C)
            w = table.double()
        else:  # hard (C,) -> one-hot weights (K, C)
            w = torch.zeros(k, c, dtype=torch.float64)
            w[table.long(), torch.arange(c)] = 1.0
        st = empty_state(k, bins, ace_resolution)
        st["top"][0] = top_n.sum((1, 2))
        st["top"][1] = top_s.sum((1, 2))
        st["top"][2] = (top_n * w[None]).sum((1, 2))  # weight of (bin, ĥ, c) is w[ĥ, c]
        st["cls"][:, 0] = cls_n.sum(2)
        st["cls"][:, 1] = cls_s.sum(2)
        st["cls"][:, 2] = (cls_n * w[:, None, :]).sum(2)
        st["nll"] = (w * nll).sum()
        st["brier"] = q.sum() - 2 * (w * psum).sum() + (count * w.square().sum(0)).sum()
        st["n"] = torch.tensor(float(seen), dtype=torch.float64)
        out[name] = st
    return out
