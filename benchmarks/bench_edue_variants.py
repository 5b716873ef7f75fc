"""EDUE's two variants on the VALIDATION split (issue 13): which one should ``edue`` default to?

Trains, with one seed and a tiny budget, the regression-head variant (``edue``: a separate variance output), the
heads-variance variant (``edue-heads``: random-rater deep heads whose variance is guided to the raters'), and the
one-pass baselines (``layer-ensemble``, ``softmax``) on the same data, predicts the validation split (never the
test split: this chooses a default) and reports the pixel-level Pearson / Spearman (per image, averaged) and the
image-level Spearman of each method's maps with the raters' disagreement, plus the majority Dice.

Data: synthetic multi-rater 2D (the same generator settings as ``bench_methods.py``) and QUBIQ brain growth from
``../shared/data`` when present (skipped otherwise).

Usage:
    .venv/bin/python benchmarks/bench_edue_variants.py [--epochs 40] [--skip-qubiq] [--only edue,edue-heads]
        [--qubiq-only edue,edue-heads]
Writes benchmarks/results/edue_variants.md and edue_variants.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import machine  # noqa: E402

WORK = HERE / "_work"
QUBIQ = HERE.parent.parent / "shared" / "data" / "qubiq2020-brain-growth" / "brain-growth"
#: (label, method, params): both EDUE variants, the heads variant with the bottleneck head kept, the baselines.
RUNS = [
    ("edue", "edue", {}),
    ("edue-heads", "edue-heads", {}),
    ("edue-heads-skip0", "edue-heads", {"skip": 0}),
    ("layer-ensemble", "layer-ensemble", {}),
    ("softmax", "softmax", {}),
]
#: The maps reported per method (those its prediction supports).
MAPS = ("predicted_variance", "variance", "entropy", "mi")
SPLIT = "val"


def correlation(data_name: str, data: Path, epochs: int, only: set[str] | None = None) -> list[dict]:
    """Train every run on ``data``, evaluate the validation split, report uncertainty vs rater disagreement."""
    from trustseg.engine.config import MethodConfig, RunConfig, TrainConfig
    from trustseg.engine.predict import predict_folder
    from trustseg.engine.run import train
    from trustseg.evaluation import evaluate_predictions
    from trustseg.evaluation.results import get
    from trustseg.models.config import NetConfig

    rows = []
    for label, name, params in [r for r in RUNS if only is None or r[0] in only]:
        run = WORK / f"edue_{data_name}_{label}"
        pred = WORK / f"edue_{data_name}_{label}_pred_{SPLIT}"
        res_path = WORK / f"edue_{data_name}_{label}_eval_{SPLIT}" / "results.json"
        cfg = RunConfig(
            data=str(data),
            net=NetConfig(params={"channels": (16, 32, 64)}),
            method=MethodConfig(name=name, params=params),
            train=TrainConfig(epochs=epochs, batch_size=8, lr=3e-3, seed=0),
        )
        t0 = time.perf_counter()
        train(cfg, run, resume=(run / "run.json").exists(), progress=False)
        t_train = time.perf_counter() - t0
        predict_folder(run, data, pred, split=SPLIT, progress=False, resume=pred.exists())
        res = evaluate_predictions(pred, data, res_path, split=SPLIT)
        for measure, u in res["uncertainty"].items():
            if measure not in MAPS:
                continue
            rows.append(
                {
                    "data": data_name,
                    "method": label,
                    "measure": measure,
                    "dice_majority": get(res["summary"], ("dice", "majority", "mean"), None),
                    "pixel_pearson": u.get("pixel_pearson_mean"),
                    "pixel_spearman": u.get("pixel_spearman_mean"),
                    "image_spearman": u.get("image_spearman"),
                    "train_s": round(t_train, 1),
                }
            )
        print(label, [(r["measure"], r["pixel_pearson"]) for r in rows if r["method"] == label], flush=True)
    return rows


def _fmt(v) -> str:
    return "–" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--skip-qubiq", action="store_true")
    ap.add_argument("--only", default=None, help="comma-separated run labels (default: every run)")
    ap.add_argument("--qubiq-only", default=None, help="comma-separated run labels on QUBIQ (default: --only)")
    args = ap.parse_args()
    only = None if args.only is None else set(args.only.split(","))
    qubiq_only = only if args.qubiq_only is None else set(args.qubiq_only.split(","))
    torch.set_num_threads(2)
    from trustseg.core.atomic import atomic_write_json, atomic_write_text
    from trustseg.data.synthetic import SynthConfig, make_synthetic_dataset

    synth = WORK / "synth_methods"
    if not (synth / "dataset.json").exists():
        make_synthetic_dataset(synth, SynthConfig(cases=60, raters=4, dims=2, size=64, num_classes=3, seed=1))
    rows = correlation("synthetic", synth, args.epochs, only)
    if QUBIQ.exists() and not args.skip_qubiq:
        from trustseg.data.importers import import_dataset

        qubiq = WORK / "qubiq"
        if not (qubiq / "dataset.json").exists():
            import_dataset("qubiq", QUBIQ, qubiq, progress=False)
        rows += correlation("qubiq", qubiq, args.epochs, qubiq_only)
    res = {"machine": machine.describe(), "split": SPLIT, "epochs": args.epochs, "seed": 0, "rows": rows}
    atomic_write_json(HERE / "results" / "edue_variants.json", res)
    lines = [
        "## EDUE variants (benchmarks/bench_edue_variants.py)",
        "",
        machine.markdown(),
        "",
        f"Uncertainty vs rater disagreement on the **{SPLIT}** split; U-Net (16, 32, 64), {args.epochs} epochs, "
        "batch 8, lr 3e-3, seed 0 (one seed: differences of a few 0.01 are within run-to-run noise). pixel r / ρ = "
        "Pearson / Spearman per image, averaged; image ρ = Spearman across images of the map's mean vs Σ rater "
        "variance. `edue-heads` keeps M = 2 decoder heads (skip 1), `edue-heads-skip0` M = 3 (bottleneck head too).",
        "",
        "| data | method | map | Dice (majority) | pixel r | pixel ρ | image ρ | train (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['data']} | {r['method']} | {r['measure']} | {_fmt(r['dice_majority'])} | "
            f"{_fmt(r['pixel_pearson'])} | {_fmt(r['pixel_spearman'])} | {_fmt(r['image_spearman'])} | "
            f"{r['train_s']} |"
        )
    atomic_write_text(HERE / "results" / "edue_variants.md", "\n".join(lines + [""]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
