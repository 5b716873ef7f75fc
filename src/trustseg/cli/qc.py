"""``trustseg qc fit | predict | explain``: segmentation quality without ground truth (:mod:`trustseg.quality`).

``qc fit`` learns to predict each case's Dice (or HD95) from a prediction folder whose cases have labels; ``qc
predict`` writes ``qc.csv`` (predicted quality with a conformal interval, aggregate uncertainty score, OOD
p-value, ``review`` and its reason) for new predictions; ``qc explain`` writes Grad-CAM maps of the CNN
predictor, the feature importances and an embedding of the cases.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

from trustseg.core.config import load_config, replace
from trustseg.core.errors import ConfigError
from trustseg.quality.config import QCConfig, predictor_names
from trustseg.quality.explain_run import explain_qc
from trustseg.quality.run import fit_qc, predict_qc
from trustseg.reports.qc_report import write_qc_report


def add_qc(sub: argparse._SubParsersAction, parse_kv) -> None:
    """Add ``qc`` and its three subcommands to the top-level parser."""
    qc = sub.add_parser("qc", help="quality without ground truth: predicted Dice, review flag (trustseg.quality)")
    qsub = qc.add_subparsers(dest="qc_command", metavar="QC_COMMAND", required=True)

    f = qsub.add_parser("fit", help="fit a QC model on predictions with labels (trustseg.quality.run.fit_qc)")
    f.add_argument("--pred", required=True, type=Path, help="prediction folder of cases the model did not train on")
    f.add_argument("--data", required=True, type=Path, help="the dataset with their labels")
    f.add_argument("--out", required=True, type=Path, help="QC model folder to write")
    f.add_argument("--predictor", default="tabular", help="tabular | cnn | both | comma-separated names")
    f.add_argument("--target", default=None, help="dice (default) | hd95")
    f.add_argument("--split", default=None, help="only the predicted cases of this dataset split")
    f.add_argument("--source", default=None, help="validation (default) | cross-validated: how PRED was made")
    f.add_argument("--review-below", "--review-above", dest="threshold", type=float, default=None)
    f.add_argument("--catch", type=float, default=None, help="share of failed cases to flag (default 0.9)")
    f.add_argument("--config", type=Path, default=None, help="a QCConfig YAML/TOML (flags override it)")
    f.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="CNN options, e.g. cnn.epochs=10")
    f.add_argument("--seed", type=int, default=None)
    f.add_argument("--overwrite", action="store_true", help="replace an earlier QC model in --out")
    f.set_defaults(func=lambda a: cmd_fit(a, parse_kv))

    p = qsub.add_parser("predict", help="predict quality and the review flag (trustseg.quality.run.predict_qc)")
    p.add_argument("--pred", required=True, type=Path, help="prediction folder")
    p.add_argument("--model", required=True, type=Path, help="QC model folder (qc fit)")
    p.add_argument("--out", required=True, type=Path, help="the per-case table (qc.csv; qc.json beside it)")
    p.add_argument("--data", type=Path, default=None, help="a dataset with labels: also score the prediction")
    p.add_argument("--images", type=Path, default=None, help="the inputs PRED was predicted from (CNN predictor)")
    p.add_argument("--split", default=None)
    p.add_argument("--review-below", "--review-above", dest="threshold", type=float, default=None)
    p.add_argument("--catch", type=float, default=None)
    p.add_argument("--confidence", type=float, default=None, help="coverage of the interval (default 0.9)")
    p.add_argument("--partial", action="store_true", help="accept an incomplete prediction folder")
    p.set_defaults(func=cmd_predict)

    e = qsub.add_parser("explain", help="Grad-CAM, feature importances, embedding (trustseg.quality.explain_run)")
    e.add_argument("--pred", required=True, type=Path, help="prediction folder")
    e.add_argument("--model", required=True, type=Path, help="QC model folder")
    e.add_argument("--out", required=True, type=Path, help="output folder (PNGs, explain.json, report.html)")
    e.add_argument("--data", type=Path, default=None, help="a dataset with labels: colour by the true quality")
    e.add_argument("--images", type=Path, default=None)
    e.add_argument("--max-cases", type=int, default=12, help="Grad-CAM figures for at most this many cases")
    e.add_argument("--embedding", default="auto", help="auto | umap | pca")
    e.add_argument("--overwrite", action="store_true", help="replace an earlier explanation folder in --out")
    e.set_defaults(func=cmd_explain)


def _config(args: argparse.Namespace, parse_kv) -> QCConfig:
    cfg = load_config(QCConfig, args.config) if args.config else QCConfig()
    changes: dict = {"predictors": predictor_names(args.predictor)}
    for key, value in (("target", args.target), ("source", args.source), ("seed", args.seed)):
        if value is not None:
            changes[key] = value
    if args.threshold is not None:
        changes["review_threshold"] = args.threshold
    if args.catch is not None:
        changes["catch"] = args.catch
    sets = parse_kv(args.set, "--set")
    bad = sorted(k for k in sets if k.partition(".")[0] not in ("cnn", "tabular") or not k.partition(".")[2])
    if bad:
        raise ConfigError(f"--set keys must be cnn.NAME or tabular.NAME, got {bad}")
    nested = {group: dict(getattr(cfg, group)) for group in ("cnn", "tabular")}
    for key, value in sets.items():
        group, _, name = key.partition(".")
        nested[group][name] = value
    return replace(cfg, **changes, **nested)


def cmd_fit(args: argparse.Namespace, parse_kv) -> int:
    cfg = _config(args, parse_kv)
    model = fit_qc(args.pred, args.data, args.out, cfg, split=args.split, overwrite=args.overwrite, progress=True)
    held = model.manifest.get("held_out", {})
    console = Console()
    table = Table(title=f"QC model ({', '.join(cfg.predictors)} -> {cfg.target}), held-out calibration cases")
    keys = ("r2", "pearson", "spearman", "mae", "failure_auroc", "n")
    for key in keys:
        table.add_column(key)
    table.add_row(*(str(held.get(k)) if k == "n" else _num(held.get(k)) for k in keys))
    console.print(table)
    console.print(f"QC model written to [bold]{args.out}[/]")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    res = predict_qc(
        args.pred,
        args.model,
        args.out,
        data=args.data,
        images=args.images,
        split=args.split,
        threshold=args.threshold,
        catch=args.catch,
        confidence=args.confidence,
        partial=args.partial,
    )
    rows, st = res["cases"], res["settings"]
    n_review = sum(bool(r["review"]) for r in rows)
    console = Console()
    console.print(
        f"{len(rows)} cases, {n_review} flagged for review (catch ≥ {st['catch']:.0%} of {st['target']} "
        f"{'<' if st['higher_is_better'] else '>'} {st['review_threshold']:g}); "
        f"written to [bold]{args.out}[/]"
    )
    console.print(f"[dim]{st['assumption']}[/]")
    if st.get("warning"):
        console.print(f"[yellow]note[/]: {st['warning']}")
    if "evaluation" in res:
        ev = res["evaluation"]
        console.print(
            "vs the true quality: "
            + ", ".join(f"{k} {_num(ev.get(k))}" for k in ("r2", "pearson", "spearman", "mae", "failure_auroc"))
        )
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    res = explain_qc(
        args.pred,
        args.model,
        args.out,
        data=args.data,
        images=args.images,
        max_cases=args.max_cases,
        embedding=args.embedding,
        overwrite=args.overwrite,
    )
    report = write_qc_report(args.out, res)
    Console().print(f"explanations written to [bold]{args.out}[/]; open [bold]{report}[/]")
    return 0


def _num(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else "–"
