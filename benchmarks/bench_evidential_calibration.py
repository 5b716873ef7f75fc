"""Why are the evidential methods' probabilities badly calibrated (issue 13)?

Trains small U-Nets on synthetic 2D multi-rater data (``trustseg.data.synthetic``, 32², K = 3, 4 raters; 48 train,
8 validation, 8 test cases), one seed, and records on the test cases, every 10 epochs:

* top-label ECE (against the raters' soft label ȳ) and foreground ECE (p_fg = 1 − p_0 against 1 − ȳ_0),
  15 bins (``trustseg.metrics.calibration``), NLL, mean top-label confidence and accuracy, median S = Σ α;
* the same after post-hoc temperature scaling fitted on the validation cases
  (``fit_method_temperature``: ``softmax(z / T)`` for softmax, ``softmax(ln α / T)`` for evidential);

for softmax (the reference) and evidential with the KL weight / annealing varied (w_kl = 0, 1 annealed over 20
epochs (default), 1 from the start, 10 annealed), the L_ACE variants (digamma, log, mse) and the evidence
activation (softplus, exp). Everything else as the method's defaults; AdamW lr 3e-3, cosine decay, batch 8.

Usage:
    PYTHONPATH=src .venv/bin/python benchmarks/bench_evidential_calibration.py [--epochs 40]
Writes benchmarks/results/evidential_calibration.md and .json (about 2 minutes on one CPU thread).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import machine  # noqa: E402
from trustseg.data.synthetic import SynthConfig, generate_case  # noqa: E402
from trustseg.methods import Batch, TrainContext, build_method, fit_method_temperature  # noqa: E402
from trustseg.metrics.calibration import calibration_metrics, ece_foreground  # noqa: E402
from trustseg.models.config import NetConfig  # noqa: E402

K, N_TRAIN, N_VAL, N_TEST, BATCH = 3, 48, 8, 8, 8
NET = NetConfig(params={"channels": (8, 16, 32), "norm": "instance"})
#: (label, method, params)
RUNS: list[tuple[str, str, dict[str, Any]]] = [
    ("softmax", "softmax", {}),
    ("edl default (w_kl=1, anneal 20)", "evidential", {}),
    ("edl w_kl=0", "evidential", {"w_kl": 0.0}),
    ("edl w_kl=1, anneal 0", "evidential", {"kl_anneal_epochs": 0}),
    ("edl w_kl=10, anneal 20", "evidential", {"w_kl": 10.0}),
    ("edl log", "evidential", {"loss_variant": "log"}),
    ("edl mse", "evidential", {"loss_variant": "mse"}),
    ("edl exp activation", "evidential", {"activation": "exp"}),
]


def _stack(cases: list) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(np.stack([c.image for c in cases])), torch.tensor(np.stack([c.labels for c in cases]))


def _scores(probs: torch.Tensor, batch: Batch) -> dict[str, float]:
    """Calibration of ``probs`` ``(B, K, H, W)`` against the batch's soft label."""
    y = batch.soft()
    r = calibration_metrics(probs, y, batched=True, classes=False)
    fg = ece_foreground((1 - probs[:, 0]).clamp(0, 1), (1 - y[:, 0]).clamp(0, 1))
    acc = y.gather(1, probs.argmax(1, keepdim=True)).mean()
    return {
        "ece_top": round(r["ece_toplabel"], 4),
        "ece_fg": round(fg, 4),
        "nll": round(r["nll"], 4),
        "conf": round(float(probs.max(1).values.mean()), 4),
        "acc": round(float(acc), 4),
    }


def train_and_score(label: str, name: str, params: dict, data: dict, epochs: int, seed: int) -> list[dict]:
    torch.manual_seed(seed)
    method = build_method(name, NET, 2, 1, K, params)
    model = method.build_model()
    xtr, ytr = data["train"]
    steps_per_epoch = N_TRAIN // BATCH
    opt, sched = method.configure_optimizer(model, 3e-3, 1e-4, epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    val, test = Batch(*data["val"], K), Batch(*data["test"], K)
    rows, step = [], 0
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(N_TRAIN, generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * BATCH : (i + 1) * BATCH]
            loss, _ = method.loss(model, Batch(xtr[idx], ytr[idx], K), TrainContext(epoch, epochs, step, gen))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        if (epoch + 1) % 10 and epoch + 1 != epochs:
            continue
        model.eval()
        with torch.no_grad():
            method.temperature = 1.0
            pred = method.predict([model], test.image)
            row: dict[str, Any] = {"run": label, "method": name, "params": params, "epoch": epoch + 1}
            row.update(_scores(pred.probs[0], test))
            row["median_S"] = None if pred.alpha is None else round(float(pred.alpha.sum(1).median()), 2)
            t = fit_method_temperature(method, [model], [val])
            row["T"] = round(t, 4)
            row["with_T"] = _scores(method.predict([model], test.image).probs[0], test)
            method.temperature = 1.0
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def write_results(rows: list[dict], meta: dict) -> None:
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "evidential_calibration.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [
        "# Evidential calibration (issue 13)",
        "",
        f"Generated by `benchmarks/bench_evidential_calibration.py` in {meta['total_s']} s. "
        f"Synthetic 2D, 32², K = 3, 4 raters, {N_TRAIN}/{N_VAL}/{N_TEST} train/val/test cases, U-Net (8, 16, 32), "
        f"AdamW 3e-3 cosine, batch {BATCH}, seed {meta['seed']}. ECE: 15 bins against the raters' soft label; "
        "`fg` = foreground ECE of 1 − p_background. `T`: temperature fitted on the validation cases "
        "(evidential: softmax(ln α / T)); `+T` columns: the test scores with it.",
        "",
        meta["machine_md"],
        "",
        "| run | epoch | ECE top | ECE fg | NLL | conf | acc | median S | T | ECE top +T | ECE fg +T | NLL +T |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        t = r["with_T"]
        s = "" if r["median_S"] is None else r["median_S"]
        lines.append(
            f"| {r['run']} | {r['epoch']} | {r['ece_top']:.3f} | {r['ece_fg']:.3f} | {r['nll']:.3f} | "
            f"{r['conf']:.3f} | {r['acc']:.3f} | {s} | {r['T']:.3f} | {t['ece_top']:.3f} | {t['ece_fg']:.3f} | "
            f"{t['nll']:.3f} |"
        )
    (out / "evidential_calibration.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    n = N_TRAIN + N_VAL + N_TEST
    cfg = SynthConfig(cases=n, raters=4, size=32, num_classes=K, seed=args.seed)
    cases = [generate_case(i, cfg) for i in range(n)]
    data = {
        "train": _stack(cases[:N_TRAIN]),
        "val": _stack(cases[N_TRAIN : N_TRAIN + N_VAL]),
        "test": _stack(cases[N_TRAIN + N_VAL :]),
    }
    rows = []
    for label, name, params in RUNS:
        rows += train_and_score(label, name, params, data, args.epochs, args.seed)
    meta = {"epochs": args.epochs, "seed": args.seed, "total_s": round(time.perf_counter() - t0, 1)}
    meta["machine"], meta["machine_md"] = machine.describe(), machine.markdown()
    write_results(rows, meta)


if __name__ == "__main__":
    main()
