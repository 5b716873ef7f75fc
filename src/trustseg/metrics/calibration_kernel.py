"""ctypes binding of the optional one-pass C kernel behind ``calibration_state`` (:mod:`.calibration_state`).

The kernel (``_calibration_kernel.c``, built by ``pip install`` when a C compiler is present) reads every voxel
once and fills the same fixed-size state as the pure-torch path, with the same conventions: fine-bin index
computed in float64 from the probability's own dtype, first maximum on ties, ``eps`` clamp of the NLL, the same
validation. It allocates nothing per voxel (one small histogram per call) and runs one call per thread on
disjoint voxel ranges (ctypes releases the GIL), so it neither touches torch's thread settings nor makes
chunk-sized temporaries. The histograms equal the torch path's bit for bit; NLL and Brier are float64 throughout
(the torch path rounds each voxel's log and square to float32 first: agreement ~1e-9 relative).

Where it is not built, is stale, or is disabled (``TRUSTSEG_NO_KERNEL=1``), :func:`available` is False and
the torch path runs. Inputs it does not take (non-CPU tensors, dtypes other than float32/float64 probabilities
with integer/bool labels or soft labels of the probabilities' dtype, non-contiguous voxels) also go to torch.
When it meets an invalid value it stops and the caller re-runs the torch path, which raises the detailed error.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

KERNEL_VERSION = 1  # must equal TS_KERNEL_VERSION in _calibration_kernel.c
MIN_PART = 1 << 16  # voxels per thread below which splitting does not pay
MAX_CALL = 1 << 30  # voxels per kernel call: its packed per-bin counters hold fewer than 2**31
_CLOSED = {"left": 0, "right": 1, "torchmetrics": 2}
_PROB = {torch.float32: "f32", torch.float64: "f64"}
_LABEL = {
    torch.uint8: "u8",
    torch.bool: "u8",
    torch.int8: "i8",
    torch.int16: "i16",
    torch.int32: "i32",
    torch.int64: "i64",
}

_lib: ctypes.CDLL | None = None
_why_not = "not loaded yet"
_loaded = False

_P, _I64, _INT, _DBL = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double
_BINARY_ARGS = [_P, _P, _I64, _INT, _INT, _INT, _INT, _INT, _P, _P, _P, _P]
_MULTI_ARGS = [_P, _I64, _P, _I64, _I64, _INT, _INT, _INT, _INT, _P, _DBL, _P, _P, _P, _P]


def _load() -> ctypes.CDLL | None:
    global _lib, _why_not, _loaded
    if _loaded:
        return _lib
    _loaded = True
    if os.environ.get("TRUSTSEG_NO_KERNEL", "") not in ("", "0"):
        _why_not = "disabled by TRUSTSEG_NO_KERNEL"
        return None
    spec = importlib.util.find_spec(f"{__package__}._calibration_kernel")  # locates the built file, runs nothing
    if spec is None or not spec.origin:
        _why_not = "not built (no _calibration_kernel extension); reinstall with a C compiler (pip install -e .)"
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
        version = lib.ts_kernel_version()
    except (OSError, AttributeError) as e:
        _why_not = f"cannot load {spec.origin}: {e}"
        return None
    if version != KERNEL_VERSION:
        _why_not = f"stale build (kernel version {version}, expected {KERNEL_VERSION}); rerun pip install -e ."
        warnings.warn(f"trustseg calibration kernel: {_why_not}; using the torch path", stacklevel=3)
        return None
    for kind, args in (("binary", _BINARY_ARGS), ("multi", _MULTI_ARGS)):
        for pt in _PROB.values():
            for lt in (*sorted(set(_LABEL.values())), "soft"):
                fn = getattr(lib, f"ts_{kind}_{pt}_{lt}")
                fn.argtypes, fn.restype = args, ctypes.c_int
    _lib, _why_not = lib, ""
    return lib


def available() -> bool:
    """True when the compiled kernel is built, current and not disabled."""
    return _load() is not None


def why_unavailable() -> str:
    """Empty when :func:`available`, else the reason (not built, stale, disabled)."""
    _load()
    return _why_not


def supports(p: Tensor, t: Tensor, binary: bool) -> bool:
    """Whether the kernel takes this item: p (n,) binary or (K, n), t (n,) hard or soft (n,)/(K, n)."""
    if p.device.type != "cpu" or t.device.type != "cpu" or p.dtype not in _PROB:
        return False
    if t.is_floating_point():
        if t.dtype != p.dtype:
            return False
    elif t.dtype not in _LABEL:
        return False
    return p.stride(-1) == 1 and t.stride(-1) == 1 and (binary or p.dim() == 2)


def _ptr(x: Tensor, start: int) -> int:
    return x.data_ptr() + start * x.element_size()


def add_item(
    state: dict[str, Tensor],
    p: Tensor,
    t: Tensor,
    *,
    binary: bool,
    fine: int,
    closed: str,
    toplabel: bool,
    classes: list[int],
    sum_tol: float,
    workers: int,
) -> bool:
    """Add one item into ``state`` (in place) with the kernel; False (state untouched) if it met invalid input.

    Args:
        state: Calibration state (:func:`~trustseg.metrics.calibration_state.empty_state`) with S = fine + 1.
        p: ``(n,)`` foreground probabilities (binary) or ``(K, n)`` probabilities, voxels contiguous.
        t: ``(n,)`` hard labels, or soft labels ``(n,)`` (binary) / ``(K, n)`` of p's dtype.
        binary, fine, closed, toplabel, classes, sum_tol: As in ``calibration_state`` (fine = number of fine bins).
        workers: Threads, each running the kernel on one contiguous voxel range (more ranges than threads only
            beyond ``MAX_CALL`` voxels a range).
    """
    lib = _load()
    if lib is None:
        raise RuntimeError(f"calibration kernel unavailable: {_why_not}")
    n = p.shape[-1]
    k = 2 if binary else p.shape[0]
    soft = t.is_floating_point()
    fn = getattr(lib, f"ts_{'binary' if binary else 'multi'}_{_PROB[p.dtype]}_{'soft' if soft else _LABEL[t.dtype]}")
    size = fine + 1
    parts = max(1, min(workers, n // MIN_PART), -(-n // MAX_CALL))
    bounds = [n * i // parts for i in range(parts + 1)]
    outs = [
        (
            torch.zeros(3, size, dtype=torch.float64),
            torch.zeros(k, 3, size, dtype=torch.float64),
            torch.zeros(2, dtype=torch.float64),
        )
        for _ in range(parts)
    ]
    cmask = torch.zeros(k, dtype=torch.uint8)
    cmask[classes] = 1
    code = _CLOSED[closed]

    def run(i: int) -> int:
        a, b = bounds[i], bounds[i + 1]
        top, cls, sums = outs[i]
        bad = ctypes.c_int64(-1)
        tail = (top.data_ptr(), cls.data_ptr(), sums.data_ptr(), ctypes.addressof(bad))
        if binary:
            return fn(
                _ptr(p, a), _ptr(t, a), b - a, fine, code, int(toplabel), int(0 in classes), int(1 in classes), *tail
            )
        ys = t.stride(0) if soft else 0
        return fn(
            _ptr(p, a),
            p.stride(0),
            _ptr(t, a),
            ys,
            b - a,
            k,
            fine,
            code,
            int(toplabel),
            cmask.data_ptr(),
            sum_tol,
            *tail,
        )

    if parts == 1:
        codes = [run(0)]
    else:
        with ThreadPoolExecutor(min(workers, parts)) as pool:
            codes = list(pool.map(run, range(parts)))
    if any(codes):
        return False
    for top, cls, sums in outs:
        state["top"] += top
        state["cls"] += cls
        state["nll"] += sums[0]
        state["brier"] += sums[1]
    state["n"] += n
    return True
