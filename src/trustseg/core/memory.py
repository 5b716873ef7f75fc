"""The memory a trustseg step may plan with, and recognising an allocator failure (issue 11, F7).

Predict (:mod:`trustseg.inference.memory`) and evaluate (:mod:`trustseg.evaluation.memory`) estimate what one case
needs, compare it with :func:`available_bytes` before allocating, and turn a failed allocation
(:func:`is_allocation_failure`) into the same one-line error, naming the memory needed and what helps.

``TRUSTSEG_MEMORY_LIMIT`` (bytes, or with a ``K``/``M``/``G``/``T`` suffix, powers of 1024; ``iB``/``B`` allowed)
overrides what the machine reports: to test the refusals, or to leave room for other work.

Example:
    >>> parse_bytes("512M"), parse_bytes("1.5G"), parse_bytes("2GiB"), parse_bytes("1000")
    (536870912, 1610612736, 2147483648, 1000)
    >>> format_bytes(3 * 2**30), format_bytes(5 * 2**20)
    ('3.00 GB', '5 MB')
"""

from __future__ import annotations

import math
import os

from trustseg.core.errors import ConfigError

#: Environment variable overriding the available memory.
MEMORY_LIMIT_ENV = "TRUSTSEG_MEMORY_LIMIT"
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def parse_bytes(text: str) -> int:
    """A memory size (``"8G"``, ``"512M"``, ``"1.5GiB"``, ``"1000"``) in bytes.

    Raises:
        ConfigError: not a positive size, naming :data:`MEMORY_LIMIT_ENV`.
    """
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1:] if t[-1:] in _UNITS and not t[-1:].isdigit() else ""
    try:
        value = float(t[: len(t) - len(unit)]) * _UNITS[unit]
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{MEMORY_LIMIT_ENV}={text!r} is not a memory size (e.g. 8G, 512M or a number of bytes)")
    return int(value)


def available_bytes() -> int:
    """Bytes a step may use now: :data:`MEMORY_LIMIT_ENV` when set, else ``MemAvailable`` of ``/proc/meminfo``,
    else the free pages (``sysconf``); when nothing is known, a number no estimate exceeds (nothing is refused)."""
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
        return 2**62


def limit_source() -> str:
    """`` (TRUSTSEG_MEMORY_LIMIT)`` when the available memory comes from the variable, else ``""`` (for messages)."""
    return f" ({MEMORY_LIMIT_ENV})" if os.environ.get(MEMORY_LIMIT_ENV) else ""


def format_bytes(n: float) -> str:
    """``3.00 GB`` from 256 MB up, else ``NNN MB``."""
    return f"{n / 2**30:.2f} GB" if n >= 2**28 else f"{n / 2**20:.0f} MB"


def is_allocation_failure(error: BaseException) -> bool:
    """A failed allocation: ``MemoryError`` (numpy, Python) or torch's allocator ``RuntimeError`` (CPU: "can't
    allocate", ``DefaultCPUAllocator``; CUDA: "out of memory")."""
    if isinstance(error, MemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "can't allocate" in text or "DefaultCPUAllocator" in text or "out of memory" in text
    )
