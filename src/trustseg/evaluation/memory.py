"""Memory of one evaluated case: what the suite needs, what the machine has, and one clear error when it does not
fit (issue 11, F7).

* :func:`available_memory`: ``TRUSTSEG_MEMORY_LIMIT`` (bytes, or with a ``K``/``M``/``G``/``T`` suffix, powers of
  1024) when set, else ``MemAvailable`` of ``/proc/meminfo``; ``None`` when neither is known.
* :func:`case_memory_need`: an estimate of the suite's peak extra memory for one case, from its shape: the
  per-case quantities the context keeps (hard map and majority vote uint8, rater disagreement, error
  mask, oriented maps) plus the largest component temporary (measured), plus the fixed chunk temporaries.
  ``benchmarks/bench_memory_evaluate.py`` measures the real peak (``docs/RELIABILITY.md``).
* :func:`check_case_memory` raises :class:`~trustseg.core.errors.DataError` naming the case, the memory needed
  and available, and what helps; :func:`is_allocation_failure` recognises an allocator failure so the suite can
  re-raise it the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from trustseg.core.errors import ConfigError, DataError
from trustseg.metrics.voxel_stats import CHUNK

#: Environment variable capping the memory trustseg may plan with (bytes or ``8G``-style), for predict too.
MEMORY_ENV = "TRUSTSEG_MEMORY_LIMIT"
_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
#: Fixed chunk temporaries (a few float64 / int64 arrays of :data:`CHUNK` voxels).
CHUNK_BYTES = 8 * 8 * CHUNK


def parse_bytes(text: str) -> int:
    """``"123"``, ``"512M"``, ``"8G"``, ``"1.5g"`` -> bytes.

    Example:
        >>> parse_bytes("512M"), parse_bytes("2G"), parse_bytes("1000")
        (536870912, 2147483648, 1000)
    """
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS and not t[-1:].isdigit() else ""
    number = t[: len(t) - len(unit)]
    try:
        value = float(number)
    except ValueError:
        raise ConfigError(f"{MEMORY_ENV}={text!r} is not a size; use bytes or e.g. 512M, 8G") from None
    if not value > 0:
        raise ConfigError(f"{MEMORY_ENV}={text!r} must be positive")
    return int(value * _UNITS[unit])


def available_memory() -> int | None:
    """Bytes trustseg may use now: ``TRUSTSEG_MEMORY_LIMIT`` if set, else ``/proc/meminfo`` ``MemAvailable``."""
    env = os.environ.get(MEMORY_ENV)
    if env:
        return parse_bytes(env)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def case_memory_need(spatial: Sequence[int], num_classes: int, num_maps: int = 0) -> int:
    """Estimated peak extra bytes of the whole suite on one case of ``spatial`` voxels and K classes.

    Per voxel: hard map and majority vote (uint8, 1 + 1), rater disagreement (4), error mask (1), oriented maps (4
    per map, for the certainty ones), and the largest component temporary (32: CURVAS' bool consensus regions and
    per-rater masks, the samples' hard maps, ``map_quality``'s argsort and sorted copy of a map; measured by
    ``benchmarks/bench_memory_evaluate.py``); plus one byte per class (bool masks per class) and :data:`CHUNK_BYTES`.
    The soft label is computed per chunk or per class, not kept.

    Example:
        >>> need = case_memory_need((100, 100, 10), 3, num_maps=2)
        >>> need == 100_000 * (1 + 1 + 4 + 1 + 8 + 32 + 3) + CHUNK_BYTES
        True
    """
    voxels = 1
    for s in spatial:
        voxels *= int(s)
    index = 1 if num_classes <= 256 else 8  # the context's integer type for class maps
    per_voxel = index + index + 4 + 1 + 4 * num_maps + 32 + num_classes  # + per-class bool masks
    return voxels * per_voxel + CHUNK_BYTES


def _gb(n: int) -> str:
    return f"{n / 1024**3:.2f} GB"


def memory_error(case_id: str, need: int | None, available: int | None, failed: str = "") -> DataError:
    """The one error of a case that does not fit (``failed``: the allocation that failed, when one did)."""
    need_s = f"about {_gb(need)}" if need is not None else "more memory"
    have_s = f"{_gb(available)} available" if available is not None else "less available"
    source = f" ({MEMORY_ENV})" if os.environ.get(MEMORY_ENV) else ""
    what = (
        f"ran out of memory ({failed}; estimated need {need_s}, {have_s}{source})"
        if failed
        else f"evaluating it needs {need_s} but {have_s}{source}"
    )
    return DataError(
        f"case {case_id}: {what}; evaluate fewer components (SuiteConfig.components, e.g. without "
        f"'map_quality', 'surface', 'sure_gradient'), drop uncertainty maps, or use a machine with more memory"
    )


def check_case_memory(case_id: str, spatial: Sequence[int], num_classes: int, num_maps: int = 0) -> None:
    """Raise :func:`memory_error` when :func:`case_memory_need` exceeds :func:`available_memory`."""
    available = available_memory()
    need = case_memory_need(spatial, num_classes, num_maps)
    if available is not None and need > available:
        raise memory_error(case_id, need, available)


def is_allocation_failure(error: BaseException) -> bool:
    """A failed allocation: ``MemoryError`` (numpy, Python) or torch's CPU allocator ``RuntimeError``."""
    if isinstance(error, MemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("DefaultCPUAllocator" in text or "can't allocate memory" in text)
