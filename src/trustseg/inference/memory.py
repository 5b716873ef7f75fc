"""Memory a prediction needs, the memory available, and one clear error when a volume cannot fit.

:func:`predict_bytes` estimates the peak host memory of predicting one image from its shape, the per-voxel
outputs of the method (``M·K`` sample probabilities, ``K`` Dirichlet parameters, extra maps) and the path:

* sliding window: ``4 N (2 C + F + 2)`` bytes for ``N`` voxels and ``C`` channels (the raw and the normalised
  image, one float32 accumulator of ``F`` outputs per voxel, the writer's segmentation and one map), plus
  ``4 P (2 C + 2 F + A)`` for a window of ``P`` voxels with ``A`` network activations per voxel;
* whole image: ``4 N (2 C + 2 F + A)`` (the network runs on the whole volume).

``A`` is ``4 · c_0`` for a network whose first level has ``c_0`` features (a U-Net keeps about that many maps of
the full resolution alive at once), 64 when unknown. :func:`available_bytes` is ``TRUSTSEG_MEMORY_LIMIT`` (bytes,
or with a suffix ``K``/``M``/``G``/``T``) when set, else ``MemAvailable`` of ``/proc/meminfo`` (else
``sysconf(SC_AVPHYS_PAGES)``). :func:`check_fits` raises :class:`MemoryNeededError` (a
:class:`~trustseg.core.errors.DataError`) naming both numbers and the options that help.

Example:
    >>> predict_bytes((100, 100, 100), channels=1, outputs=2, patch=(32, 32, 32), activations=16) // 10**6
    26
    >>> parse_bytes("1.5G")
    1610612736
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from trustseg.core.errors import DataError

#: Environment variable overriding the available memory (bytes, or e.g. ``512M``, ``8G``).
MEMORY_LIMIT_ENV = "TRUSTSEG_MEMORY_LIMIT"
_UNITS = {"": 1, "B": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}

#: What helps when a prediction does not fit (named in the error).
HINTS = (
    "train the run with train.patch_size (3D volumes larger than the patch are then predicted by sliding window)",
    "--dtype float16 (half the probability file)",
    "fewer samples (method.params.samples, or fewer members)",
    "a machine or device with more memory",
)


class MemoryNeededError(DataError):
    """A prediction needs more memory than is available (message: needed vs available and what helps)."""


def parse_bytes(text: str) -> int:
    """``"512M"`` -> bytes (suffixes K, M, G, T are powers of 1024; a plain number is bytes).

    Raises:
        DataError: a value that is not a positive size, naming :data:`MEMORY_LIMIT_ENV`.
    """
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS else ""
    try:
        value = float(t[: len(t) - len(unit)]) * _UNITS[unit]
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or value <= 0:
        raise DataError(f"{MEMORY_LIMIT_ENV}={text!r} is not a memory size (e.g. 8G, 512M or a number of bytes)")
    return int(value)


def available_bytes() -> int:
    """Memory a prediction may use: ``TRUSTSEG_MEMORY_LIMIT`` if set, else ``MemAvailable`` (or free pages)."""
    env = os.environ.get(MEMORY_LIMIT_ENV)
    if env:
        return parse_bytes(env)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2**62  # unknown: do not refuse


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


def _gb(b: float) -> str:
    return f"{b / 2**30:.2f} GB" if b >= 2**28 else f"{b / 2**20:.0f} MB"


def memory_message(needed: int | None, available: int, path: str) -> str:
    """The one-line explanation of a prediction that does not fit."""
    need = f"needs about {_gb(needed)}" if needed is not None else "ran out of memory"
    return f"predicting this image ({path}) {need}, {_gb(available)} available; what helps: " + "; ".join(HINTS)


def check_fits(needed: int, path: str) -> None:
    """Raise :class:`MemoryNeededError` when ``needed`` bytes exceed :func:`available_bytes`."""
    available = available_bytes()
    if needed > available:
        raise MemoryNeededError(memory_message(needed, available, path))


def is_allocation_failure(error: BaseException) -> bool:
    """Whether ``error`` is an allocator failure (``MemoryError``, torch's ``can't allocate`` / out of memory)."""
    if isinstance(error, MemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "can't allocate" in text or "DefaultCPUAllocator" in text or "out of memory" in text
    )
