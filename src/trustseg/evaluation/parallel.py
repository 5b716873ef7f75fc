"""Contiguous blocks of a job run in worker processes (``trustseg evaluate --workers N``).

:func:`run_blocks` calls ``fn(*args, shard=(i, N))`` for ``i = 0 .. N-1`` in N ``spawn`` processes and returns
the N results in block order, so a caller that merges them in that order sees what one process computes over the
whole job (:func:`trustseg.evaluation.evaluate.score_cases` takes exactly such a ``shard``, the contiguous block
``[i·n // N, (i+1)·n // N)`` of its n cases).

- Threads: each worker runs with ``max(1, torch.get_num_threads() // N)`` intra-op threads, so N workers use the
  cores one process would, instead of N times as many threads fighting over them.
- Errors: the first block that fails (lowest block number among those that failed when it is seen) is raised in
  the caller as the same error, with the same message — a :class:`~trustseg.core.errors.DataError` keeps the file
  it names — and the other workers are terminated.
- Ctrl-C (or any exception in the caller while waiting) terminates every worker before it propagates.

This module knows nothing about the suite; it is the process pool and its error handling only.
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import connection as mp_connection
from typing import Any

import torch

from trustseg.core.errors import ConfigError, DataError


@dataclass(frozen=True)
class Failure:
    """A worker's exception in a form that always unpickles (errors with keyword-only arguments, such as the
    suite's ``CaseInputError``, cannot be rebuilt from their pickled ``args``).

    Attributes:
        error: The exception itself when it survives a pickle round trip, else ``None``.
        kind: ``"data"`` (a :class:`DataError`, rebuilt from ``problem`` and ``path``), ``"config"`` or ``"other"``.
        problem: The message (of a DataError: the problem without the path).
        path: The file a DataError names.
        type_name: The exception's class name (for ``"other"``).
    """

    error: BaseException | None
    kind: str
    problem: str
    path: str | None
    type_name: str

    @classmethod
    def of(cls, e: BaseException) -> Failure:
        """The failure of exception ``e``."""
        if isinstance(e, DataError):
            return cls(None, "data", e.problem, None if e.path is None else str(e.path), type(e).__name__)
        if isinstance(e, ConfigError):
            return cls(None, "config", str(e), None, type(e).__name__)
        try:
            again = pickle.loads(pickle.dumps(e))
        except Exception:
            again = None
        return cls(again, "other", str(e), None, type(e).__name__)

    def rebuild(self) -> BaseException:
        """The exception to raise in the caller (same message)."""
        if self.kind == "data":
            return DataError(self.problem, self.path)
        if self.kind == "config":
            return ConfigError(self.problem)
        if self.error is not None:
            return self.error
        return RuntimeError(f"{self.type_name}: {self.problem}")


def worker_threads(workers: int) -> int:
    """Intra-op threads of each of ``workers`` processes: ``max(1, torch.get_num_threads() // workers)``."""
    return max(1, torch.get_num_threads() // workers)


def _child(conn: Any, fn: Callable[..., Any], args: tuple, block: int, workers: int, threads: int) -> None:
    """A worker process: run one block, send ``(True, result)`` or ``(False, Failure)`` back."""
    torch.set_num_threads(threads)
    try:
        outcome: tuple[bool, Any] = (True, fn(*args, shard=(block, workers)))
    except Exception as e:  # sent back as a Failure: the caller raises it
        outcome = (False, Failure.of(e))
    conn.send_bytes(pickle.dumps(outcome))  # plain pickle: tensors are copied, not shared memory of this process
    conn.close()


def check_workers(workers: Any, option: str = "workers") -> int:
    """``workers`` as a positive int.

    Raises:
        ConfigError: naming ``option``, for anything else.

    Example:
        >>> check_workers(2)
        2
        >>> check_workers(0, "--workers")
        Traceback (most recent call last):
        ...
        trustseg.core.errors.ConfigError: --workers=0: give a whole number of worker processes, 1 or more
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"{option}={workers!r}: give a whole number of worker processes, 1 or more")
    return workers


#: Seconds a terminated worker gets to exit before it is killed.
TERMINATE_GRACE_S = 10.0
#: Longest wait for the workers before the main thread runs pending signal handlers (Ctrl-C).
WAIT_S = 0.5


def run_blocks(fn: Callable[..., Any], args: tuple, workers: int) -> list[Any]:
    """``[fn(*args, shard=(i, workers)) for i in range(workers)]``, each call in its own ``spawn`` process.

    ``fn`` must be a module-level function and ``args`` picklable (they travel to the workers); the results
    travel back pickled.

    Args:
        fn: The job of one block.
        args: Its arguments other than ``shard``.
        workers: Number of processes (1: ``fn`` runs here, in this process, with ``shard=(0, 1)``).

    Returns:
        The results in block order.

    Raises:
        The first failing block's exception (module docstring); KeyboardInterrupt after terminating the workers.

    """
    workers = check_workers(workers)
    if workers == 1:
        return [fn(*args, shard=(0, 1))]
    ctx = multiprocessing.get_context("spawn")
    threads = worker_threads(workers)
    procs, conns = [], []
    try:
        for i in range(workers):
            mine, theirs = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(theirs, fn, args, i, workers, threads), daemon=True)
            procs.append(proc)  # tracked before it starts: a Ctrl-C inside start() cannot leave it running
            conns.append(mine)
            try:
                proc.start()
            finally:
                theirs.close()
        return _collect(procs, conns)
    finally:  # normal end, a failed block, Ctrl-C: no worker outlives the call
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            if proc.pid is None:  # never started
                continue
            proc.join(timeout=TERMINATE_GRACE_S)
            if proc.is_alive():  # SIGTERM not honoured in time: SIGKILL
                proc.kill()
                proc.join()
        for conn in conns:
            conn.close()


def _collect(procs: list, conns: list) -> list[Any]:
    """The blocks' results in block order; the first failure seen (lowest block among those seen together) or a
    worker that died without an answer (killed, out of memory) is raised at once."""
    results: dict[int, Any] = {}
    while len(results) < len(procs):
        waiting = [i for i in range(len(procs)) if i not in results]
        # a bounded wait: a Ctrl-C delivered to another thread of this process (torch's) does not interrupt the
        # main thread's select(), so it must come back to the interpreter to run the pending SIGINT handler
        if not mp_connection.wait([conns[i] for i in waiting] + [procs[i].sentinel for i in waiting], WAIT_S):
            continue
        failures = []
        for i in waiting:
            if conns[i].poll():
                try:
                    ok, value = pickle.loads(conns[i].recv_bytes())
                except EOFError:
                    ok, value = False, _died(procs[i], i)
                if not ok:
                    failures.append(value)
                results[i] = value
            elif not procs[i].is_alive():
                failures.append(_died(procs[i], i))
        if failures:
            raise failures[0].rebuild()
    return [results[i] for i in range(len(procs))]


def _died(proc: Any, block: int) -> Failure:
    proc.join(1)
    problem = f"worker {block} stopped without a result (exit code {proc.exitcode}; killed or out of memory?)"
    return Failure(RuntimeError(problem), "other", problem, None, "RuntimeError")


__all__ = ["Failure", "check_workers", "run_blocks", "worker_threads"]
