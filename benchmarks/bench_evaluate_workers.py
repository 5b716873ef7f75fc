"""``trustseg evaluate --workers N``: the same prediction folder scored with 1 vs 2 worker processes.

N synthetic 3D cases (3 raters, K = 2) are predicted once by a TorchScript 3D convolution (probabilities and
uncertainty maps); then :func:`trustseg.evaluation.evaluate_predictions` scores the folder with ``workers=1``
and ``workers=2`` (spawn processes, each with ``max(1, threads // 2)`` torch threads), best of ``--repeats``
interleaved runs, wall time of the call (worker start-up, the suite, the merge, the write). The per-case rows
of both results files are checked to be equal. The load average before and after is recorded (the machine may
be shared).

    PYTHONPATH=src .venv/bin/python benchmarks/bench_evaluate_workers.py [--cases 8] [--size 64] [--repeats 1]

Writes ``benchmarks/results/evaluate_workers.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "src"), str(HERE)]

from machine import describe, markdown  # noqa: E402
from trustseg.cli.main import main as cli  # noqa: E402
from trustseg.data.case import Case  # noqa: E402
from trustseg.data.dataset import write_dataset  # noqa: E402
from trustseg.evaluation import evaluate_predictions  # noqa: E402
from trustseg.evaluation.results import flatten  # noqa: E402


def max_relative_difference(a: dict, b: dict) -> tuple[float, str]:
    """The largest ``|x - y| / max(|x|, |y|, 1)`` (relative above 1, absolute below) over the numbers of two
    results files (rows, summary and sections; curves element by element; differing keys or non-numbers raise)."""
    skip = ("csv", "csv_sha256", "pred_dir", "per_case")
    fa, fb = (flatten({k: v for k, v in r.items() if k not in skip}) for r in (a, b))
    for i, (ra, rb) in enumerate(zip(a["per_case"], b["per_case"], strict=True)):
        fa.update({f"per_case/{i}/{k}": v for k, v in flatten(ra).items()})
        fb.update({f"per_case/{i}/{k}": v for k, v in flatten(rb).items()})
    assert fa.keys() == fb.keys()
    worst, where = 0.0, ""
    for key in list(fa):  # lists of numbers (curves) compare element by element
        x, y = fa[key], fb[key]
        if isinstance(x, list) and isinstance(y, list) and len(x) == len(y) and x != y:
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in [*x, *y]):
                fa.pop(key), fb.pop(key)
                fa.update({f"{key}/{i}": float(v) for i, v in enumerate(x)})
                fb.update({f"{key}/{i}": float(v) for i, v in enumerate(y)})
    for key, x in fa.items():
        y = fb[key]
        if isinstance(x, float) and isinstance(y, float):
            rel = abs(x - y) / max(abs(x), abs(y), 1.0)
            worst, where = (rel, key) if rel > worst else (worst, where)
        elif x != y and not (isinstance(x, (int, float)) and isinstance(y, (int, float))):
            raise AssertionError(f"{key}: {x!r} vs {y!r}")
        elif x != y:
            rel = abs(x - y) / max(abs(x), abs(y), 1.0)
            worst, where = (rel, key) if rel > worst else (worst, where)
    return worst, where


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads of this process (workers get threads // W): 1 = one core per worker, as on a node "
        "with a worker per core; results go to evaluate_workers_threads<T>.*",
    )
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    stem = "evaluate_workers" + (f"_threads{args.threads}" if args.threads is not None else "")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rng = np.random.default_rng(0)
        s = args.size
        grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s)] * 3, indexing="ij"))
        cases = []
        for i in range(args.cases):
            blob = 0.6 - np.sqrt((grid**2).sum(0)) + 0.05 * rng.normal(size=(s, s, s))
            image = blob[None].astype(np.float32)
            labels = np.stack([(blob > t).astype(np.int64) for t in (-0.03, 0.0, 0.03)])
            cases.append(Case(f"case{i:03d}", image, labels))
        data = write_dataset(cases, tmp / "data", ["background", "organ"], ext=".npy")
        torch.manual_seed(0)
        torch.jit.script(nn.Conv3d(1, 2, 3, padding=1).eval()).save(str(tmp / "model.pt"))
        model = f"torchscript:{tmp / 'model.pt'}?classes=background,organ&spatial_dims=3"
        pred = tmp / "pred"
        assert cli(["predict", "--model", model, "--input", str(data), "--out", str(pred), "--no-progress"]) == 0
        times: dict[int, list[float]] = {1: [], 2: []}
        for r in range(args.repeats):
            for workers in (1, 2) if r % 2 == 0 else (2, 1):
                t0 = time.perf_counter()
                evaluate_predictions(pred, data, tmp / f"res{workers}" / "results.json", workers=workers)
                times[workers].append(time.perf_counter() - t0)
        one = json.loads((tmp / "res1" / "results.json").read_text())
        two = json.loads((tmp / "res2" / "results.json").read_text())
        same = one["per_case"] == two["per_case"] and one["cases"] == two["cases"]
        diff, where = max_relative_difference(one, two)
    load_after = os.getloadavg()
    best = {w: min(t) for w, t in times.items()}
    ratio = best[1] / best[2]
    record = {
        "machine": describe(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "cases": args.cases,
        "size": [s, s, s],
        "raters": 3,
        "classes": 2,
        "seconds": times,
        "best_seconds": best,
        "speedup_2_vs_1": ratio,
        "same_rows": same,
        "max_relative_difference": diff,
        "max_relative_difference_at": where,
    }
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    record["threads"] = torch.get_num_threads()
    (results / f"{stem}.json").write_text(json.dumps(record, indent=2))
    md = [
        "## evaluate --workers (benchmarks/bench_evaluate_workers.py"
        + (f" --threads {args.threads}" if args.threads is not None else "")
        + ")\n",
        markdown() + "\n",
        f"Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; after: "
        f"{', '.join(f'{x:.2f}' for x in load_after)}.\n",
        f"`evaluate_predictions(..., workers=W)` on {args.cases} synthetic 3D cases ({s}³, 3 raters, K = 2, the "
        f"full suite, probabilities and uncertainty maps of a 3D convolution); wall time of the call (spawn start-up "
        f"of the workers included), best of {args.repeats} interleaved run(s); {torch.get_num_threads()} torch "
        f"thread(s) in this process, each of W workers gets max(1, threads // W).\n",
        "| workers | time (s) | s/case |",
        "|---|---|---|",
        *(f"| {w} | {best[w]:.2f} | {best[w] / args.cases:.2f} |" for w in (1, 2)),
        "",
        f"Speed-up 2 vs 1 workers: **{ratio:.2f}×**; per-case rows of the two results files "
        f"{'identical' if same else 'not bit-identical'}, largest difference of any number "
        f"(relative above 1, absolute below) {diff:.1e} "
        f"(at `{where}`) "
        "(torch reductions depend on the thread count: a worker runs with fewer threads). Each worker runs with "
        "half the torch threads, so on a free 2-core "
        "machine the gain is what process parallelism adds over torch's own intra-op threads (the numpy parts of "
        "the suite are single-threaded); each worker also pays a spawn start-up (Python, torch and trustseg "
        "imports, a few seconds of CPU), which matters for small cohorts. On a shared machine the ratio mostly "
        "says how many cores were free (see the load average).\n",
    ]
    (results / f"{stem}.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
