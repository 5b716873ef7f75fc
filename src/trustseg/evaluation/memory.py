"""Memory of one evaluated case: what the suite needs, what the machine has, and one clear error when it does not
fit (issue 11, F7).

* the memory available: :func:`trustseg.core.memory.available_bytes` (``TRUSTSEG_MEMORY_LIMIT`` overrides it);
* :func:`case_memory_need`: an estimate of the suite's peak extra memory for one case, from its shape: the
  per-case quantities the context keeps (hard map and majority vote uint8, rater disagreement, error
  mask, oriented maps) plus the largest component temporary (measured), plus the fixed chunk temporaries.
  ``benchmarks/bench_memory_evaluate.py`` measures the real peak (``docs/RELIABILITY.md``).
* :func:`check_case_memory` raises :class:`~trustseg.core.errors.DataError` naming the case, the memory needed
  and available, and what helps; the suite re-raises an allocator failure
  (:func:`trustseg.core.memory.is_allocation_failure`) the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

from trustseg.core.errors import DataError
from trustseg.core.memory import available_bytes, format_bytes, limit_source
from trustseg.metrics.voxel_stats import CHUNK

#: Fixed chunk temporaries (a few float64 / int64 arrays of :data:`CHUNK` voxels).
CHUNK_BYTES = 8 * 8 * CHUNK


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


def memory_error(case_id: str, need: int | None, available: int, failed: str = "") -> DataError:
    """The one error of a case that does not fit (``failed``: the allocation that failed, when one did)."""
    need_s = f"about {format_bytes(need)}" if need is not None else "more memory"
    have_s = f"{format_bytes(available)} available"
    source = limit_source()
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
    """Raise :func:`memory_error` when :func:`case_memory_need` exceeds the available memory."""
    available = available_bytes()
    need = case_memory_need(spatial, num_classes, num_maps)
    if need > available:
        raise memory_error(case_id, need, available)
