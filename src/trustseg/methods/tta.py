"""Test-time augmentation on top of any registered method.

Training is exactly the base method's (``build_model``, ``loss``, ``num_members``, ``target`` and
``needs_raters`` are delegated to an inner instance built from ``Params.base`` and ``Params.base_params``), and
so is the per-epoch validation (``for_validation``: the base method, one view).
Prediction runs the base method on every view of the input, maps its probabilities, Dirichlet concentration and
extra maps back with the inverse transform, and keeps every view: the result has ``M = views × base M``
samples (:meth:`Predictive.concat_samples`; Dirichlets and extras are averaged over views).

Views (each a single transform, not combinations, to keep the count linear):

* the identity;
* ``flips``: a flip along each spatial axis (2 views in 2D, 3 in 3D);
* ``rotations``: rotations by 90°, 180°, 270° in the plane of the last two axes. 90° and 270° need that plane
  to be square; for non-square inputs only the 180° rotation (which preserves the shape) is used;
* ``intensity``: ``x' = scale · x + shift`` for each (scale, shift) pair (the identity pair is skipped); the
  shift is in the units of the normalised image (z-scored inputs: fractions of a standard deviation). Intensity
  views need no inverse.

The default gives 10 views in 2D (1 + 2 + 3 + 4) and 11 in 3D. Post-hoc temperature: ``tta.temperature`` is
passed to the base method before predicting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from trustseg.core.errors import ConfigError
from trustseg.core.predictive import Predictive
from trustseg.methods.base import METHODS, Batch, Method, TargetMode, TrainContext, build_method, param_error

Fn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class TTAParams:
    """Parameters of ``tta``.

    Attributes:
        base: The registered method that is trained and whose predictions are augmented.
        flips: Add a flip along each spatial axis.
        rotations: Add 90°/180°/270° rotations in the last two axes (only 180° when they differ in size).
        intensity: ``(scale, shift)`` pairs, ``x' = scale · x + shift``.
        base_params: Parameters of the base method.
    """

    base: str = "softmax"
    flips: bool = True
    rotations: bool = True
    intensity: tuple[tuple[float, float], ...] = ((1.1, 0.0), (0.9, 0.0), (1.0, 0.1), (1.0, -0.1))
    base_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.base == "tta":
            raise param_error("tta", "base", "name another method than 'tta' itself", self.base)


@dataclass(frozen=True)
class View:
    """One test-time view: ``forward`` on images ``(B, C, *sp)``, ``inverse`` on any ``(..., *sp)`` output."""

    name: str
    forward: Fn
    inverse: Fn


def _flip(dim: int) -> Fn:
    return lambda t: torch.flip(t, (dim,))


def _rot(k: int) -> Fn:
    return lambda t: torch.rot90(t, k, (-2, -1))


def _intensity(scale: float, shift: float) -> Fn:
    return lambda t: t * scale + shift


def _identity(t: Tensor) -> Tensor:
    return t


def make_views(
    spatial_shape: Sequence[int],
    flips: bool = True,
    rotations: bool = True,
    intensity: Sequence[tuple[float, float]] = (),
) -> list[View]:
    """The views for an input of spatial shape ``spatial_shape`` (identity first).

    Geometric transforms address spatial axes from the end (``dim = -n .. -1``), so the same inverse applies to
    probabilities ``(M, B, K, *sp)``, Dirichlets ``(B, K, *sp)`` and extra maps ``(B, C_e, *sp)``.
    """
    n = len(spatial_shape)
    views = [View("identity", _identity, _identity)]
    if flips:
        views += [View(f"flip{ax}", _flip(ax - n), _flip(ax - n)) for ax in range(n)]
    if rotations and n >= 2:
        ks = (1, 2, 3) if spatial_shape[-1] == spatial_shape[-2] else (2,)
        views += [View(f"rot{90 * k}", _rot(k), _rot(-k)) for k in ks]
    for scale, shift in intensity:
        if (float(scale), float(shift)) != (1.0, 0.0):
            views.append(View(f"int{scale:g},{shift:+g}", _intensity(scale, shift), _identity))
    return views


@METHODS.register("tta", doc="test-time augmentation (flips, rotations, intensity) on top of any method")
class TTA(Method):
    """Test-time augmentation around a base method; every view is kept as samples."""

    name = "tta"
    Params = TTAParams

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: The method that is trained and predicted from.
        self.base: Method = build_method(
            self.params.base, self.net, self.spatial_dims, self.in_channels, self.num_classes, self.params.base_params
        )

    @classmethod
    def upgrade_params(cls, params: Mapping[str, Any]) -> dict[str, Any]:
        """The base method's :meth:`~trustseg.methods.base.Method.upgrade_params` applied to ``base_params``."""
        out = super().upgrade_params(params)
        base = out.get("base", TTAParams.base)
        if base in METHODS and base != cls.name:
            out["base_params"] = METHODS.get(base).upgrade_params(out.get("base_params") or {})
        return out

    @property
    def target(self) -> TargetMode:
        """The base method's target."""
        return self.base.target

    @property
    def num_members(self) -> int:
        """The base method's members."""
        return self.base.num_members

    @property
    def needs_raters(self) -> bool:  # type: ignore[override]
        """Whether the base method needs several raters."""
        return self.base.needs_raters

    def views(self, spatial_shape: Sequence[int]) -> list[View]:
        """The views used for inputs of ``spatial_shape``."""
        return make_views(spatial_shape, self.params.flips, self.params.rotations, self.params.intensity)

    def build_model(self, member: int = 0) -> nn.Module:
        """The base method's network for ``member``."""
        return self.base.build_model(member)

    def loss(self, model: nn.Module, batch: Batch, ctx: TrainContext) -> tuple[Tensor, dict[str, float]]:
        """The base method's loss (TTA changes nothing in training)."""
        return self.base.loss(model, batch, ctx)

    def for_validation(self) -> Method:
        """The base method: TTA's training is the base method's, so its epochs are validated (and ``best.pt``
        chosen) as the base method's run would be, at one view's cost (11 views in 3D made a TTA epoch ~9× a
        softmax epoch under a shared time budget)."""
        return self.base

    def predict(self, models: Sequence[nn.Module], x: Tensor) -> Predictive:
        """Base predictions on every view, mapped back, concatenated along M ``(V · M_base, B, K, *sp)``."""
        self.base.temperature = self.temperature
        parts = [self.base.predict(models, v.forward(x)).map(v.inverse) for v in self.views(x.shape[2:])]
        return Predictive.concat_samples(parts)

    def sample_logits(self, models: Sequence[nn.Module], x: Tensor) -> Tensor:
        """Untempered logits of every view and base sample, mapped back, ``(V · M_base, B, K, *sp)``.

        Only for base methods with logits (see :class:`~trustseg.methods.softmax.LogitMethod`).
        """
        fn = getattr(self.base, "sample_logits", None)
        if fn is None:
            raise ConfigError(f"tta base {self.params.base!r} has no logits (temperature scaling does not apply)")
        return torch.cat([v.inverse(fn(models, v.forward(x))) for v in self.views(x.shape[2:])], 0)
