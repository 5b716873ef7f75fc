"""Describe the machine a benchmark ran on (written into every results file)."""

from __future__ import annotations

import datetime as _dt
import os
import platform


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform.processor())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def describe() -> dict:
    """CPU, cores visible to this process, memory, OS, Python/torch versions and the date."""
    import torch

    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            mem_gb = round(int(f.readline().split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": cpu_model(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": mem_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def markdown() -> str:
    """One line describing the machine, for a results file."""
    d = describe()
    return (
        f"Machine: {d['cpu']}, {d['cores']} cores, {d['memory_gb']} GB RAM, {d['os']}; Python {d['python']}, "
        f"torch {d['torch']} ({d['torch_threads']} threads, CUDA {'yes' if d['cuda'] else 'no'}); {d['date']}."
    )
