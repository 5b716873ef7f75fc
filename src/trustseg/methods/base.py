"""The method interface: how to train (loss and target) and how to predict (a :class:`Predictive`).

A method owns no training loop: :mod:`trustseg.engine` runs one loop for every method and calls
:meth:`Method.loss` each step and :meth:`Method.predict` at inference. A method with ``num_members > 1``
(deep ensembles) is trained as ``num_members`` independent jobs of the same loop (member ``i`` seeded with
``seed + i``) and predicts from all members together.

Targets (``Method.target``) say what the segmentation loss is trained against:

* ``soft``: the soft label ȳ = mean over raters of their one-hot maps;
* ``random_rater``: the one-hot label of one rater drawn at random per image and step;
* ``all_raters``: the method reads every rater itself (e.g. EDUE's variance target);
* ``majority``: the one-hot majority vote.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from trustseg.core.config import from_dict
from trustseg.core.predictive import Predictive
from trustseg.core.registry import Registry
from trustseg.models.config import NetConfig

TargetMode = Literal["soft", "random_rater", "all_raters", "majority"]

METHODS: Registry[type[Method]] = Registry("method")


@dataclass
class Batch:
    """One training/validation batch.

    Attributes:
        image: ``(B, C, *spatial)`` float.
        labels: ``(B, R, *spatial)`` int64 rater class maps.
        num_classes: K.
    """

    image: Tensor
    labels: Tensor
    num_classes: int

    def onehot(self, labels: Tensor) -> Tensor:
        """One-hot ``(B, *spatial)`` -> ``(B, K, *spatial)`` float."""
        oh = torch.nn.functional.one_hot(labels.long(), self.num_classes)
        return oh.movedim(-1, 1).to(self.image.dtype)

    def soft(self) -> Tensor:
        """Soft label ȳ ``(B, K, *spatial)``: the mean over raters of their one-hot maps."""
        oh = torch.nn.functional.one_hot(self.labels.long(), self.num_classes)  # (B, R, *sp, K)
        return oh.to(self.image.dtype).mean(1).movedim(-1, 1)

    def majority(self) -> Tensor:
        """One-hot majority vote ``(B, K, *spatial)`` (ties to the lower class)."""
        return self.onehot(self.soft().argmax(1))

    def random_rater(self, generator: torch.Generator | None = None) -> Tensor:
        """One-hot label of one rater drawn uniformly per image ``(B, K, *spatial)``."""
        b, r = self.labels.shape[:2]
        idx = torch.randint(r, (b,), generator=generator, device="cpu").to(self.labels.device)
        picked = self.labels[torch.arange(b, device=self.labels.device), idx]
        return self.onehot(picked)

    def rater_variance(self) -> Tensor:
        """Rater disagreement Σ_k ȳ_k(1 − ȳ_k) ``(B, 1, *spatial)``."""
        y = self.soft()
        return (y * (1 - y)).sum(1, keepdim=True)

    def target(self, mode: TargetMode, generator: torch.Generator | None = None) -> Tensor:
        """The ``(B, K, *spatial)`` target for a :data:`TargetMode` (``all_raters`` gives the soft label)."""
        if mode == "random_rater":
            return self.random_rater(generator)
        if mode == "majority":
            return self.majority()
        return self.soft()

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.image.to(device), self.labels.to(device), self.num_classes)


@dataclass
class TrainContext:
    """What a loss may need to know about where training stands.

    Attributes:
        epoch: Current epoch, 0-based.
        max_epochs: Total epochs of the run.
        step: Global optimisation step.
        generator: Seeded CPU generator for any randomness the loss draws (rater choice, noise, pairs).
    """

    epoch: int = 0
    max_epochs: int = 1
    step: int = 0
    generator: torch.Generator | None = None


@dataclass(frozen=True)
class NoParams:
    """A method without parameters of its own."""


class Method(abc.ABC):
    """Base class of every uncertainty method.

    Subclasses set ``name``, ``target`` and ``Params`` (a frozen dataclass whose defaults are the method's
    documented default configuration) and implement :meth:`loss` and :meth:`predict`.

    Args:
        net: The network configuration.
        spatial_dims: 2 or 3.
        in_channels: Image channels C.
        num_classes: K (background included).
        params: Method parameters (a mapping checked against ``Params`` or a ``Params`` instance).
    """

    name: ClassVar[str] = ""
    target: ClassVar[TargetMode] = "soft"
    Params: ClassVar[type] = NoParams
    #: Independent models trained as separate jobs (deep ensembles); 1 for every other method.
    num_members: int = 1
    #: Whether the method needs several raters per case (R >= 2).
    needs_raters: ClassVar[bool] = False

    def __init__(
        self,
        net: NetConfig,
        spatial_dims: int,
        in_channels: int,
        num_classes: int,
        params: Mapping[str, Any] | Any | None = None,
    ):
        self.net = net
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.num_classes = num_classes
        if params is None or isinstance(params, Mapping):
            self.params = from_dict(self.Params, dict(params or {}), where=f"method.{self.name}")
        else:
            self.params = params
        #: Post-hoc temperature (1 = none); set by :func:`trustseg.methods.temperature.fit_method_temperature`.
        self.temperature: float = 1.0

    def params_dict(self) -> dict[str, Any]:
        """The method's parameters as a plain dict (for saving next to a run)."""
        return dataclasses.asdict(self.params)

    @abc.abstractmethod
    def build_model(self, member: int = 0) -> nn.Module:
        """A freshly initialised network for ensemble member ``member`` (0 for single-model methods)."""

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: Batch, ctx: TrainContext) -> tuple[Tensor, dict[str, float]]:
        """Training loss (scalar tensor) and named float logs for one batch."""

    @abc.abstractmethod
    def predict(self, models: Sequence[nn.Module], x: Tensor) -> Predictive:
        """Predict on images ``x`` ``(B, C, *spatial)`` with the trained member(s) (already in eval mode).

        Returns:
            A :class:`Predictive` with probabilities ``(M, B, K, *spatial)`` (and ``alpha``/extras).
        """

    def check_raters(self, num_raters: int) -> None:
        """Raise a clear error when the method needs several raters and the data has fewer."""
        if self.needs_raters and num_raters < 2:
            from trustseg.core.errors import DataError

            raise DataError(
                f"method {self.name!r} learns from rater disagreement and needs at least 2 raters per case; "
                f"this dataset has {num_raters}"
            )


def build_method(
    name: str,
    net: NetConfig,
    spatial_dims: int,
    in_channels: int,
    num_classes: int,
    params: Mapping[str, Any] | None = None,
) -> Method:
    """Instantiate the registered method ``name`` (unknown names get a "did you mean" error)."""
    return METHODS.get(name)(net, spatial_dims, in_channels, num_classes, params)
