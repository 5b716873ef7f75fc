"""Registries of uncertainty measures (per-pixel maps) and of aggregations (map -> one score per image), and the
metadata that says what each measure needs and which way it points.

Every measure is registered with :func:`register_measure`, which records its metadata in :data:`MEASURES`
(read back with ``MEASURES.meta(name)``):

* ``orientation``: ``"uncertainty"`` (higher = more uncertain, e.g. entropy) or ``"certainty"`` (higher = more
  certain, e.g. confidence). :func:`is_certainty` reads it and :func:`as_uncertainty` turns a certainty ``c``
  into ``1 − c``, so that every map compared with errors or disagreement is "higher = more uncertain".
* ``requires``: what the :class:`~trustseg.core.predictive.Predictive` must have, a tuple of requirements that
  must all hold. A requirement is ``"samples"`` (``M > 1``), ``"alpha"`` (a Dirichlet), ``"extras:<key>"``
  (``pred.extras[<key>]``), or several of these joined by ``"|"`` (any one suffices, e.g. ``"samples|alpha"``).
  :func:`supports` checks them and :func:`available_measures` lists the measures a prediction supports, in
  registration order.

Aggregators are registered with :func:`register_aggregator` in :data:`AGGREGATORS`, with

* ``mask``: ``"foreground"`` (it needs a foreground mask, e.g. ``fg_mean``) or ``"optional"`` (a mask restricts
  it; without one it uses the whole image);
* ``image_kwargs``: the keyword arguments of the image-level score convention
  (:func:`trustseg.measures.image.image_score`), e.g. ``{"dilate": 2}`` for ``fg_mean``;
* ``needs``: keyword arguments a caller must give (``("threshold",)`` for ``frac_above``).

Example:
    >>> import torch
    >>> from trustseg import Predictive
    >>> from trustseg.measures import available_measures
    >>> pred = Predictive(probs=torch.full((1, 1, 2, 2, 2), 0.5))  # M = 1: no sample-based measures
    >>> available_measures(pred)
    ['confidence', 'entropy']
    >>> is_certainty("confidence"), MEASURES.meta("mi")["requires"]
    (True, ('samples|alpha',))
    >>> as_uncertainty("confidence", torch.tensor([0.9, 0.5]))
    tensor([0.1000, 0.5000])
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar, cast

from trustseg.core.errors import ConfigError
from trustseg.core.predictive import Predictive
from trustseg.core.registry import Registry

T = TypeVar("T")
Orientation = Literal["uncertainty", "certainty"]
ORIENTATIONS = ("uncertainty", "certainty")
MASKS = ("optional", "foreground")

#: name -> fn(pred: Predictive, **kw) -> Tensor (B, *spatial); metadata ``orientation``, ``requires``
MEASURES: Registry = Registry("measure")
#: name -> fn(umap: Tensor (B, *spatial), mask=None, **kw) -> Tensor (B,); metadata ``mask``, ``image_kwargs``,
#: ``needs``
AGGREGATORS: Registry = Registry("aggregator")

_ORDER: list[str] = []  # measure names in registration order (the display order)


def _check_requirement(req: str) -> None:
    for alt in req.split("|"):
        if alt not in ("samples", "alpha") and not (alt.startswith("extras:") and len(alt) > len("extras:")):
            raise ValueError(f"unknown measure requirement {alt!r}; use 'samples', 'alpha' or 'extras:<key>'")


def register_measure(
    name: str, doc: str | None = None, *, orientation: Orientation = "uncertainty", requires: Sequence[str] = ()
) -> Callable[[T], T]:
    """Decorator registering a measure ``fn(pred) -> (B, *spatial)`` in :data:`MEASURES` with its metadata.

    Args:
        name: Registered name.
        doc: One line of documentation (default: the docstring's first line).
        orientation: ``"uncertainty"`` or ``"certainty"``.
        requires: Requirements on the prediction (see the module docstring), all of which must hold.
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    reqs = tuple(requires)
    for r in reqs:
        _check_requirement(r)

    def deco(fn: T) -> T:
        MEASURES.add(name, fn, doc, orientation=orientation, requires=reqs)
        _ORDER.append(name)
        return fn

    return deco


def register_aggregator(
    name: str,
    doc: str | None = None,
    *,
    mask: Literal["optional", "foreground"] = "optional",
    image_kwargs: Mapping[str, Any] | None = None,
    needs: Sequence[str] = (),
) -> Callable[[T], T]:
    """Decorator registering an aggregator ``fn(umap (B, *spatial), mask=None, **kw) -> (B,)`` in
    :data:`AGGREGATORS` with its metadata ``mask``, ``image_kwargs`` and ``needs`` (see the module docstring)."""
    if mask not in MASKS:
        raise ValueError(f"mask must be one of {MASKS}, got {mask!r}")

    def deco(fn: T) -> T:
        AGGREGATORS.add(name, fn, doc, mask=mask, image_kwargs=dict(image_kwargs or {}), needs=tuple(needs))
        return fn

    return deco


def _holds(req: str, pred: Predictive) -> bool:
    for alt in req.split("|"):
        if alt == "samples" and pred.num_samples > 1:
            return True
        if alt == "alpha" and pred.alpha is not None:
            return True
        if alt.startswith("extras:") and alt[len("extras:") :] in pred.extras:
            return True
    return False


def missing_requirements(name: str, pred: Predictive) -> list[str]:
    """The requirements of measure ``name`` (its ``requires`` metadata) that ``pred`` does not meet."""
    return [r for r in MEASURES.meta(name).get("requires", ()) if not _holds(r, pred)]


def _describe(req: str) -> str:
    words = {"samples": "M >= 2 samples", "alpha": "a Dirichlet (alpha)"}
    return " or ".join(words.get(a, f"extras[{a[len('extras:') :]!r}]") for a in req.split("|"))


def require(pred: Predictive, name: str) -> None:
    """Raise :class:`~trustseg.core.errors.ConfigError` naming what ``pred`` lacks for measure ``name``."""
    missing = missing_requirements(name, pred)
    if missing:
        has = f"M = {pred.num_samples}, {'an' if pred.alpha is not None else 'no'} alpha, extras {sorted(pred.extras)}"
        raise ConfigError(f"measure {name!r} needs {' and '.join(map(_describe, missing))}; this prediction has {has}")


def supports(name: str, pred: Predictive) -> bool:
    """Whether ``pred`` has everything measure ``name`` requires."""
    return not missing_requirements(name, pred)


def available_measures(pred: Predictive) -> list[str]:
    """Names of the registered measures that ``pred`` supports, in registration (display) order.

    For the built-in measures: ``confidence`` and ``entropy`` always; ``expected_entropy``, ``mi``, ``epkl`` and
    ``variance`` when ``M > 1`` or ``alpha`` is present; ``vacuity`` with ``alpha``; ``predicted_variance`` with
    ``extras["rater_variance"]``.
    """
    names = _ORDER + [n for n in MEASURES.names() if n not in _ORDER]
    return [n for n in names if supports(n, pred)]


def is_certainty(name: str) -> bool:
    """Whether a higher value of measure ``name`` means MORE certain (its ``orientation`` is ``"certainty"``)."""
    return MEASURES.meta(name).get("orientation", "uncertainty") == "certainty"


def as_uncertainty(name: str, values: T) -> T:
    """``values`` of measure ``name`` oriented so that higher = more uncertain: ``1 − values`` for a certainty
    measure (confidence), ``values`` unchanged otherwise. Works on tensors, arrays and floats."""
    return 1 - cast(Any, values) if is_certainty(name) else values  # T is any type with 1 - T -> T
