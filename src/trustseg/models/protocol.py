"""The network protocol: what every network in :data:`~trustseg.models.registry.MODELS` offers, and the optional
capabilities methods may ask for.

**Every network** (an :class:`torch.nn.Module`) offers:

* ``model(x)``: logits ``(B, K, *spatial)`` of images ``x`` ``(B, C, *spatial)``;
* ``size_multiple``: an int; every spatial size of ``x`` must be a multiple of it (a U-Net of depth ``L``:
  ``2**(L-1)``). The network does **not** pad: the caller pads (the training loader zero-pads each batch, the
  prediction path zero-pads and crops back), and a network given another size raises a :class:`ValueError` that
  names its size multiple (:func:`check_input`);
* ``spatial_dims`` (2 or 3) and ``num_classes`` (K);
* ``capabilities``: a frozenset of the optional features below that this instance offers.

A model is registered with its metadata: ``MODELS.register(name, doc=..., params=ParamsClass,
capabilities=frozenset(...))``. ``params`` is the model's frozen parameter dataclass (``net.params`` of the run
config is checked against it, with "did you mean" errors); it exposes ``size_multiple`` (the built network's, so
callers can pad before building one) and, for models that can have deep heads, ``num_heads`` (the number of
heads with deep heads on). ``capabilities`` is what the model can offer when its parameters ask for it; a built
instance's ``capabilities`` is what it offers as configured. The factory is called as
``factory(params, spatial_dims, in_channels, num_classes, extra_outputs)`` and returns the module.

**Optional capabilities** (names of :data:`CAPABILITIES`):

* ``all_outputs``: ``model(x, all_outputs=True)`` and ``model.forward_all(x)`` return a dict with ``"logits"``
  ``(B, K, *sp)`` (equal to ``model(x)``), ``"heads"`` with deep heads, and one entry per extra output. Losses
  call ``model(x, all_outputs=True)`` (a DistributedDataParallel wrapper forwards only ``__call__``).
* ``extra_heads``: the factory's ``extra_outputs={name: C_e}`` adds one head per name on the final features;
  ``model.extra_heads[name]`` is that head's module and the all-outputs dict holds its raw output
  ``(B, C_e, *sp)`` under ``name`` (EDUE's ``rater_variance``).
* ``deep_heads``: the model's params have a boolean ``deep_heads``; when true, the all-outputs dict holds
  ``"heads"``, a list of ``model.num_heads`` logits ``(B, K, *sp)`` at full size, coarse -> fine, the last equal to
  ``"logits"`` (layer ensembles).
* ``dropout``: the model's params have ``dropout`` (a probability; 0 = no dropout module at all) and
  ``dropout_where`` (the placement, in the network's own vocabulary); with ``dropout > 0`` the network contains
  :class:`torch.nn.modules.dropout._DropoutNd` modules (MC dropout switches exactly those to train mode).
* ``prefix_suffix``: ``model.deterministic_prefix(x)`` runs the part of the pass before the first dropout module
  (it draws no random numbers) and returns a state with ``state.repeat(n)`` (``n`` copies of the batch,
  copy-major); ``model.stochastic_suffix(state)`` finishes it and returns the all-outputs dict, without modifying
  the state, so that ``stochastic_suffix(deterministic_prefix(x)) == forward_all(x)`` under the same RNG state.
* ``features`` (saliency, embeddings; timm's feature contract): ``model.forward_features(x)`` returns the
  features the segmentation head reads, ``(B, C_f, *sp)``, and ``model.feature_layers()`` an ordered
  ``{name: module}`` of the modules Grad-CAM may hook (for the U-Net: every encoder block, the bottleneck, every
  decoder block), each run exactly once by ``model(x)``.

Methods declare what they need (``Method.required_capabilities``) and are refused at build time with a
:class:`~trustseg.core.errors.ConfigError` naming what the network offers (:func:`require`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from trustseg.core.errors import ConfigError

ALL_OUTPUTS = "all_outputs"
EXTRA_HEADS = "extra_heads"
DEEP_HEADS = "deep_heads"
DROPOUT = "dropout"
PREFIX_SUFFIX = "prefix_suffix"
FEATURES = "features"
#: Every optional capability a network may declare.
CAPABILITIES = frozenset({ALL_OUTPUTS, EXTRA_HEADS, DEEP_HEADS, DROPOUT, PREFIX_SUFFIX, FEATURES})


@runtime_checkable
class SegmentationNetwork(Protocol):
    """What every registered network offers (see the module docstring for the optional parts)."""

    spatial_dims: int
    num_classes: int

    @property
    def size_multiple(self) -> int:
        """Every spatial input size must be a multiple of this."""
        ...

    @property
    def capabilities(self) -> frozenset[str]:
        """The optional features (:data:`CAPABILITIES`) this instance offers."""
        ...

    def __call__(self, x: Tensor) -> Tensor:
        """Logits ``(B, K, *spatial)`` of ``x`` ``(B, C, *spatial)``."""
        ...


@runtime_checkable
class AllOutputs(Protocol):
    """Capability ``all_outputs``."""

    def forward_all(self, x: Tensor) -> dict[str, Any]:
        """``{"logits": (B, K, *sp), "heads": [...] (deep heads), <extra name>: (B, C_e, *sp)}``."""
        ...


@runtime_checkable
class PrefixSuffix(Protocol):
    """Capability ``prefix_suffix``."""

    def deterministic_prefix(self, x: Tensor) -> Any:
        """The pass up to the first dropout module; the state has ``repeat(n)``."""
        ...

    def stochastic_suffix(self, state: Any) -> dict[str, Any]:
        """Finish a state (unchanged) into the all-outputs dict."""
        ...


@runtime_checkable
class Features(Protocol):
    """Capability ``features``."""

    def forward_features(self, x: Tensor) -> Tensor:
        """The features the segmentation head reads, ``(B, C_f, *sp)``."""
        ...

    def feature_layers(self) -> dict[str, nn.Module]:
        """Ordered ``{name: module}`` of hookable modules (Grad-CAM target layers)."""
        ...


def check_input(x: Tensor, spatial_dims: int, size_multiple: int) -> None:
    """Raise :class:`ValueError` unless ``x`` is ``(B, C, *spatial)`` with every size a multiple of ``size_multiple``.

    Example:
        >>> import torch
        >>> check_input(torch.zeros(1, 1, 16, 12), 2, 4)
        >>> check_input(torch.zeros(1, 1, 15, 16), 2, 4)
        Traceback (most recent call last):
        ValueError: spatial size [15, 16] is not a multiple of the network's size multiple 4; pad the input first
    """
    if x.dim() != spatial_dims + 2:
        raise ValueError(f"expected (B, C, *spatial) with {spatial_dims} spatial axes, got {tuple(x.shape)}")
    spatial = [int(s) for s in x.shape[2:]]
    if any(s % size_multiple for s in spatial):
        raise ValueError(
            f"spatial size {spatial} is not a multiple of the network's size multiple {size_multiple}; "
            "pad the input first"
        )


def require(model: str, offered: Iterable[str], needed: Iterable[str], who: str) -> None:
    """Raise :class:`ConfigError` when the network ``model`` lacks a capability ``who`` needs.

    Example:
        >>> require("plain", {"all_outputs"}, {"all_outputs", "deep_heads"}, "method m")
        Traceback (most recent call last):
        trustseg.core.errors.ConfigError: method m needs a network with deep_heads; plain offers all_outputs
    """
    offered = frozenset(offered)
    missing = sorted(frozenset(needed) - offered)
    if missing:
        has = ", ".join(sorted(offered)) or "no optional capability"
        raise ConfigError(f"{who} needs a network with {', '.join(missing)}; {model} offers {has}")
