"""Memory a prediction needs, the memory available, and one clear error when a volume cannot fit.

:func:`predict_bytes` estimates the peak host memory of predicting one image from its shape, the per-voxel
outputs of the method (``M·K`` sample probabilities, ``K`` Dirichlet parameters, extra maps) and the path:

* sliding window: ``4 N (2 C + F + 2)`` bytes for ``N`` voxels and ``C`` channels (the raw and the normalised
  image, one float32 accumulator of ``F`` outputs per voxel, the writer's segmentation and one map), plus
  ``4 P (2 C + 2 F + A)`` for a window of ``P`` voxels with ``A`` network activations per voxel;
* whole image: ``4 N (2 C + 2 F + A)`` (the network runs on the whole volume).

``A`` is ``4 · c_0`` for a network whose first level has ``c_0`` features (a U-Net keeps about that many maps of
the full resolution alive at once), 64 when unknown. The memory available is
:func:`trustseg.core.memory.available_bytes` (``TRUSTSEG_MEMORY_LIMIT`` overrides it). :func:`check_fits`
raises :class:`MemoryNeededError` (a :class:`~trustseg.core.errors.DataError`) naming both numbers and the
options that help.

Example:
    >>> predict_bytes((100, 100, 100), channels=1, outputs=2, patch=(32, 32, 32), activations=16) // 10**6
    26
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from trustseg.core.errors import DataError
from trustseg.core.memory import available_bytes, format_bytes, limit_source

#: What helps when a prediction does not fit (named in the error).
HINTS = (
    "train the run with train.patch_size (3D volumes larger than the patch are then predicted by sliding window)",
    "--dtype float16 (half the probability file)",
    "fewer samples (method.params.samples, or fewer members)",
    "a machine or device with more memory",
)


class MemoryNeededError(DataError):
    """A prediction needs more memory than is available (message: needed vs available and what helps)."""


def predict_bytes(
    spatial: Sequence[int],
    channels: int,
    outputs: int,
    patch: Sequence[int] | None = None,
    activations: int = 64,
) -> int:
    """Estimated peak bytes of predicting and writing one image (see the module docstring).

    Args:
        spatial: The image's spatial shape.
        channels: ``C``.
        outputs: ``F``, float32 outputs per voxel (``M·K`` + alpha's ``K`` + extra channels).
        patch: The sliding window, or ``None`` for the whole-image path.
        activations: ``A``, network activations per voxel.
    """
    n = math.prod(int(s) for s in spatial)
    if patch is None:
        return 4 * n * (2 * channels + 2 * outputs + activations)
    p = math.prod(int(s) for s in patch)
    return 4 * n * (2 * channels + outputs + 2) + 4 * p * (2 * channels + 2 * outputs + activations)


def memory_message(needed: int | None, available: int, path: str) -> str:
    """The one-line explanation of a prediction that does not fit."""
    need = f"needs about {format_bytes(needed)}" if needed is not None else "ran out of memory"
    have = f"{format_bytes(available)} available{limit_source()}"
    return f"predicting this image ({path}) {need}, {have}; what helps: " + "; ".join(HINTS)


def check_fits(needed: int, path: str) -> None:
    """Raise :class:`MemoryNeededError` when ``needed`` bytes exceed :func:`available_bytes`."""
    available = available_bytes()
    if needed > available:
        raise MemoryNeededError(memory_message(needed, available, path))
