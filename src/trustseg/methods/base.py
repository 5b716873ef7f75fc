"""The method interface: how to train (loss and target) and how to predict (a :class:`Predictive`).

A method owns no training loop: :mod:`trustseg.engine` runs one loop for every method and calls
:meth:`Method.loss` each step and :meth:`Method.predict` at inference. A method with ``num_members > 1``
(deep ensembles) is trained as ``num_members`` independent jobs of the same loop (member ``i`` seeded with
``seed + i``) and predicts from all members together.

Capabilities and hooks (class-level declarations with defaults, overridden per method) tell the engine, the
OOD protocols and the reports what a method is without special-casing its name; see :class:`Method`.

Targets (``Method.target``) say what the segmentation loss is trained against:

* ``soft``: the soft label ȳ = mean over raters of their one-hot maps;
* ``random_rater``: the one-hot label of one rater drawn at random per image and step;
* ``all_raters``: the method reads every rater itself (e.g. EDUE's variance target);
* ``majority``: the one-hot majority vote.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar

import torch
from torch import Tensor, nn

from trustseg.core.config import from_dict
from trustseg.core.errors import ConfigError, DataError
from trustseg.core.predictive import Predictive
from trustseg.core.registry import Registry
from trustseg.models.config import NetConfig
from trustseg.models.factory import require_capabilities

TargetMode = Literal["soft", "random_rater", "all_raters", "majority"]

METHODS: Registry[type[Method]] = Registry("method")
A = TypeVar("A")


@dataclass
class Batch:
    """One training/validation batch.

    Attributes:
        image: ``(B, C, *spatial)`` float.
        labels: ``(B, R, *spatial)`` int64 rater class maps.
        num_classes: K.
        valid: ``(B, *spatial)`` bool, the voxels that count (a field-of-view mask, with padding outside it), or
            ``None`` (every voxel counts). Every method's losses weight their voxel terms by it.
    """

    image: Tensor
    labels: Tensor
    num_classes: int
    valid: Tensor | None = None

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
        valid = None if self.valid is None else self.valid.to(device)
        return Batch(self.image.to(device), self.labels.to(device), self.num_classes, valid)


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


def param_error(method: str, param: str, must: str, value: Any) -> ConfigError:
    """The one message style of a bad method parameter: ``method.<name>.<param> must <must>, got <value>``.

    Example:
        >>> param_error("mc-dropout", "p", "be in (0, 1)", 1.5)
        ConfigError('method.mc-dropout.p must be in (0, 1), got 1.5')
    """
    return ConfigError(f"method.{method}.{param} must {must}, got {value!r}")


def cosine_decay(total_steps: int) -> Callable[[int], float]:
    """The learning-rate factor ``f(s) = ½ (1 + cos(π · min(s, S) / max(1, S)))`` for ``S = total_steps``.

    Example:
        >>> f = cosine_decay(4)
        >>> [round(f(s), 4) for s in range(6)]
        [1.0, 0.8536, 0.5, 0.1464, 0.0, 0.0]
    """

    def factor(step: int) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))

    return factor


class Method(abc.ABC):
    """Base class of every uncertainty method.

    Subclasses set ``name`` and ``Params`` (a frozen dataclass whose defaults are the method's documented default
    configuration, validated in its ``__post_init__`` with :func:`param_error` messages) and implement
    :meth:`build_model`, :meth:`loss` and :meth:`predict`.

    What a method declares about itself (class attributes, read from the registered class without building it):

    * ``primary_measure``: the measure (``trustseg.measures.MEASURES``) that is the method's own uncertainty map,
      e.g. ``predicted_variance`` for EDUE, ``vacuity`` for evidential methods; ``entropy`` by default.
    * ``samples_are_heads``: the ``M`` samples are decoder heads, coarse -> fine (layer ensembles), so per-head
      scores such as layer agreement apply; ``False`` by default.
    * ``needs_raters``: the method needs at least two raters per case.
    * ``required_capabilities``: the network capabilities (:mod:`trustseg.models.protocol`) the method uses;
      building the method with a network that cannot offer them raises :class:`ConfigError`.
    * ``param_aliases``: old parameter names still accepted (``{old: new}``).

    Hooks with defaults, overridden by methods that need them:

    * :meth:`upgrade_params` (classmethod): parameters saved by older versions -> today's (idempotent).
    * :meth:`configure_optimizer`: the optimiser and learning-rate schedule of one member (AdamW + cosine decay).
    * :meth:`augmentation`: the training augmentation to use, given the engine's default (unchanged).
    * :meth:`after_training`: a post-training step on the trained members (none by default).

    Instance attributes: ``target`` (the training target), ``num_members`` (independent models trained as
    separate jobs), ``temperature`` (post-hoc, 1 until fitted), ``net``, ``spatial_dims``, ``in_channels``,
    ``num_classes``, ``params``.

    Args:
        net: The network configuration.
        spatial_dims: 2 or 3.
        in_channels: Image channels C.
        num_classes: K (background included).
        params: Method parameters (a mapping checked against ``Params`` or a ``Params`` instance).
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    #: The training target of a method whose ``Params`` has no ``target`` field.
    fixed_target: ClassVar[TargetMode] = "soft"
    #: Whether the method needs several raters per case (R >= 2).
    needs_raters: ClassVar[bool] = False
    #: The measure that is the method's own uncertainty map.
    primary_measure: ClassVar[str] = "entropy"
    #: Whether the M samples are decoder heads, coarse -> fine.
    samples_are_heads: ClassVar[bool] = False
    #: Network capabilities the method needs (checked when the method is built).
    required_capabilities: ClassVar[frozenset[str]] = frozenset()
    #: Old parameter names accepted in place of the new ones, ``{old: new}``.
    param_aliases: ClassVar[Mapping[str, str]] = {}

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
        self.params: Any  # an instance of the subclass's Params
        if params is None or isinstance(params, Mapping):
            self.params = from_dict(self.Params, self._resolve_aliases(params or {}), where=f"method.{self.name}")
        else:
            self.params = params
        require_capabilities(net, self.required_capabilities, f"method {self.name}")
        #: Post-hoc temperature (1 = none); set by :func:`trustseg.methods.temperature.fit_method_temperature`.
        self.temperature: float = 1.0

    @classmethod
    def _resolve_aliases(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` with every old name of :attr:`param_aliases` replaced by its new one."""
        out = dict(params)
        for old, new in cls.param_aliases.items():
            if old in out:
                value = out.pop(old)
                if new in out and out[new] != value:
                    raise ConfigError(
                        f"method.{cls.name}: {old!r} is the old name of {new!r}; give only one "
                        f"(got {value!r} and {out[new]!r})"
                    )
                out.setdefault(new, value)
        return out

    @property
    def target(self) -> TargetMode:
        """What the segmentation loss is trained against: the ``target`` parameter, else :attr:`fixed_target`."""
        return getattr(self.params, "target", self.fixed_target)

    @property
    def num_members(self) -> int:
        """Independent models trained as separate jobs (deep ensembles); 1 for every other method."""
        return 1

    def params_dict(self) -> dict[str, Any]:
        """The method's parameters as a plain dict (for saving next to a run)."""
        return dataclasses.asdict(self.params)

    @classmethod
    def upgrade_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """Parameters saved by an older version (``run.json``'s ``params``) rewritten for today's method.

        Idempotent: ``upgrade_params(upgrade_params(p)) == upgrade_params(p)``. The default renames
        :attr:`param_aliases` and changes nothing else.
        """
        return cls._resolve_aliases(params)

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

    def configure_optimizer(
        self, model: nn.Module, lr: float, weight_decay: float, total_steps: int
    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """The optimiser and learning-rate schedule of one member.

        Default: ``AdamW(model.parameters(), lr, weight_decay)`` and a ``LambdaLR`` with :func:`cosine_decay`
        ``(total_steps)``, stepped once per optimisation step (the learning rate falls from ``lr`` to 0).

        Args:
            model: The member's network (unwrapped).
            lr: Peak learning rate (``train.lr``).
            weight_decay: ``train.weight_decay``.
            total_steps: Optimisation steps of the whole run (epochs × batches per epoch).
        """
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, cosine_decay(total_steps))

    def augmentation(self, default: A) -> A:
        """The training augmentation to use, given the engine's configured ``default``; default: unchanged."""
        return default

    def for_validation(self) -> Method:
        """The method whose prediction scores each epoch's validation (the learning curve and the choice of
        ``best.pt``); default: this one. A method that only changes test-time prediction returns the method it
        trains (TTA: its base method, one view instead of ``views``), so its epochs cost what the base's do.
        """
        return self

    def after_training(self, models: Sequence[nn.Module], val_batches: Iterable[Batch]) -> dict[str, Any]:
        """A post-training step, run once after every member is trained (main process only).

        Args:
            models: The trained member networks, in eval mode.
            val_batches: Validation batches (sizes padded to the network's size multiple).

        Returns:
            Entries to record in the run's ``run.json`` (e.g. ``{"temperature": T}``); the default does nothing
            and returns ``{}``.
        """
        return {}

    def check_raters(self, num_raters: int) -> None:
        """Raise a clear error when the method needs several raters and the data has fewer."""
        if self.needs_raters and num_raters < 2:
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
