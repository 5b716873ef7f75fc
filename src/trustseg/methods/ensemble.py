"""Deep ensemble: M independently initialised members, each trained as its own job.

Members differ by initialisation: :meth:`Ensemble.build_model` seeds a private RNG (the global one is left
untouched) with ``torch.initial_seed() + 1_000_003 · member`` before creating the network, so members differ
whether or not the training engine reseeds per member (the engine seeds member ``i`` with ``seed + i``; the two
offsets never collide for fewer than 10⁶ members). Training each member is the softmax baseline's
(Dice + CE against ``target``); data order and augmentation differ through the engine's per-member seed.
Prediction stacks the members' tempered softmax outputs: ``M`` = number of member models given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trustseg.core.errors import ConfigError
from trustseg.methods.base import METHODS, param_error
from trustseg.methods.softmax import LogitMethod, SegTarget
from trustseg.models.factory import build_network

#: Seed stride between members (a prime, larger than any sensible ``seed + i`` offset of the engine).
MEMBER_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class EnsembleParams:
    """Parameters of ``ensemble``.

    Attributes:
        members: Number of members (5 is the usual choice).
        target: Training target of every member (``soft``, ``random_rater`` or ``majority``).
    """

    members: int = 5
    target: SegTarget = "soft"

    def __post_init__(self) -> None:
        if self.members < 1:
            raise param_error("ensemble", "members", "be >= 1", self.members)


def member_seed(member: int, base: int | None = None) -> int:
    """Initialisation seed of ``member``: ``(base + 1_000_003 · member) mod 2⁶³``, base = ``torch.initial_seed()``."""
    base = torch.initial_seed() if base is None else base
    return (base + MEMBER_SEED_STRIDE * member) % (2**63)


@METHODS.register("ensemble", doc="deep ensemble of independently initialised members (M = members)")
class Ensemble(LogitMethod):
    """Deep ensemble: ``members`` independently trained U-Nets."""

    name = "ensemble"
    Params = EnsembleParams

    @property
    def num_members(self) -> int:
        """``members``: each member is trained as its own job."""
        return self.params.members

    def build_model(self, member: int = 0) -> nn.Module:
        """A U-Net initialised from :func:`member_seed` ``(member)`` (the global RNG state is preserved)."""
        if not 0 <= member < self.num_members:
            raise ConfigError(f"ensemble member {member} out of range 0..{self.num_members - 1}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(member_seed(member))
            return build_network(self.net, self.spatial_dims, self.in_channels, self.num_classes)

    def sample_logits(self, models: Sequence[nn.Module], x: Tensor) -> Tensor:
        """Logits of every member ``(M, B, K, *spatial)``, ``M = len(models)``."""
        if len(models) == 0:
            raise ConfigError("ensemble needs at least one trained member")
        return torch.stack([m(x) for m in models], 0)
