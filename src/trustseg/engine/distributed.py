"""Data-parallel training with ``torchrun`` (DistributedDataParallel; gloo on CPU, NCCL on CUDA).

:func:`trustseg.engine.run.train` detects a ``torchrun`` launch from the ``WORLD_SIZE``/``RANK`` environment
variables, initialises the process group, wraps each model in ``DistributedDataParallel`` and shards every
global batch among the ranks. Only rank 0 writes files; all ranks meet at a barrier at the end.

Command line (one process per rank)::

    torchrun --nproc_per_node 2 -m trustseg.engine.launch ddp --config config.yaml --out runs/ddp
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a data-parallel job.

    Attributes:
        rank: Global rank (0 writes the files).
        world_size: Number of processes (1 = not distributed).
        local_rank: Rank on this machine (selects the CUDA device).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes outputs."""
        return self.rank == 0


def env_info() -> DistInfo:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as set by ``torchrun`` (defaults: one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def init_distributed(device: torch.device) -> DistInfo:
    """Initialise the default process group when launched by ``torchrun`` (no-op for a single process).

    Args:
        device: The training device; CUDA uses NCCL, CPU uses gloo.

    Returns:
        This process's :class:`DistInfo`.
    """
    info = env_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return info


def wrap_model(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """Wrap ``model`` in ``DistributedDataParallel`` when distributed (models must be on ``device`` already).

    Parameters unused by a forward pass (e.g. a skipped head) are allowed (``find_unused_parameters=True``).
    """
    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for one process)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj``, in rank order (``[obj]`` for one process)."""
    if not info.enabled:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(value: float, info: DistInfo) -> float:
    """The mean of a float over all ranks."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def cleanup() -> None:
    """Destroy the process group if one was initialised."""
    if dist.is_initialized():
        dist.destroy_process_group()
