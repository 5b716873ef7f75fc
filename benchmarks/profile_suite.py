"""Quick per-component cost of the evaluation suite on one synthetic case (a development aid; the benchmark with
peers and results files is ``bench_evaluate_cost.py``).

Usage (repository root)::

    .venv/bin/python benchmarks/profile_suite.py --size 96 96 96            # smooth case, every component
    .venv/bin/python benchmarks/profile_suite.py --size 128 128 128 --noisy --exact
    .venv/bin/python benchmarks/profile_suite.py --components map_quality --profile

Each component runs alone on a fresh suite (so the shared context quantities it needs are counted in its time),
then the whole suite once; times in seconds and µs per voxel.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from evaluate_case import build  # noqa: E402
from trustseg.evaluation.component import SUITE  # noqa: E402
from trustseg.evaluation.context import SuiteConfig  # noqa: E402
from trustseg.evaluation.suite import EvaluationSuite  # noqa: E402


def add(suite: EvaluationSuite, case: dict, case_id: str = "c") -> None:
    suite.add_case(
        case_id,
        case["probs"],
        case["labels"],
        spacing=(1.0, 1.0, 1.0),
        maps=case["maps"],
        samples=case["samples"],
        image=case["image"],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, nargs=3, default=(96, 96, 96))
    ap.add_argument("--noisy", action="store_true", help="the salt-and-pepper case instead of the smooth one")
    ap.add_argument("--exact", action="store_true", help="SuiteConfig(exact=True)")
    ap.add_argument("--components", default=None, help="comma-separated (default: every case component)")
    ap.add_argument("--profile", action="store_true", help="cProfile the whole suite's add_case")
    args = ap.parse_args()
    shape = tuple(args.size)
    case = build(shape, smooth=not args.noisy)
    n = shape[0] * shape[1] * shape[2]
    names = (
        args.components.split(",") if args.components else [m for m in SUITE.names() if SUITE.meta(m)["kind"] == "case"]
    )
    classes = ["background", "a", "b"]
    add(EvaluationSuite(classes, 3, SuiteConfig(exact=args.exact)), build((8, 8, 8), seed=1), "warmup")
    for name in names:
        suite = EvaluationSuite(classes, 3, SuiteConfig(components=(name,), exact=args.exact))
        t0 = time.perf_counter()
        add(suite, case)
        dt = time.perf_counter() - t0
        print(f"{name:22s} {dt:8.3f} s  {dt / n * 1e6:7.3f} µs/voxel")
    suite = EvaluationSuite(classes, 3, SuiteConfig(exact=args.exact))
    t0 = time.perf_counter()
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(add, suite, case)
    else:
        add(suite, case)
    suite.result()
    dt = time.perf_counter() - t0
    print(f"{'whole suite':22s} {dt:8.3f} s  {dt / n * 1e6:7.3f} µs/voxel")
    if args.profile:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)


if __name__ == "__main__":
    main()
