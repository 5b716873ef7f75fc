"""Cost of the whole evaluation suite per case against MONAI's basic metrics (issue 14).

Usage (repository root)::

    .venv/bin/python benchmarks/bench_evaluate_cost.py            # 96³ and 256³ (about 10 min on 2 cores)
    .venv/bin/python benchmarks/bench_evaluate_cost.py --full     # also one 512×512×300 CT-size case
    .venv/bin/python benchmarks/bench_evaluate_cost.py --sizes 64 --no-write   # quick check, nothing written

The case is ``benchmarks/evaluate_case.py``'s smooth synthetic one (K = 3 classes, R = 3 raters, three maps
``entropy``, ``confidence`` and ``variance``, M = 2 samples, an image). Every measurement runs in a fresh
subprocess (imports and a 32³ warm-up case twice first, so lazy imports are not counted):

* ``trustseg`` — ``EvaluationSuite.add_case`` + ``result`` with every component, the default streaming path;
  peak memory = the growth of ``ru_maxrss`` during it, as a multiple of the case's float32 probabilities
  (``K × voxels × 4`` bytes; target ≤ 3×). Then, in the same process, a per-component breakdown on a fresh
  context: ``context`` = the shared quantities (hard map, majority vote, rater disagreement, error mask, oriented
  maps), then each component's ``per_case`` + ``update`` (µs per voxel, so the next bottleneck is visible);
* ``trustseg exact`` — the same with ``SuiteConfig(exact=True)`` (the sort-based statistics), and the largest
  difference of any per-case mean between the two paths;
* ``MONAI`` — the majority vote (trustseg's, the same for both), one-hot encoding, ``compute_dice``,
  ``compute_hausdorff_distance(percentile=95)``, ``compute_average_surface_distance(symmetric=True)``,
  ``compute_surface_dice(class_thresholds=[2, 2])`` and ``CalibrationErrorMetric(num_bins=15)`` against the
  majority vote (the issue's peer, what a MONAI user would run).

Targets: the trustseg suite ≤ 1.5× MONAI at 96³ and 256³; a 512×512×300 case in ≤ 30 s with peak memory ≤ 3×.
Results: ``benchmarks/results/evaluate_cost.{md,json}`` (``evaluate_cost_noisy.*`` with ``--noisy``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

OUT = HERE / "results" / "evaluate_cost"
CLASSES = ["background", "liver", "spleen"]
RATERS = 3
TARGET_RATIO, TARGET_CT_S, TARGET_MEMORY = 1.5, 30.0, 3.0


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _inputs(case: dict) -> dict:
    return {
        "spacing": (1.0, 1.0, 1.0),
        "maps": case["maps"],
        "samples": case["samples"],
        "image": case["image"],
    }


def child_trustseg(shape: tuple[int, int, int], exact: bool, noisy: bool) -> dict:
    """The whole suite on one case, then the per-component breakdown (module docstring)."""
    from evaluate_case import build
    from trustseg.evaluation.context import SuiteConfig
    from trustseg.evaluation.results import flatten
    from trustseg.evaluation.suite import EvaluationSuite

    cfg = SuiteConfig(exact=exact)
    warm = build((32, 32, 32), seed=1)
    for _ in range(2):  # lazy imports, thread pools, first-call set-up
        EvaluationSuite(CLASSES, RATERS, cfg).add_case("warmup", warm["probs"], warm["labels"], **_inputs(warm))
    case = build(shape, smooth=not noisy)
    base = _rss()
    t0 = time.perf_counter()
    suite = EvaluationSuite(CLASSES, RATERS, cfg)
    suite.add_case("c", case["probs"], case["labels"], **_inputs(case))
    result = suite.result()
    wall = time.perf_counter() - t0
    extra = max(0, _rss() - base)
    # breakdown on a fresh suite and context
    suite = EvaluationSuite(CLASSES, RATERS, cfg)
    t0 = time.perf_counter()
    ctx = suite.context("c", case["probs"], case["labels"], **_inputs(case))
    for name in ("hard", "majority", "disagreement", "error_mask", "maps"):
        getattr(ctx, name)
    parts = {"context": time.perf_counter() - t0}
    for comp in suite.components:
        if not comp.applies(ctx):
            continue
        t0 = time.perf_counter()
        comp.per_case(ctx)
        state = suite.states[comp.name]
        if state is not None:
            comp.update(state, ctx)
        parts[comp.name] = time.perf_counter() - t0
    means = {k: v for k, v in flatten(result["mean"]).items() if isinstance(v, float)}
    return {
        "wall_s": wall,
        "extra_bytes": extra,
        "probs_bytes": case["probs"].numel() * 4,
        "voxels": int(case["labels"][0].numel()),
        "parts_s": parts,
        "means": means,
    }


def child_monai(shape: tuple[int, int, int], noisy: bool) -> dict:
    """MONAI's Dice, HD95, ASSD, NSD and calibration error against the majority vote (module docstring)."""
    import torch
    from monai.metrics import (
        CalibrationErrorMetric,
        compute_average_surface_distance,
        compute_dice,
        compute_hausdorff_distance,
        compute_surface_dice,
    )

    from evaluate_case import build
    from trustseg.data.targets import majority_vote

    def run(case: dict) -> dict[str, float]:
        times: dict[str, float] = {}
        t = time.perf_counter()
        k = len(CLASSES)
        majority = majority_vote(case["labels"], k)
        y = torch.nn.functional.one_hot(majority, k).movedim(-1, 0)[None].float()
        y_pred = torch.nn.functional.one_hot(case["probs"].argmax(0), k).movedim(-1, 0)[None].float()
        times["majority + one-hot"] = time.perf_counter() - t
        steps = {
            "dice": lambda: compute_dice(y_pred, y, include_background=False),
            "hd95": lambda: compute_hausdorff_distance(y_pred, y, include_background=False, percentile=95),
            "assd": lambda: compute_average_surface_distance(y_pred, y, include_background=False, symmetric=True),
            "nsd": lambda: compute_surface_dice(y_pred, y, class_thresholds=[2.0] * (k - 1), include_background=False),
        }
        for name, fn in steps.items():
            t = time.perf_counter()
            fn()
            times[name] = time.perf_counter() - t
        t = time.perf_counter()
        cal = CalibrationErrorMetric(num_bins=15, include_background=False)
        cal(case["probs"][None], y)
        cal.aggregate()
        times["ece"] = time.perf_counter() - t
        return times

    import warnings

    warnings.filterwarnings("ignore")
    warm = build((32, 32, 32), seed=1)
    run(warm)
    run(warm)
    case = build(shape, smooth=not noisy)
    t0 = time.perf_counter()
    parts = run(case)
    return {"wall_s": time.perf_counter() - t0, "parts_s": parts}


def measure(kind: str, shape: tuple[int, int, int], noisy: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--sizes", "x".join(map(str, shape))]
    if noisy:
        cmd.append("--noisy")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} {shape} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _shape(text: str) -> tuple[int, int, int]:
    parts = [int(x) for x in text.lower().split("x")]
    return (parts[0],) * 3 if len(parts) == 1 else (parts[0], parts[1], parts[2])


def run_size(shape: tuple[int, int, int], noisy: bool, monai: bool, exact: bool) -> dict:
    label = "×".join(map(str, shape))
    print(f"{label}: trustseg", flush=True)
    out: dict = {"shape": list(shape), "noisy": noisy, "trustseg": measure("trustseg", shape, noisy)}
    if exact:
        print(f"{label}: trustseg exact", flush=True)
        out["exact"] = measure("exact", shape, noisy)
        a, b = out["trustseg"]["means"], out["exact"]["means"]
        diffs = {k: abs(a[k] - b[k]) for k in a.keys() & b.keys() if a[k] == a[k] and b[k] == b[k]}
        worst = max(diffs, key=lambda k: diffs[k]) if diffs else None
        out["max_mean_difference"] = {"key": worst, "value": diffs.get(worst, 0.0) if worst else 0.0}
        out["exact"].pop("means")
    out["trustseg"].pop("means")
    if monai:
        print(f"{label}: MONAI", flush=True)
        out["monai"] = measure("monai", shape, noisy)
        out["ratio_vs_monai"] = out["trustseg"]["wall_s"] / out["monai"]["wall_s"]
    return out


def load_average() -> list[str]:
    return [f"{x:.2f}" for x in os.getloadavg()]


def table(results: dict) -> str:
    lines = [
        "## Evaluation cost per case: the whole suite vs MONAI (benchmarks/bench_evaluate_cost.py)"
        + (", noisy case" if results["noisy"] else ""),
        "",
        results["machine"],
        f"Load average {results['load_start']} at the start, {results['load_end']} at the end (on 2 cores, above "
        "~1 means something else was running). Command: `" + results["command"] + "`.",
        "",
        "Case: `benchmarks/evaluate_case.py` ("
        + ("noisy: salt-and-pepper errors everywhere, the surface worst case" if results["noisy"] else "smooth")
        + " synthetic, K = 3, R = 3, maps entropy/confidence/variance, "
        "M = 2 samples, an image). trustseg = `EvaluationSuite.add_case` + `result`, every component; MONAI = "
        "majority vote + one-hot + Dice + HD95 + ASSD + NSD + calibration error against the majority. Each in a "
        "fresh process. Peak = growth of `ru_maxrss`, × the case's float32 probabilities.",
        "",
        "| case | trustseg (s) | µs/voxel | peak × probs | exact path (s) | MONAI (s) | trustseg / MONAI | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["sizes"]:
        t = r["trustseg"]
        n = t["voxels"]
        label = "×".join(map(str, r["shape"])) + (" noisy" if r["noisy"] else "")
        ex = f"{r['exact']['wall_s']:.2f}" if "exact" in r else "–"
        mo = f"{r['monai']['wall_s']:.2f}" if "monai" in r else "–"
        ratio = f"**{r['ratio_vs_monai']:.2f}**" if "ratio_vs_monai" in r else "–"
        target = f"≤ {TARGET_RATIO}×" if "monai" in r else f"≤ {TARGET_CT_S:.0f} s, ≤ {TARGET_MEMORY}× memory"
        lines.append(
            f"| {label} | {t['wall_s']:.2f} | {t['wall_s'] / n * 1e6:.3f} | {t['extra_bytes'] / t['probs_bytes']:.2f} "
            f"| {ex} | {mo} | {ratio} | {target} |"
        )
    lines += ["", "Per component (µs per voxel, the trustseg default path; `context` = the shared quantities):", ""]
    names: list[str] = []
    for r in results["sizes"]:
        names += [k for k in r["trustseg"]["parts_s"] if k not in names]
    head = [("×".join(map(str, r["shape"])) + (" noisy" if r["noisy"] else "")) for r in results["sizes"]]
    lines += ["| component | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for name in names:
        cells = []
        for r in results["sizes"]:
            s = r["trustseg"]["parts_s"].get(name)
            cells.append("–" if s is None else f"{s / r['trustseg']['voxels'] * 1e6:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    monai_rows = [r for r in results["sizes"] if "monai" in r]
    if monai_rows:
        lines += ["", "MONAI's parts (s):", ""]
        keys = list(monai_rows[0]["monai"]["parts_s"])
        lines += ["| part | " + " | ".join("×".join(map(str, r["shape"])) for r in monai_rows) + " |"]
        lines += ["|---|" + "---|" * len(monai_rows)]
        for k in keys:
            lines.append(f"| {k} | " + " | ".join(f"{r['monai']['parts_s'][k]:.2f}" for r in monai_rows) + " |")
    diffs = [r for r in results["sizes"] if "max_mean_difference" in r]
    if diffs:
        lines += ["", "Largest difference of a per-case value between the streaming and the exact path:", ""]
        for r in diffs:
            d = r["max_mean_difference"]
            lines.append(f"- {'×'.join(map(str, r['shape']))}: {d['value']:.2e} (`{d['key']}`)")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="*", default=["96", "256"], help="cubes (96) or DxHxW (300x512x512)")
    ap.add_argument("--full", action="store_true", help="also the 300×512×512 CT-size case (trustseg only)")
    ap.add_argument("--noisy", action="store_true", help="the salt-and-pepper case instead of the smooth one")
    ap.add_argument("--no-exact", action="store_true", help="skip the exact path")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child is not None:
        shape = _shape(args.sizes[0])
        got = child_monai(shape, args.noisy) if args.child == "monai" else None
        if got is None:
            got = child_trustseg(shape, args.child == "exact", args.noisy)
        print(json.dumps(got))
        return 0
    from machine import describe, markdown

    results: dict = {
        "machine": markdown(),
        "machine_info": describe(),
        "command": "python benchmarks/bench_evaluate_cost.py " + " ".join(argv),
        "noisy": args.noisy,
        "load_start": load_average(),
        "sizes": [],
    }
    for text in args.sizes:
        results["sizes"].append(run_size(_shape(text), args.noisy, monai=True, exact=not args.no_exact))
    if args.full:
        results["sizes"].append(run_size((300, 512, 512), args.noisy, monai=False, exact=False))
    results["load_end"] = load_average()
    md = table(results)
    print(md)
    if not args.no_write:
        from trustseg.core.atomic import atomic_write_json, atomic_write_text

        out = OUT.with_name(OUT.name + ("_noisy" if args.noisy else ""))
        atomic_write_json(out.with_suffix(".json"), results)
        atomic_write_text(out.with_suffix(".md"), md)
        print(f"wrote {out}.md/.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
