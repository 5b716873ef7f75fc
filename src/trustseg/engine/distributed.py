"""Data-parallel training and sharded predict/evaluate with ``torchrun`` (gloo on CPU, NCCL on CUDA).

:func:`trustseg.engine.run.train` detects a ``torchrun`` launch from the ``WORLD_SIZE``/``RANK`` environment
variables, initialises the process group, wraps each model in ``DistributedDataParallel`` and shards every
global batch among the ranks. Only rank 0 writes files; all ranks meet at a barrier at the end.

Command line (one process per rank)::

    torchrun --nproc_per_node 2 -m trustseg.engine.launch ddp --config config.yaml --out runs/ddp

Sharded predict and evaluate (:mod:`trustseg.engine.sharded_predict`, :mod:`trustseg.engine.sharded_evaluate`)
use the helpers below: :func:`session` (initialise when launched by ``torchrun``, tear down at the end),
:func:`shard_of` (rank r takes the items i with ``i % world == r``), :func:`block_of` (a contiguous block per
rank), :func:`on_main` (rank 0 runs a step, its result or error reaches every rank) and :func:`gather_checked`
(every rank's value, or the first rank's error raised on all ranks, so no rank waits forever for a failed one).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from trustseg.core.errors import DataError


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


def init_distributed(device: torch.device, timeout: timedelta = timedelta(minutes=30)) -> DistInfo:
    """Initialise the default process group when launched by ``torchrun`` (no-op for a single process).

    Args:
        device: The training device; CUDA uses NCCL, CPU uses gloo.
        timeout: How long a collective waits for the other ranks.

    Returns:
        This process's :class:`DistInfo`.
    """
    info = env_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timeout)
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


@contextlib.contextmanager
def session(device: str | torch.device = "cpu", timeout: timedelta = timedelta(minutes=30)) -> Iterator[DistInfo]:
    """This process's :class:`DistInfo` for the block; under ``torchrun`` the process group is initialised
    (NCCL for a CUDA ``device``, gloo otherwise; collectives wait ``timeout``) and destroyed at the end if this
    block created it (a gloo group left alive at exit can abort the interpreter with SIGABRT).

    Example:
        >>> with session("cpu") as info:  # not launched by torchrun: one process, nothing initialised
        ...     info.world_size
        1
    """
    dev = torch.device(device) if isinstance(device, str) and device != "auto" else device
    if dev == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert isinstance(dev, torch.device)
    created = env_info().enabled and not dist.is_initialized()
    if created and dev.type == "cuda":
        torch.cuda.set_device(env_info().local_rank % torch.cuda.device_count())
    info = init_distributed(dev, timeout)
    try:
        yield info
    finally:
        if created:
            cleanup()


def shard_of(items: Sequence, info: DistInfo) -> list:
    """The items of this rank: those at positions ``i`` with ``i % world_size == rank`` (all for one process).

    Example:
        >>> shard_of(list("abcde"), DistInfo(rank=1, world_size=2))
        ['b', 'd']
    """
    return list(items[info.rank :: info.world_size])


def block_of(n: int, info: DistInfo) -> range:
    """This rank's contiguous block of ``range(n)``: rank r gets ``[r·n // W, (r+1)·n // W)``, so the blocks in
    rank order are ``range(n)`` in order.

    Example:
        >>> [list(block_of(5, DistInfo(rank=r, world_size=2))) for r in range(2)]
        [[0, 1], [2, 3, 4]]
    """
    w, r = info.world_size, info.rank
    return range(r * n // w, (r + 1) * n // w)


def _raise_first(outcomes: list, info: DistInfo) -> list:
    """The values of ``[(ok, value_or_error)]``, or the first failure raised (a rank's own error on that rank)."""
    for rank, (ok, value) in enumerate(outcomes):
        if not ok:
            if isinstance(value, BaseException):
                raise value
            raise DataError(f"rank {rank} of {info.world_size} failed: {value}")
    return [value for _, value in outcomes]


def _outcome(fn: Callable[[], object]) -> tuple[bool, object]:
    try:
        return True, fn()
    except Exception as e:  # reported to every rank, then raised
        return False, e


def gather_checked(fn: Callable[[], object], info: DistInfo) -> list:
    """Run ``fn`` on every rank and return every rank's result, in rank order.

    If ``fn`` raises on any rank, every rank raises that error (the failed rank its own, the first failure on
    the others), instead of the others waiting forever at the next collective.
    """
    mine = _outcome(fn)
    if not info.enabled:
        return _raise_first([mine], info)
    out: list = [None] * info.world_size
    try:
        dist.all_gather_object(out, mine)
    except Exception as e:  # an error object that does not pickle: send its text
        dist.all_gather_object(out, (mine[0], mine[1] if mine[0] else str(e)))
    if not mine[0]:
        raise mine[1]  # type: ignore[misc]
    return _raise_first(out, info)


def on_main(fn: Callable[[], object], info: DistInfo) -> object:
    """Run ``fn`` on rank 0 only and return its result on every rank (its error raised on every rank)."""
    mine = _outcome(fn) if info.is_main else (True, None)
    if not info.enabled:
        return _raise_first([mine], info)[0]
    box = [mine]
    dist.broadcast_object_list(box, src=0)
    return _raise_first([box[0]], info)[0]
