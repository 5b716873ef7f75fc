"""Train one ensemble member as its own process: ``python -m trustseg.engine.member --run RUN --member M``.

The run folder must already hold ``config.yaml`` and ``run.json`` (written by :func:`trustseg.engine.train.train`
before it starts member processes, or by ``trustseg train`` on another machine). Members are independent jobs:
any subset can run anywhere that sees the dataset and the run folder, at the same time or one after another, and
each resumes on its own with ``--resume`` (a finished member exits at once).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from trustseg.engine import checkpoint as ck


def run_members_parallel(out: Path, members: list[int], workers: int, resume: bool) -> None:
    """Train ``members`` as ``python -m trustseg.engine.member`` processes, at most ``workers`` at a time.

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
                log.parent.mkdir(parents=True, exist_ok=True)
                cmd = [sys.executable, "-m", "trustseg.engine.member", "--run", str(out), "--member", str(m)]
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


def main(argv: list[str] | None = None) -> dict:
    """Parse the command line, train the member and print its result as JSON."""
    parser = argparse.ArgumentParser(description="Train one member of a trustseg run.")
    parser.add_argument("--run", required=True, help="run folder holding config.yaml")
    parser.add_argument("--member", type=int, required=True, help="member index (seed = train.seed + member)")
    parser.add_argument("--resume", action="store_true", help="continue from member_<m>/last.pt")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from trustseg.engine.train import config_from_run, train_member

    cfg = config_from_run(args.run)
    result = train_member(cfg, args.run, args.member, resume=args.resume, progress=args.progress)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
