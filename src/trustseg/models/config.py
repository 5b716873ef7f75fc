"""Network configuration (frozen dataclass, read from the run config's ``net`` section)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class NetConfig:
    """U-Net shape.

    Attributes:
        name: Model factory name (``trustseg.models.MODELS``).
        channels: Feature width per resolution level, encoder top to bottleneck; depth = len(channels).
        norm: Normalisation layer: instance, batch, group (8 groups) or none.
        dropout: Dropout probability (0 disables it).
        dropout_where: Which blocks carry dropout (at the end of the block): ``decoder`` (the bottleneck and every
            decoder block; the default, which lets MC dropout run the encoder once), ``last`` (only the final,
            full-resolution decoder block, so that MC dropout recomputes only that block's dropout and the 1x1
            heads per sample), ``all`` (every block) or ``bottleneck``.
        deep_heads: Add a 1x1 segmentation head on every decoder depth (layer ensembles).
    """

    name: str = "unet"
    channels: tuple[int, ...] = (16, 32, 64, 128)
    norm: Literal["instance", "batch", "group", "none"] = "instance"
    dropout: float = 0.0
    dropout_where: Literal["decoder", "last", "all", "bottleneck"] = "decoder"
    deep_heads: bool = False
