"""Lean running sums over ensemble members for volumes of CT size (the nnU-Net predictor streams into them).

:class:`MemberMoments` keeps, per voxel, only what the requested measures need, in float32 and updated in place
with one class-sized temporary, so that ``M`` members of a ``(K, *spatial)`` volume cost at most ``(2K + 2)``
float32 volumes whatever ``M`` is (``K + 1`` for ``entropy`` and ``mi``), instead of the ``(M, K, *spatial)``
stack:

* ``S1 = Σ_m p^(m)`` ``(K, *sp)`` (always: ``confidence`` and ``entropy`` need nothing else);
* ``SX = Σ_m Σ_k p_k^(m) ln p_k^(m)`` ``(*sp)`` only for ``expected_entropy``, ``mi`` and ``epkl``;
* ``SL = Σ_m ln max(p^(m), LOG_EPS)`` ``(K, *sp)`` only for ``epkl``; ``S2 = Σ_m Σ_k (p_k^(m))²`` ``(*sp)`` only
  for ``variance``.

With ``p̄ = S1 / n`` the measures follow exactly as in :mod:`trustseg.measures.streaming` (which keeps all four
sums per class in float64): ``entropy = H[p̄]``, ``expected_entropy = −SX / n``, ``mi = entropy −
expected_entropy`` (≥ 0), ``epkl = −Σ_k p̄_k SL_k / n − expected_entropy`` (≥ 0), ``variance = S2 / n −
Σ_k p̄_k²`` (≥ 0), ``confidence = max_k p̄_k``. Sums over classes are taken before accumulation, which is what
makes the per-voxel state ``K``-sized rather than ``4K``.

Example:
    >>> mm = MemberMoments(2, ["mi", "epkl"])
    >>> for p in (torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])):  # two opposite confident members
    ...     _ = mm.update(p.view(2, 1, 1))  # each member (K, *spatial)
    >>> round(float(mm.compute()["mi"][0, 0]), 4)  # ln 2
    0.6931
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from trustseg.measures.pixel import LOG_EPS, xlogx

#: The measures :class:`MemberMoments` can stream.
STREAMED_MEASURES = ("confidence", "entropy", "expected_entropy", "mi", "epkl", "variance")


class MemberMoments:
    """Float32 running sums over members ``(K, *spatial)``, only those the requested measures need.

    Args:
        num_classes: K.
        measures: Names out of :data:`STREAMED_MEASURES` (default: all).

    Raises:
        ValueError: an unknown measure name.
    """

    def __init__(self, num_classes: int, measures: Sequence[str] | None = None):
        self.num_classes = int(num_classes)
        self.measures = tuple(measures) if measures is not None else STREAMED_MEASURES
        unknown = [m for m in self.measures if m not in STREAMED_MEASURES]
        if unknown:
            raise ValueError(f"cannot stream {unknown} over members; streamed measures: {list(STREAMED_MEASURES)}")
        self.count = 0
        self.normalised = False  # compute(consume=True) turned S1 into the mean in place
        self.s1: Tensor | None = None
        self.sx: Tensor | None = None
        self.sl: Tensor | None = None
        self.s2: Tensor | None = None

    @property
    def needs_entropy_terms(self) -> bool:
        """Whether ``SX`` is kept (``expected_entropy``, ``mi`` or ``epkl`` asked)."""
        return bool({"expected_entropy", "mi", "epkl"} & set(self.measures))

    @property
    def needs_log(self) -> bool:
        """Whether ``SL`` is kept (``epkl`` asked)."""
        return "epkl" in self.measures

    @property
    def needs_square(self) -> bool:
        """Whether ``S2`` is kept (``variance`` asked)."""
        return "variance" in self.measures

    def update(self, p: Tensor) -> MemberMoments:
        """Add one member ``p`` ``(K, *spatial)`` (probabilities over axis 0). Returns ``self``."""
        if self.normalised:
            raise ValueError("MemberMoments was consumed by compute(consume=True); start a new one")
        if p.dim() < 2 or p.shape[0] != self.num_classes:
            raise ValueError(f"expected one member (K={self.num_classes}, *spatial), got {tuple(p.shape)}")
        p = p.float()
        if self.s1 is None:
            self.s1 = p.clone()
            self.sx = torch.zeros(p.shape[1:]) if self.needs_entropy_terms else None
            self.sl = torch.zeros_like(p) if self.needs_log else None
            self.s2 = torch.zeros(p.shape[1:]) if self.needs_square else None
        elif p.shape != self.s1.shape:
            raise ValueError(f"member shape {tuple(p.shape)} differs from earlier members {tuple(self.s1.shape)}")
        else:
            self.s1 += p
        t = torch.empty(p.shape[1:]) if self.sx is not None or self.s2 is not None else None  # one class slice
        for k in range(self.num_classes):
            if self.sx is not None:
                assert t is not None
                torch.clamp(p[k], min=LOG_EPS, out=t)
                t.log_()
                if self.sl is not None:
                    self.sl[k] += t
                t.mul_(p[k])  # p ln p (0 where p = 0: p · ln LOG_EPS = 0)
                self.sx += t
            if self.s2 is not None:
                assert t is not None
                torch.mul(p[k], p[k], out=t)
                self.s2 += t
        self.count += 1
        return self

    def _check(self) -> Tensor:
        if self.s1 is None:
            raise ValueError("MemberMoments has no members yet; call update() first")
        return self.s1

    def mean(self) -> Tensor:
        """``p̄ = S1 / n`` ``(K, *spatial)`` (after ``compute(consume=True)``: S1 itself, already divided)."""
        s1 = self._check()
        return s1 if self.normalised else s1 / self.count

    def compute(self, consume: bool = False) -> dict[str, Tensor]:
        """The requested measures, each ``(*spatial)`` float32.

        Args:
            consume: Divide S1 by n in place (:meth:`mean` then returns it without a copy) and free each sum as
                soon as its measures are computed: for CT volumes, where every ``(K, *spatial)`` copy counts. No
                member can be added afterwards.
        """
        if consume and not self.normalised:
            self._check().div_(self.count)
            self.normalised = True
        mean = self.mean()
        out: dict[str, Tensor] = {}
        expected = None
        if self.sx is not None:
            expected = self.sx.div_(-self.count) if consume else -self.sx / self.count
        entropy = None
        if {"entropy", "mi"} & set(self.measures):  # −Σ_k p̄_k ln p̄_k, one class slice at a time
            entropy = torch.zeros(mean.shape[1:])
            for k in range(self.num_classes):
                entropy -= xlogx(mean[k])
        for name in self.measures:
            if name == "confidence":
                out[name] = mean.amax(0)
            elif name == "entropy":
                assert entropy is not None
                out[name] = entropy
            elif name == "expected_entropy":
                assert expected is not None
                out[name] = expected.clone()
            elif name == "mi":
                assert entropy is not None and expected is not None
                out[name] = (entropy - expected).clamp_min(0)
            elif name == "epkl":
                assert self.sl is not None and expected is not None
                cross = torch.zeros(mean.shape[1:])
                for k in range(self.num_classes):
                    cross.addcmul_(mean[k], self.sl[k])
                out[name] = (-cross / self.count - expected).clamp_min(0)
            else:  # variance
                assert self.s2 is not None
                square = torch.zeros(mean.shape[1:])
                for k in range(self.num_classes):
                    square.addcmul_(mean[k], mean[k])
                out[name] = (self.s2 / self.count - square).clamp_min(0)
        if consume:
            self.sx = self.sl = self.s2 = None
        return out


__all__ = ["STREAMED_MEASURES", "MemberMoments"]
