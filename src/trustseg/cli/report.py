"""``trustseg report DIR --out report.html``: the comparison report of a ``trustseg compare`` output folder
(:func:`trustseg.compare.report.build_compare_report`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from trustseg.compare.report import build_compare_report


def add_report(sub: argparse._SubParsersAction) -> None:
    """Add ``report`` to the top-level parser."""
    p = sub.add_parser(
        "report", help="one self-contained HTML page from a `trustseg compare` folder (trustseg.compare.report)"
    )
    p.add_argument("dir", type=Path, help="the --out folder of trustseg compare")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the HTML page (default DIR/report.html); figures as PNG + PDF go to <stem>_figures/ beside it",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing file that is not a trustseg report")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    out = args.out if args.out is not None else args.dir / "report.html"
    page = build_compare_report(args.dir, out, overwrite=args.overwrite)
    Console().print(f"[bold green]report[/]: {page} (figures in {page.parent / (page.stem + '_figures')})")
    return 0
