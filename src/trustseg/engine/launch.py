"""Process entry points of the engine.

* ``python -m trustseg.engine.launch member --run RUN --member M [--resume] [--threads N]``: train one ensemble
  member as its own process (what ``trustseg train --workers W`` starts; members are independent jobs, so any
  subset can also run on other machines that see the dataset and the run folder, and each resumes on its own);
* ``torchrun --nproc_per_node G -m trustseg.engine.launch ddp --config CFG --out RUN [--resume]``: data-parallel
  training, one process per rank (:mod:`trustseg.engine.distributed`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

from trustseg.engine.config import load_run_config
from trustseg.engine.distributed import cleanup, env_info
from trustseg.engine.fit import train_member
from trustseg.engine.run import train
from trustseg.engine.run_folder import config_from_run


def member_main(argv: Sequence[str] | None = None) -> dict:
    """Parse a member command line, train the member and print its result as JSON."""
    parser = argparse.ArgumentParser(prog="trustseg.engine.launch member", description="Train one member of a run.")
    parser.add_argument("--run", required=True, help="run folder holding config.yaml")
    parser.add_argument("--member", type=int, required=True, help="member index (seed = train.seed + member)")
    parser.add_argument("--resume", action="store_true", help="continue from member_<m>/last.pt")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    cfg = config_from_run(args.run)
    result = train_member(cfg, args.run, args.member, resume=args.resume, progress=args.progress)
    print(json.dumps(result))
    return result


def ddp_main(argv: Sequence[str] | None = None) -> None:
    """``torchrun ... -m trustseg.engine.launch ddp --config CFG --out RUN [--resume]``."""
    parser = argparse.ArgumentParser(prog="trustseg.engine.launch ddp", description="Data-parallel training.")
    parser.add_argument("--config", required=True, help="run config (YAML/TOML/JSON)")
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--resume", action="store_true", help="continue from last.pt")
    args = parser.parse_args(argv)
    cfg = load_run_config(args.config)
    try:
        train(cfg, args.out, resume=args.resume, progress=env_info().is_main)
    finally:
        cleanup()


ENTRY_POINTS = {"member": member_main, "ddp": ddp_main}


def main(argv: Sequence[str] | None = None) -> None:
    """Dispatch ``member`` or ``ddp``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ENTRY_POINTS:
        sys.exit(f"usage: python -m trustseg.engine.launch {{{','.join(ENTRY_POINTS)}}} ...")
    ENTRY_POINTS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
