"""Sample-streaming uncertainty measures: accumulate M samples one at a time without storing them.

:class:`StreamingMoments` keeps, per pixel and class, the count ``n`` and four running sums

* ``S1 = Σ_m p^(m)``, ``S2 = Σ_m (p^(m))²``, ``SL = Σ_m ln max(p^(m), LOG_EPS)``, ``SX = Σ_m p^(m) ln p^(m)``

(each ``(B, K, *spatial)``: fixed size, independent of ``M``, and mergeable by addition across processes). From
them, with ``p̄ = S1 / n``:

* ``entropy = H[p̄]``, ``confidence = max_k p̄_k``
* ``expected_entropy = −Σ_k SX_k / n``, ``mi = entropy − expected_entropy``
* ``epkl = −Σ_k p̄_k SL_k / n − expected_entropy``
* ``variance = Σ_k (S2_k / n − p̄_k²)`` (population variance; clamped at 0)

These equal the batch measures of :mod:`trustseg.measures.pixel` on the stacked samples (to rounding; the state
is kept in float64 by default so the one-pass variance formula stays accurate).
"""

from __future__ import annotations

import torch
from torch import Tensor

from trustseg.measures.pixel import entropy_of, safe_log, xlogx


class StreamingMoments:
    """Fixed-size running sums over samples from which the sample-based measures follow.

    Args:
        num_classes: K; every update must have ``K`` channels on axis 1.
        dtype: Accumulation dtype (default float64). Outputs are cast back to the dtype of the first update.

    Example:
        >>> sm = StreamingMoments(num_classes=2)
        >>> for p in (torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])):  # two opposite confident samples
        ...     _ = sm.update(p.view(1, 2, 1, 1))  # each sample (B, K, *spatial)
        >>> sm.mi()  # (B, *spatial): ln 2
        tensor([[[0.6931]]])
    """

    def __init__(self, num_classes: int, dtype: torch.dtype = torch.float64):
        self.num_classes = int(num_classes)
        self.dtype = dtype
        self.count = 0
        self.out_dtype: torch.dtype | None = None
        self.s1: Tensor | None = None
        self.s2: Tensor | None = None
        self.slog: Tensor | None = None
        self.sxlogx: Tensor | None = None

    def update(self, p: Tensor) -> StreamingMoments:
        """Add one sample ``p`` of shape ``(B, K, *spatial)`` (probabilities over ``K``). Returns ``self``."""
        if p.dim() < 3 or p.shape[1] != self.num_classes:
            raise ValueError(f"expected one sample (B, K={self.num_classes}, *spatial), got {tuple(p.shape)}")
        if self.s1 is not None and p.shape != self.s1.shape:
            raise ValueError(f"sample shape {tuple(p.shape)} differs from earlier samples {tuple(self.s1.shape)}")
        if self.out_dtype is None:
            self.out_dtype = p.dtype if p.is_floating_point() else torch.float32
        q = p.to(self.dtype)
        terms = (q, q * q, safe_log(q), xlogx(q))
        if self.s1 is None:
            self.s1, self.s2, self.slog, self.sxlogx = (t.clone() for t in terms)
        else:
            for acc, t in zip(self._sums(), terms):
                acc += t
        self.count += 1
        return self

    def merge(self, other: StreamingMoments) -> StreamingMoments:
        """Add another accumulator's state (same K and shape) into this one. Returns ``self``."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge K={other.num_classes} into K={self.num_classes}")
        if other.count == 0:
            return self
        if self.count == 0:
            self.out_dtype = other.out_dtype
            self.s1, self.s2, self.slog, self.sxlogx = (t.to(self.dtype).clone() for t in other._sums())
        else:
            mine, theirs = self._sums(), other._sums()
            if theirs[0].shape != mine[0].shape:
                raise ValueError(f"cannot merge state of shape {tuple(theirs[0].shape)} into {tuple(mine[0].shape)}")
            for acc, t in zip(mine, theirs):
                acc += t.to(self.dtype)
        self.count += other.count
        return self

    # -- results ----------------------------------------------------------------------------------------------
    def _check(self) -> None:
        if self.count == 0:
            raise ValueError("StreamingMoments has no samples yet; call update() first")

    def _sums(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(S1, S2, SL, SX)``, set together by the first sample (callers have checked ``count > 0``)."""
        assert self.s1 is not None and self.s2 is not None and self.slog is not None and self.sxlogx is not None
        return self.s1, self.s2, self.slog, self.sxlogx

    def _out(self, t: Tensor) -> Tensor:
        return t.to(self.out_dtype)

    def mean(self) -> Tensor:
        """Predictive mean ``p̄`` ``(B, K, *spatial)``."""
        self._check()
        return self._out(self._sums()[0] / self.count)

    def confidence(self) -> Tensor:
        """``max_k p̄_k`` ``(B, *spatial)``."""
        self._check()
        return self._out((self._sums()[0] / self.count).amax(1))

    def _entropy(self) -> Tensor:
        return entropy_of(self._sums()[0] / self.count, dim=1)

    def _expected_entropy(self) -> Tensor:
        return -self._sums()[3].sum(1) / self.count

    def entropy(self) -> Tensor:
        """Predictive entropy ``H[p̄]`` ``(B, *spatial)``."""
        self._check()
        return self._out(self._entropy())

    def expected_entropy(self) -> Tensor:
        """Expected entropy ``−Σ_k SX_k / n`` ``(B, *spatial)``."""
        self._check()
        return self._out(self._expected_entropy())

    def mi(self) -> Tensor:
        """Mutual information ``H[p̄] − expected_entropy`` (clamped at 0) ``(B, *spatial)``."""
        self._check()
        return self._out((self._entropy() - self._expected_entropy()).clamp_min(0))

    def epkl(self) -> Tensor:
        """Expected pairwise KL ``−Σ_k p̄_k SL_k / n − expected_entropy`` (clamped at 0) ``(B, *spatial)``."""
        self._check()
        s1, _, slog, _ = self._sums()
        cross = -((s1 / self.count) * (slog / self.count)).sum(1)
        return self._out((cross - self._expected_entropy()).clamp_min(0))

    def variance(self) -> Tensor:
        """``Σ_k (S2_k / n − p̄_k²)`` (population variance over samples) ``(B, *spatial)``."""
        self._check()
        s1, s2, _, _ = self._sums()
        mean = s1 / self.count
        return self._out((s2 / self.count - mean * mean).clamp_min(0).sum(1))

    def compute(self, names: list[str] | None = None) -> dict[str, Tensor]:
        """Several measures by name (default all six): confidence, entropy, expected_entropy, mi, epkl, variance."""
        names = names or ["confidence", "entropy", "expected_entropy", "mi", "epkl", "variance"]
        allowed = {"confidence", "entropy", "expected_entropy", "mi", "epkl", "variance"}
        unknown = [n for n in names if n not in allowed]
        if unknown:
            raise ValueError(f"StreamingMoments cannot compute {unknown}; it knows {sorted(allowed)}")
        return {n: getattr(self, n)() for n in names}
