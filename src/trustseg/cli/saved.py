"""``trustseg import-predictions``: saved probabilities of any tool (nnU-Net's ``--save_probabilities``, MONAI,
a notebook) into a trustseg prediction folder; and the conversion ``trustseg evaluate`` does for such a folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from trustseg.data.predictions import INDEX
from trustseg.engine.import_predictions import import_predictions


def add_import_predictions(sub: argparse._SubParsersAction) -> None:
    """Register ``trustseg import-predictions``."""
    p = sub.add_parser(
        "import-predictions",
        help="saved probabilities of another tool -> a trustseg prediction folder (trustseg.engine.import_predictions)",
    )
    p.add_argument("src", type=Path, help="folder: <case>.npz|npy|nii.gz, <case>/<member>.*, or <member>/<case>.*")
    p.add_argument("--data", required=True, type=Path, help="the trustseg dataset the probabilities are of")
    p.add_argument("--out", required=True, type=Path, help="prediction folder to write")
    add_saved_options(p)
    p.add_argument("--split", default=None, help="every case of this split must be present")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier prediction folder at --out")
    p.set_defaults(func=cmd_import_predictions)


def add_saved_options(p: argparse.ArgumentParser) -> None:
    """The options that say how saved probabilities are stored (also on ``trustseg evaluate``)."""
    p.add_argument("--logits", action="store_true", help="the saved arrays are logits (softmax over the class axis)")
    p.add_argument("--key", default=None, help="the .npz array to read (default: probabilities, probs, array)")
    p.add_argument(
        "--spatial-order",
        choices=("auto", "as_is", "reversed"),
        default="auto",
        help="spatial axes of the arrays: auto (transpose when they are the case's reversed, as nnU-Net's), "
        "as_is, reversed",
    )


def _convert(src: Path, data: Path, out: Path, args: argparse.Namespace, overwrite: bool, split=None) -> Path:
    return import_predictions(
        src,
        data,
        out,
        split=split,
        kind="logits" if args.logits else "probs",
        key=args.key,
        spatial_order=args.spatial_order,
        overwrite=overwrite,
        progress=not getattr(args, "no_progress", False),
    )


def cmd_import_predictions(args: argparse.Namespace) -> int:
    out = _convert(args.src, args.data, args.out, args, args.overwrite, args.split)
    Console().print(f"prediction folder written to [bold]{out}[/]")
    return 0


def prediction_folder_for(pred: Path, data: Path, results: Path, args: argparse.Namespace) -> Path:
    """``pred`` itself when it is a trustseg prediction folder; else (saved probabilities of another tool) the
    trustseg folder converted from it, ``<results stem>_predictions/`` beside the results (replaced on a rerun:
    trustseg wrote it)."""
    if (pred / INDEX).is_file() or not pred.is_dir():
        return pred
    out = results.parent / f"{results.stem}_predictions"
    converted = _convert(pred, data, out, args, overwrite=(out / INDEX).is_file())
    Console().print(
        f"{pred} holds saved probabilities: converted into [bold]{converted}[/] (trustseg import-predictions)"
    )
    return converted
