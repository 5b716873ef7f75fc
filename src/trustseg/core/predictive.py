"""The one prediction type every method returns and every measure reads.

Shapes (the package-wide convention):

* ``probs``: ``(M, B, K, *spatial)`` class probabilities of ``M`` samples (MC-dropout passes, ensemble
  members, TTA views, layer heads). ``M = 1`` for deterministic and one-pass models. Samples are never folded
  into the batch axis.
* ``alpha``: ``(B, K, *spatial)`` Dirichlet concentration of an evidential model (α = softplus(z) + 1), or
  ``None``. When given without ``probs``, ``probs`` is set to the Dirichlet mean ``(α / S)[None]`` with
  ``S = Σ_k α_k``.
* ``extras``: extra per-pixel maps a method produces, each ``(B, C_e, *spatial)``; names in use:
  ``"rater_variance"`` (EDUE's predicted rater disagreement, ``C_e = 1``), and ``"measure:<name>"``
  (:data:`PRECOMPUTED`): a measure's map ``(B, 1, *spatial)`` computed by the predictor while it streamed its
  members (the nnU-Net adapter's ``--samples-policy stream``), which the writer takes as it is instead of
  recomputing it from ``probs`` (that then holds only the members' mean).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import torch
from torch import Tensor

#: Prefix of the extras that hold a measure's precomputed map (``extras["measure:entropy"]``).
PRECOMPUTED = "measure:"


def precomputed_measures(pred: Predictive) -> dict[str, Tensor]:
    """Measure name -> its precomputed map ``(B, 1, *spatial)`` among ``pred.extras`` (:data:`PRECOMPUTED`)."""
    return {k.removeprefix(PRECOMPUTED): v for k, v in pred.extras.items() if k.startswith(PRECOMPUTED)}


@dataclass
class Predictive:
    """Class probabilities of M samples (or a Dirichlet), plus extra maps.

    Attributes:
        probs: ``(M, B, K, *spatial)`` probabilities, summing to 1 over ``K``.
        alpha: ``(B, K, *spatial)`` Dirichlet concentration (evidential models) or ``None``.
        extras: name -> ``(B, C_e, *spatial)`` additional maps.
    """

    # Optional only at construction (alpha alone gives probs = the Dirichlet mean); __post_init__ always sets it,
    # so readers see a Tensor.
    probs: Tensor = None  # type: ignore[assignment]  # None is the "derive from alpha" default
    alpha: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.probs is None and self.alpha is None:
            raise ValueError("Predictive needs probs (M, B, K, *spatial) or alpha (B, K, *spatial)")
        if self.alpha is not None:
            if self.alpha.dim() < 3:
                raise ValueError(f"alpha must be (B, K, *spatial), got shape {tuple(self.alpha.shape)}")
            if self.probs is None:
                self.probs = (self.alpha / self.alpha.sum(1, keepdim=True)).unsqueeze(0)
        assert self.probs is not None
        if self.probs.dim() < 4:
            raise ValueError(f"probs must be (M, B, K, *spatial), got shape {tuple(self.probs.shape)}")
        if self.alpha is not None and self.alpha.shape != self.probs.shape[1:]:
            raise ValueError(f"alpha shape {tuple(self.alpha.shape)} does not match probs {tuple(self.probs.shape)}")
        for name, t in self.extras.items():
            if t.shape[0] != self.batch_size or t.shape[2:] != self.spatial_shape:
                raise ValueError(
                    f"extra map {name!r} has shape {tuple(t.shape)}, expected (B={self.batch_size}, C, "
                    f"*{tuple(self.spatial_shape)})"
                )

    # -- constructors -------------------------------------------------------------------------------------
    @classmethod
    def from_logits(cls, logits: Tensor, **extras: Tensor) -> Predictive:
        """Softmax over ``K`` of logits ``(M, B, K, *spatial)`` (use ``logits[None]`` for one sample)."""
        return cls(probs=torch.softmax(logits.float(), dim=2), extras=dict(extras))

    @classmethod
    def from_samples(cls, samples: Sequence[Tensor], **extras: Tensor) -> Predictive:
        """Stack per-sample probabilities ``(B, K, *spatial)`` into ``(M, B, K, *spatial)``."""
        return cls(probs=torch.stack(list(samples), 0), extras=dict(extras))

    @classmethod
    def from_alpha(cls, alpha: Tensor, **extras: Tensor) -> Predictive:
        """An evidential prediction from Dirichlet concentration ``(B, K, *spatial)``."""
        return cls(alpha=alpha, extras=dict(extras))

    # -- shape facts ----------------------------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        """M."""
        return int(self.probs.shape[0])

    @property
    def batch_size(self) -> int:
        """B."""
        return int(self.probs.shape[1])

    @property
    def num_classes(self) -> int:
        """K (background included)."""
        return int(self.probs.shape[2])

    @property
    def spatial_shape(self) -> torch.Size:
        """The spatial shape (H, W) or (D, H, W)."""
        return self.probs.shape[3:]

    @property
    def spatial_dims(self) -> int:
        """2 or 3."""
        return len(self.spatial_shape)

    @property
    def is_evidential(self) -> bool:
        """Whether a Dirichlet concentration is available."""
        return self.alpha is not None

    # -- views ----------------------------------------------------------------------------------------------
    def mean(self) -> Tensor:
        """Predictive mean p̄ ``(B, K, *spatial)`` over the M samples."""
        return self.probs.mean(0)

    def hard(self) -> Tensor:
        """Hard segmentation ``(B, *spatial)``: argmax over classes of the predictive mean."""
        return self.mean().argmax(1)

    def map(self, fn) -> Predictive:
        """Apply ``fn`` to every tensor (probs, alpha, extras) and return a new Predictive."""
        return Predictive(
            probs=fn(self.probs),
            alpha=None if self.alpha is None else fn(self.alpha),
            extras={k: fn(v) for k, v in self.extras.items()},
        )

    def to(self, *args, **kwargs) -> Predictive:
        """Move/cast every tensor, like :meth:`torch.Tensor.to`."""
        return self.map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> Predictive:
        """Detach every tensor from the graph."""
        return self.map(lambda t: t.detach())

    def select(self, index: int | slice) -> Predictive:
        """Keep batch elements ``index`` (the batch axis stays)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Predictive(
            probs=self.probs[:, index],
            alpha=None if self.alpha is None else self.alpha[index],
            extras={k: v[index] for k, v in self.extras.items()},
        )

    @staticmethod
    def concat_samples(parts: Sequence[Predictive]) -> Predictive:
        """Concatenate predictions along M (e.g. TTA views). Dirichlets and extras are averaged."""
        if not parts:
            raise ValueError("nothing to concatenate")
        alphas = [p.alpha for p in parts if p.alpha is not None]
        alpha = torch.stack(alphas).mean(0) if len(alphas) == len(parts) else None
        keys = set.intersection(*(set(p.extras) for p in parts))
        extras = {k: torch.stack([p.extras[k] for p in parts]).mean(0) for k in keys}
        return Predictive(probs=torch.cat([p.probs for p in parts], 0), alpha=alpha, extras=extras)

    @staticmethod
    def concat_batch(parts: Sequence[Predictive]) -> Predictive:
        """Concatenate predictions along B (same M, K and spatial shape)."""
        # every part is expected to carry alpha when the first does; torch.cat rejects a None among them
        alpha = None if parts[0].alpha is None else torch.cat([cast(Tensor, p.alpha) for p in parts], 0)
        extras = {k: torch.cat([p.extras[k] for p in parts], 0) for k in parts[0].extras}
        return Predictive(probs=torch.cat([p.probs for p in parts], 1), alpha=alpha, extras=extras)
