"""``trustseg compare``: train, predict and evaluate several methods under identical conditions, one table.

Config: defaults < ``--preset NAME`` or ``--config FILE`` < the flags (``--data``, ``--methods``, ``--seeds``,
``--folds``, ``--budget-minutes``) < ``--set KEY=VALUE``. The same command runs the jobs as ranks under
``torchrun --nproc_per_node N -m trustseg.cli.main compare ...``. See ``docs/compare.md``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from trustseg.compare.config import CompareConfig, with_overrides
from trustseg.compare.presets import PRESETS, preset
from trustseg.compare.run import run_compare
from trustseg.core.config import read_mapping
from trustseg.core.errors import ConfigError

ParseKV = Callable[[list[str], str], dict[str, Any]]


def add_compare(sub: argparse._SubParsersAction, parse_kv: ParseKV) -> None:
    """Add ``compare`` to the top-level parser (``parse_kv`` parses ``--set`` pairs)."""
    p = sub.add_parser(
        "compare", help="methods side by side: same backbone, data, seeds, budget -> one table (trustseg.compare)"
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (compare.yaml, jobs/, table.*)")
    p.add_argument("--config", type=Path, help="a CompareConfig YAML/TOML (see recipes/ and docs/compare.md)")
    p.add_argument("--preset", default=None, help=f"a built-in config: {', '.join(PRESETS.names())}")
    p.add_argument("--data", type=Path, help="one trustseg dataset folder (replaces the config's datasets)")
    p.add_argument("--methods", default=None, help="comma-separated method labels (e.g. softmax,mc-dropout,ensemble)")
    p.add_argument("--seeds", default=None, help="comma-separated training seeds (e.g. 0,1,2)")
    p.add_argument("--folds", type=int, default=None, help="K > 1: one job per k-fold round (train.fold)")
    p.add_argument("--budget-minutes", type=float, default=None, help="training-time cap per member (minutes)")
    p.add_argument("--workers", type=int, default=1, help="jobs run at once (per rank under torchrun)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field (train.epochs=1)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace a different compare.yaml in --out (unchanged jobs are kept)"
    )
    p.add_argument("--no-progress", action="store_true", help="no per-job progress lines")
    p.set_defaults(func=lambda args: cmd_compare(args, parse_kv))


def compare_config_from_args(args: argparse.Namespace, parse_kv: ParseKV) -> CompareConfig:
    """Compose the comparison config from the parsed arguments."""
    if args.config is not None and args.preset is not None:
        raise ConfigError("give --config FILE or --preset NAME, not both")
    base: dict[str, Any] = {}
    if args.config is not None:
        base = read_mapping(args.config)
    elif args.preset is not None:
        base = preset(args.preset)
    try:
        seeds = None if args.seeds is None else [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds}: give comma-separated integers (0,1,2)") from None
    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    cfg = with_overrides(
        base,
        data=None if args.data is None else str(args.data),
        methods=methods,
        seeds=seeds,
        folds=args.folds,
        budget_minutes=args.budget_minutes,
        sets=parse_kv(args.set, "--set"),
    )
    return cfg


def cmd_compare(args: argparse.Namespace, parse_kv: ParseKV) -> int:
    try:
        cfg = compare_config_from_args(args, parse_kv)
    except ConfigError as e:
        where = args.config or (f"preset {args.preset}" if args.preset else None)
        raise ConfigError(f"{where}: {e}" if where and str(where) not in str(e) else str(e)) from None
    table = run_compare(
        cfg, args.out, workers=args.workers, overwrite=args.overwrite, progress=not args.no_progress, command=sys.argv
    )
    if table is not None:
        Console().print(f"table written to [bold]{args.out / 'table.md'}[/] (and table.json, table.csv)")
    return 0
