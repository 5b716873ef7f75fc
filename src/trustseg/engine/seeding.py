"""Seeds and random-number-generator state, so training is reproducible and resumes exactly.

The training loop reseeds every random source at the start of every epoch from ``(seed, member, epoch)``
(:func:`epoch_seed`), so epoch ``e`` draws the same numbers whether the run went straight through or was
resumed just before it. The global generator states are also captured into checkpoints as tensors
(:func:`get_rng_state`), which ``torch.load(weights_only=True)`` accepts.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

import numpy as np
import torch


def epoch_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed derived from ``seed`` and any keys (member, epoch, purpose), stable across runs.

    Args:
        seed: The run's base seed.
        keys: Further integers or strings that must give independent streams (e.g. ``member, epoch, "patch"``).

    Returns:
        A non-negative integer below 2**63.
    """
    text = ":".join(str(k) for k in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - libraries may use the global generator
    torch.manual_seed(seed)


def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return gen


def get_rng_state() -> dict[str, Any]:
    """Global RNG states as tensors (torch CPU, CUDA if present, NumPy, Python), checkpoint-safe."""
    np_state = np.random.get_state(legacy=True)  # noqa: NPY002
    assert isinstance(np_state, tuple)  # the global RandomState is MT19937: its legacy state is a tuple
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": torch.tensor(py_state[1], dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore states captured by :func:`get_rng_state`."""
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(state["numpy_pos"]), 0, 0.0))  # noqa: NPY002
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
