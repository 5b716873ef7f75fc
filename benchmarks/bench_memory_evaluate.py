"""Peak memory of ``trustseg evaluate`` for one 3D case, per suite component and for the whole suite (issue 11, F7).

Usage (repository root):

    .venv/bin/python benchmarks/bench_memory_evaluate.py                   # 160×160×96 (a few minutes, 2 cores)
    .venv/bin/python benchmarks/bench_memory_evaluate.py --size 64 64 48   # quick check
    .venv/bin/python benchmarks/bench_memory_evaluate.py --full            # also the audit's 512×512×300
    .venv/bin/python benchmarks/bench_memory_evaluate.py --label before    # store as the "before" numbers

Every measurement runs in a fresh subprocess, which

1. imports trustseg and scores a tiny warm-up case (so lazy imports and allocator set-up are not counted);
2. builds one seeded synthetic case slice by slice (no full-size temporaries): probabilities ``(K=3, D, H, W)``
   float32 (softmax of a noisy one-hot of a sphere pair), ``R = 3`` rater maps ``(R, D, H, W)`` int64 (as the
   dataset reader gives them; spheres with rater-dependent radii), two uncertainty maps (``entropy``,
   ``confidence``) and a ``variance`` map, float32, ``M = 2`` samples ``(M, K, D, H, W)`` float32 and a
   ``(1, D, H, W)`` float32 image;
3. reads the baseline ``ru_maxrss`` (peak resident memory so far), runs (a) one suite component alone
   (``SuiteConfig(components=(name,))``, its ``add_case``) or (b) the whole suite (``add_case`` and ``result``),
   and reads ``ru_maxrss`` again.

Extra peak = the second reading minus the baseline. It is reported in MB and as a multiple of the case's float32
probabilities ``K × voxels × 4`` bytes (target ≤ 3×). Results go to ``benchmarks/results/memory_evaluate.{md,json}``;
the numbers of a run with ``--label before`` (the unmodified code) are kept there and shown beside ``after``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

K, R, M = 3, 3, 2
TARGET = 3.0  # × the case's float32 probabilities
OUT = HERE / "results" / "memory_evaluate"


def build(shape: tuple[int, int, int], seed: int = 0) -> dict:
    """The seeded synthetic case, built one slice at a time (the module docstring lists it)."""
    import torch

    d, h, w = shape
    g = torch.Generator().manual_seed(seed)
    probs = torch.empty(K, d, h, w)
    labels = torch.empty(R, d, h, w, dtype=torch.long)
    samples = torch.empty(M, K, d, h, w)
    image = torch.empty(1, d, h, w)
    maps = {name: torch.empty(d, h, w) for name in ("entropy", "confidence", "variance")}
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    centres = [(0.5, 0.4, 0.4, 0.25), (0.5, 0.65, 0.6, 0.15)]  # (z, y, x, radius) as fractions of the shape
    for z in range(d):
        seg = torch.zeros(h, w, dtype=torch.long)
        rater = torch.zeros(R, h, w, dtype=torch.long)
        for c, (cz, cy, cx, rad) in enumerate(centres, start=1):
            dist = (((z / d - cz) ** 2) + ((yy / h - cy) ** 2) + ((xx / w - cx) ** 2)) ** 0.5
            seg[dist < rad] = c
            for r in range(R):
                rater[r][dist < rad * (0.9 + 0.1 * r)] = c
        logits = 3.0 * torch.nn.functional.one_hot(seg, K).movedim(-1, 0).float()
        logits += 1.5 * torch.randn(K, h, w, generator=g)
        p = torch.softmax(logits, 0)
        probs[:, z] = p
        labels[:, z] = rater
        for m in range(M):
            samples[m, :, z] = torch.softmax(logits + 0.5 * torch.randn(K, h, w, generator=g), 0)
        image[0, z] = seg.float() + 0.3 * torch.randn(h, w, generator=g)
        maps["entropy"][z] = -(p * p.clamp_min(1e-12).log()).sum(0)
        maps["confidence"][z] = p.max(0).values
        maps["variance"][z] = samples[:, :, z].var(0, unbiased=False).sum(0)
    return {"probs": probs, "labels": labels, "samples": samples, "image": image, "maps": maps}


def _suite(components: tuple[str, ...] | None):
    from trustseg.evaluation.context import SuiteConfig
    from trustseg.evaluation.suite import EvaluationSuite

    return EvaluationSuite(["background", "a", "b"], R, SuiteConfig(components=components))


def _add(suite, case: dict, case_id: str = "c") -> None:
    suite.add_case(
        case_id,
        case["probs"],
        case["labels"],
        spacing=(1.0, 1.0, 1.0),
        maps=case["maps"],
        samples=case["samples"],
        image=case["image"],
    )


def child(component: str, shape: tuple[int, int, int]) -> dict:
    """One measurement in this (fresh) process: ``component`` alone, or ``suite`` (all of them + result)."""
    _add(_suite(None), build((8, 8, 8), seed=1), "warmup")  # imports, first-call set-up
    case = build(shape)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    suite = _suite(None if component == "suite" else (component,))
    _add(suite, case)
    if component == "suite":
        suite.result()
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"component": component, "baseline_bytes": base, "extra_bytes": max(0, peak - base), "wall_s": wall}


def components() -> list[str]:
    import trustseg.evaluation.components  # noqa: F401
    from trustseg.evaluation.component import SUITE

    return [n for n in SUITE.names() if SUITE.meta(n)["kind"] == "case" and "qc" not in SUITE.meta(n)["requires"]]


def measure(component: str, shape: tuple[int, int, int]) -> dict:
    cmd = [sys.executable, __file__, "--child", component, "--size", *map(str, shape)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"component": component, "error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: dict) -> str:
    lines = []
    for size, runs in results["sizes"].items():
        probs_mb = runs["probs_bytes"] / 1e6
        lines += [
            "",
            f"**{size}** (K = {K}, R = {R}, M = {M}; float32 probabilities {probs_mb:.1f} MB):",
            "",
            "| component | before: extra peak (MB) | before: × probs | after: extra peak (MB) | after: × probs "
            "| after: time (s) | ≤ 3× |",
            "|---|---|---|---|---|---|---|",
        ]
        names = list(dict.fromkeys([*runs.get("before", {}), *runs.get("after", {})]))
        for name in names:
            cells = []
            for label in ("before", "after"):
                r = runs.get(label, {}).get(name)
                if r is None or "error" in r:
                    cells += ["–", "–" if r is None else f"error: {r['error'][0][:60]}"]
                else:
                    cells += [f"{r['extra_bytes'] / 1e6:.1f}", f"{r['extra_bytes'] / runs['probs_bytes']:.2f}"]
            a = runs.get("after", {}).get(name)
            ok = (
                "–"
                if a is None or "error" in a
                else ("yes" if a["extra_bytes"] <= TARGET * runs["probs_bytes"] else "no")
            )
            wall = "–" if a is None or "error" in a else f"{a['wall_s']:.1f}"
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {wall} | {ok} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, nargs=3, default=[160, 160, 96], metavar=("H", "W", "D"))
    ap.add_argument("--full", action="store_true", help="also measure the audit's 512×512×300 volume")
    ap.add_argument("--label", choices=("before", "after"), default="after")
    ap.add_argument("--only", nargs="*", help="measure only these components (and 'suite')")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    h, w, d = args.size
    if args.child:
        print(json.dumps(child(args.child, (d, h, w))))
        return
    import machine

    sizes = [(h, w, d)] + ([(512, 512, 300)] if args.full else [])
    prev = json.loads(OUT.with_suffix(".json").read_text()) if OUT.with_suffix(".json").exists() else {}
    results = {"machine": machine.describe(), "target_x_probs": TARGET, "sizes": prev.get("sizes", {})}
    names = args.only or [*components(), "suite"]
    for hh, ww, dd in sizes:
        key = f"{hh}×{ww}×{dd}"
        runs = results["sizes"].setdefault(key, {})
        runs["probs_bytes"] = K * hh * ww * dd * 4
        got = runs.setdefault(args.label, {})
        for name in names:
            r = measure(name, (hh, ww, dd))
            got[name] = r
            print(key, args.label, json.dumps(r), flush=True)
    OUT.parent.mkdir(exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(results, indent=1))
    md = [
        "# Evaluate memory per case (benchmarks/bench_memory_evaluate.py)",
        "",
        machine.markdown(),
        "",
        "Extra peak RSS of one 3D case (`ru_maxrss` after minus before the work, in a fresh process per row; inputs "
        "built beforehand and not counted). Target (issue 11, F7): every component and the whole suite ≤ 3× the "
        "case's float32 probabilities. `suite` = all components' `add_case` plus `result()`.",
        table(results),
        "",
    ]
    OUT.with_suffix(".md").write_text("\n".join(md))


if __name__ == "__main__":
    main()
