"""Write a large ``.npy`` file piece by piece, without holding the whole array (the predict writer's slabs).

:func:`write_npy_slabs` writes the ``.npy`` header of ``shape``/``dtype`` and then the pieces it is given, in C
order, to a temporary file renamed onto the target when every byte is there (:func:`trustseg.core.atomic.atomic_path`);
the result is byte for byte what ``np.save`` writes for the assembled array. :func:`slab_slices` cuts the first axis
into slabs of about ``slab_voxels`` values.

Example:
    >>> import tempfile, pathlib
    >>> a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.npy"
    >>> _ = write_npy_slabs(path, a.shape, a.dtype, (a[k, sl] for k in range(2) for sl in slab_slices(a.shape[1:], 4)))
    >>> bool((np.load(path) == a).all())
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from trustseg.core.atomic import atomic_path

#: Values per slab of the writer's temporaries (4 MB in float32).
SLAB_VOXELS = 1 << 20


def slab_slices(spatial: Sequence[int], slab_voxels: int = SLAB_VOXELS) -> list[slice]:
    """Slices of the first axis of ``spatial`` holding about ``slab_voxels`` values each (at least one row)."""
    if not spatial:
        return [slice(None)]
    per_row = max(1, math.prod(int(s) for s in spatial[1:]))
    step = max(1, slab_voxels // per_row)
    return [slice(i, min(int(spatial[0]), i + step)) for i in range(0, int(spatial[0]), step)]


def write_npy_slabs(
    path: Path, shape: Sequence[int], dtype: np.dtype | type | str, pieces: Iterable[np.ndarray]
) -> Path:
    """Write an array of ``shape``/``dtype`` given as consecutive C-order ``pieces`` to ``path`` atomically.

    Raises:
        ValueError: the pieces do not add up to ``shape`` (the target is then left untouched).
    """
    dt = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    total = math.prod(shape)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": np.lib.format.dtype_to_descr(dt), "fortran_order": False, "shape": shape}
        )
        written = 0
        for piece in pieces:
            arr = np.ascontiguousarray(piece, dtype=dt)
            fh.write(arr.tobytes() if arr.size < 1 else arr.data.cast("B"))
            written += arr.size
        if written != total:
            raise ValueError(f"{path}: {written} values written, the shape {shape} holds {total}")
    return Path(path)
