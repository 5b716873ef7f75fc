"""The raters' labels of a voxel as one small integer code, and every per-voxel rater target as a lookup table.

With ``R`` raters and ``K`` classes a voxel's labels ``(y^(0), …, y^(R−1))`` are one of ``C = K^R`` tuples; the
code ``c = Σ_r y^(r) K^r`` names it. Everything the evaluation derives per voxel from the raters alone — the
majority vote, the soft label ``ȳ_k``, the rater disagreement ``Σ_k ȳ_k(1 − ȳ_k)``, each rater's label, the CURVAS
consensus regions — is a function of the code, so it is a table of ``C`` entries, computed once by the reference
functions of :mod:`trustseg.data.targets` on the ``C`` enumerated tuples (the values are bit for bit theirs),
and read per voxel by one gather. One pass over the ``R`` label maps gives the code map (1 byte per voxel for
``C ≤ 256``, e.g. 3 raters × 3 classes: 27 codes); counts over codes (``bincount``) give every overlap count of
every target at once (:func:`trustseg.metrics.overlap.dice_vs_raters_from_joint`).

Codes are used only while ``C ≤`` :data:`MAX_CODES`; beyond, callers keep the per-voxel formulas.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from trustseg.core.errors import DataError
from trustseg.data.targets import majority_vote, rater_disagreement, soft_label

#: Largest number of codes ``K^R`` for which the tables are used (tables of ``K · C`` floats).
MAX_CODES = 1 << 16


def num_codes(num_classes: int, num_raters: int) -> int:
    """``C = K^R``, the number of distinct label tuples.

    Example:
        >>> num_codes(3, 3)
        27
    """
    return int(num_classes) ** int(num_raters)


def code_dtype(num_classes: int, num_raters: int) -> torch.dtype:
    """uint8 for ``C ≤ 256`` (1 byte per voxel), else int32."""
    return torch.uint8 if num_codes(num_classes, num_raters) <= 256 else torch.int32


def uses_codes(num_classes: int, num_raters: int) -> bool:
    """Whether ``K^R ≤`` :data:`MAX_CODES` (the tables stay small)."""
    return num_codes(num_classes, num_raters) <= MAX_CODES


def rater_code(labels: Tensor, num_classes: int, out: Tensor | None = None) -> Tensor:
    """``(n,)`` code ``Σ_r labels[r] K^r`` of ``(R, n)`` integer labels in ``[0, K)``, in :func:`code_dtype`.

    Args:
        labels: ``(R, n)`` rater labels (any integer dtype).
        num_classes: K.
        out: Optional ``(n,)`` output of :func:`code_dtype`.

    Raises:
        DataError: labels outside ``[0, K)`` (the message of :func:`trustseg.data.targets.soft_label`).

    Example:
        >>> rater_code(torch.tensor([[0, 1, 2], [2, 2, 0]]), 3).tolist()  # y0 + 3 y1
        [6, 7, 2]
    """
    r, k = labels.shape[0], int(num_classes)
    if labels.numel():
        lo, hi = torch.aminmax(labels)
        if int(lo) < 0 or int(hi) >= k:
            raise DataError(f"rater labels must lie in [0, {k}), got [{int(lo)}, {int(hi)}]")
    dt = code_dtype(k, r)
    code = torch.zeros(labels.shape[1], dtype=dt) if out is None else out.zero_()
    for i in reversed(range(r)):  # Horner: code = (…(y_{R−1}) K + …) K + y_0, in the small dtype
        if i < r - 1:
            code.mul_(k)
        code.add_(labels[i].to(dt))
    return code


@dataclass(frozen=True)
class CodeTables:
    """Per-code targets of ``R`` raters and ``K`` classes (``C = K^R`` codes, :func:`code_tables`).

    Attributes:
        labels: ``(R, C)`` int64, rater ``r``'s label of code ``c``.
        majority: ``(C,)`` int64 majority vote (ties to the lower class), :func:`~trustseg.data.targets.majority_vote`.
        soft: ``(K, C)`` float32 soft label, :func:`~trustseg.data.targets.soft_label`.
        disagreement: ``(C,)`` float32 ``Σ_k ȳ_k(1 − ȳ_k)``, :func:`~trustseg.data.targets.rater_disagreement`.
        all_k: ``(K, C)`` bool, every rater says ``k`` (CURVAS consensus foreground of class k).
        any_k: ``(K, C)`` bool, some rater says ``k``.
    """

    labels: Tensor
    majority: Tensor
    soft: Tensor
    disagreement: Tensor
    all_k: Tensor
    any_k: Tensor


@lru_cache(maxsize=16)
def code_tables(num_classes: int, num_raters: int) -> CodeTables:
    """The :class:`CodeTables` of ``K`` classes and ``R`` raters (cached; do not modify them in place).

    Example:
        >>> t = code_tables(2, 3)
        >>> t.majority.tolist()  # codes 0..7 = (y0, y1, y2) bits: majority of three binary votes
        [0, 0, 0, 1, 0, 1, 1, 1]
    """
    k, r = int(num_classes), int(num_raters)
    if not uses_codes(k, r):
        raise ValueError(f"{k}^{r} codes exceed MAX_CODES = {MAX_CODES}")
    c = torch.arange(num_codes(k, r), dtype=torch.long)
    labels = torch.stack([(c // k**i) % k for i in range(r)])  # (R, C)
    hit = torch.stack([labels == j for j in range(k)])  # (K, R, C)
    return CodeTables(
        labels=labels,
        majority=majority_vote(labels, k),
        soft=soft_label(labels, k),
        disagreement=rater_disagreement(labels, k).float(),
        all_k=hit.all(1),
        any_k=hit.any(1),
    )
