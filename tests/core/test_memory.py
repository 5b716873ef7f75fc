"""The memory a step may plan with (``TRUSTSEG_MEMORY_LIMIT``) and recognising allocator failures."""

from __future__ import annotations

import pytest

from trustseg.core.errors import ConfigError
from trustseg.core.memory import MEMORY_LIMIT_ENV, available_bytes, is_allocation_failure, limit_source, parse_bytes


def test_parse_bytes_and_the_env_override(monkeypatch):
    assert parse_bytes("512M") == 512 * 2**20 and parse_bytes("2g") == 2 * 2**30 and parse_bytes("1000") == 1000
    assert parse_bytes("1.5GiB") == int(1.5 * 2**30)
    for bad in ("lots", "-1G", "0", "nanG"):
        with pytest.raises(ConfigError, match=MEMORY_LIMIT_ENV):
            parse_bytes(bad)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "3M")
    assert available_bytes() == 3 * 2**20
    monkeypatch.delenv(MEMORY_LIMIT_ENV)
    assert available_bytes() > 0
    assert limit_source() == ""
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "1G")
    assert limit_source() == f" ({MEMORY_LIMIT_ENV})"


def test_allocation_failures_are_recognised():
    assert is_allocation_failure(MemoryError())
    assert is_allocation_failure(RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't allocate"))
    assert is_allocation_failure(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not is_allocation_failure(RuntimeError("shapes do not match"))
    assert not is_allocation_failure(ValueError("can't allocate"))
