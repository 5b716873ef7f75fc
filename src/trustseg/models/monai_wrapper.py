"""One wrapper that puts a MONAI network behind the trustseg network protocol (:mod:`trustseg.models.protocol`).

:class:`MonaiNet` holds the MONAI module (``.net``) and adds what the protocol asks of every network
(``spatial_dims``, ``num_classes``, ``size_multiple`` with its input check, ``capabilities``) and the optional
capabilities ``all_outputs``, ``extra_heads`` and ``dropout``:

* **Extra heads, tapped** (``head`` names a submodule): the MONAI network's final 1x1 convolution is located by
  its dotted path; a forward pre-hook, registered for the duration of one pass, reads that convolution's input
  (the final features ``(B, C_f, *sp)``) and every extra head is a separate 1x1 convolution ``C_f -> C_e`` on
  them, exactly like the U-Net's extra heads.
* **Extra heads, widened** (``head=None``, MONAI's ``UNet``, whose last layer is a stride-2 transposed
  convolution, so no full-resolution features exist before it): the MONAI network is built with
  ``K + Σ C_e`` output channels and the output is split; ``extra_heads[name]`` is then a parameter-free
  :class:`ChannelSlice` (the head's weights are the last layer's extra output channels), so a method that
  initialises a head's bias (EDUE's ``init_logit``) finds no bias and leaves it.
* **Dropout**: whatever dropout MONAI builds from the network's ``dropout`` parameter (``dropout_where`` is
  ``monai``: MONAI places it); MC dropout switches exactly the :class:`~torch.nn.modules.dropout._DropoutNd`
  modules; dropout modules of probability 0 that MONAI builds anyway are replaced by identities
  (:func:`drop_inactive_dropout`).

No ``deep_heads``, ``prefix_suffix`` or ``features``: methods that need them (layer ensembles) are refused when
they are built, by the capability check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import Tensor, nn
from torch.nn.modules.dropout import _DropoutNd

from trustseg.models.protocol import ALL_OUTPUTS, DROPOUT, EXTRA_HEADS, check_input
from trustseg.models.unet_blocks import conv_class

#: The capabilities every MONAI-backed model may offer.
MONAI_CAPABILITIES = frozenset({ALL_OUTPUTS, EXTRA_HEADS, DROPOUT})


class ChannelSlice(nn.Module):
    """Channels ``[start, stop)`` of a widened output ``(B, K + Σ C_e, *sp)`` (a head without weights of its own)."""

    def __init__(self, start: int, stop: int):
        super().__init__()
        self.start, self.stop = int(start), int(stop)

    def forward(self, out: Tensor) -> Tensor:
        return out[:, self.start : self.stop]

    def extra_repr(self) -> str:
        return f"channels=[{self.start}, {self.stop})"


def drop_inactive_dropout(net: nn.Module) -> nn.Module:
    """Replace every dropout module with ``p = 0`` in ``net`` by :class:`torch.nn.Identity` (in place).

    Some MONAI networks build ``Dropout(p=0)`` when asked for no dropout; the protocol wants no dropout module
    at all then (MC dropout refuses a network without dropout instead of sampling M identical passes).
    """
    # every name of a module registered under several (SwinUNETR shares dropout modules between blocks)
    for name, module in list(net.named_modules(remove_duplicate=False)):
        if isinstance(module, _DropoutNd) and float(module.p) == 0.0 and name:
            parent, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent) if parent else net, child, nn.Identity())
    return net


class MonaiNet(nn.Module):
    """A MONAI segmentation network following the trustseg protocol.

    Args:
        net: The MONAI module, mapping ``(B, C, *sp)`` to ``(B, K, *sp)`` (or ``K + Σ C_e`` channels when
            widened).
        spatial_dims: 2 or 3.
        num_classes: K.
        size_multiple: Every spatial input size must be a multiple of it (computed from the architecture).
        extra_outputs: name -> C_e of the extra heads.
        head: Dotted path of ``net``'s final 1x1 convolution (its input is tapped for the extra heads), or
            ``None`` when ``net`` was built widened by ``Σ C_e`` channels.
        head_channels: Input channels ``C_f`` of that convolution (with ``head``).
    """

    def __init__(
        self,
        net: nn.Module,
        spatial_dims: int,
        num_classes: int,
        size_multiple: int,
        extra_outputs: dict[str, int] | None = None,
        head: str | None = None,
        head_channels: int = 0,
    ):
        super().__init__()
        self.net = drop_inactive_dropout(net)
        self.spatial_dims = int(spatial_dims)
        self.num_classes = int(num_classes)
        self._multiple = int(size_multiple)
        self.head = head
        extra = {k: int(c) for k, c in (extra_outputs or {}).items()}
        if head is not None:
            conv = conv_class(spatial_dims)
            self.extra_heads = nn.ModuleDict({k: conv(head_channels, c, 1) for k, c in extra.items()})
        else:
            slices, start = {}, num_classes
            for k, c in extra.items():
                slices[k] = ChannelSlice(start, start + c)
                start += c
            self.extra_heads = nn.ModuleDict(slices)

    @property
    def size_multiple(self) -> int:
        """Every spatial input size must be a multiple of it."""
        return self._multiple

    @property
    def capabilities(self) -> frozenset[str]:
        """``all_outputs`` and ``extra_heads``; ``dropout`` when the MONAI network holds dropout modules."""
        caps = {ALL_OUTPUTS, EXTRA_HEADS}
        if any(isinstance(m, _DropoutNd) for m in self.modules()):
            caps.add(DROPOUT)
        return frozenset(caps)

    @contextlib.contextmanager
    def _tap(self) -> Iterator[list[Tensor]]:
        """Collect the input of the final 1x1 convolution during one pass."""
        seen: list[Tensor] = []
        if self.head is None or not len(self.extra_heads):
            yield seen
            return
        module = self.net.get_submodule(self.head)
        handle = module.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        try:
            yield seen
        finally:
            handle.remove()

    def forward_all(self, x: Tensor) -> dict[str, Any]:
        """``{"logits": (B, K, *sp), <extra name>: (B, C_e, *sp)}`` of one pass over ``x`` ``(B, C, *sp)``."""
        check_input(x, self.spatial_dims, self._multiple)
        with self._tap() as seen:
            raw = self.net(x)
        out: dict[str, Any] = {"logits": raw[:, : self.num_classes]}
        if self.head is None:
            out.update({k: head(raw) for k, head in self.extra_heads.items()})
        elif len(self.extra_heads):
            feats = seen[-1]
            out.update({k: head(feats) for k, head in self.extra_heads.items()})
        return out

    def forward(self, x: Tensor, all_outputs: bool = False) -> Tensor | dict[str, Any]:
        """Logits ``(B, K, *sp)``; with ``all_outputs`` the dict of :meth:`forward_all` (losses call this form,
        which also works under DistributedDataParallel)."""
        out = self.forward_all(x)
        return out if all_outputs else out["logits"]

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"spatial_dims={self.spatial_dims}, size_multiple={self._multiple}, params={n}"
