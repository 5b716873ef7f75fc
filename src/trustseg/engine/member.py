"""Train ensemble members in parallel processes (``python -m trustseg.engine.launch member --run RUN --member M``).

The run folder must already hold ``config.yaml`` and ``run.json`` (written by :func:`trustseg.engine.run.train`
before it starts member processes, or by ``trustseg train`` on another machine). Members are independent jobs:
any subset can run anywhere that sees the dataset and the run folder, at the same time or one after another, and
each resumes on its own with ``--resume`` (a finished member exits at once).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from trustseg.core.atomic import make_dirs
from trustseg.engine import checkpoint as ck


def run_members_parallel(out: Path, members: list[int], workers: int, resume: bool) -> None:
    """Train ``members`` as ``python -m trustseg.engine.launch member`` processes, at most ``workers`` at a time.

    Each process gets ``torch.get_num_threads() // workers`` CPU threads and logs to ``member_<m>/train.log``.

    Raises:
        RuntimeError: when a member process fails (with the end of its log), after the others have finished.
        An interruption of this process terminates the running members; each keeps its last complete epoch.
    """
    threads = max(1, torch.get_num_threads() // workers)
    pending = list(members)
    running: list[tuple[int, subprocess.Popen, Path]] = []
    failed: list[str] = []
    try:
        while pending or running:
            while pending and len(running) < workers:
                m = pending.pop(0)
                log = ck.member_dir(out, m) / "train.log"
                make_dirs(log.parent)
                cmd = [sys.executable, "-m", "trustseg.engine.launch", "member", "--run", str(out), "--member", str(m)]
                cmd += ["--threads", str(threads)] + (["--resume"] if resume else [])
                env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
                with open(log, "w") as fh:
                    running.append((m, subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env), log))
            time.sleep(0.2)
            for item in list(running):
                m, proc, log = item
                if proc.poll() is not None:
                    running.remove(item)
                    if proc.returncode != 0:
                        tail = "\n".join(log.read_text().splitlines()[-15:])
                        failed.append(f"member {m} failed (exit {proc.returncode}); see {log}:\n{tail}")
    except BaseException:  # Ctrl-C or an error here: stop the members still running (their last.pt stays)
        for _, proc, _ in running:
            proc.terminate()
        for _, proc, _ in running:
            proc.wait()
        raise
    if failed:
        raise RuntimeError("\n".join(failed))
