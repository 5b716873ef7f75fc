"""Run every benchmark and collect their results into benchmarks/RESULTS.md.

Usage (from the repository root, after `make test` or `make demo` created .venv):

    .venv/bin/python benchmarks/run_all.py            # all benchmarks
    .venv/bin/python benchmarks/run_all.py calibration  # only those whose file name contains a word
    .venv/bin/python benchmarks/run_all.py --collect  # only re-assemble RESULTS.md from results/*.md

Each benchmark script writes `benchmarks/results/<name>.md` (and `.json`); this script runs them one after
the other (never in parallel: they time things) and concatenates the markdown files.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["bench_training", "bench_methods", "bench_calibration", "bench_multirater_surface", "bench_quality"]


def collect() -> Path:
    """Assemble RESULTS.md from results/*.md in a fixed order."""
    sys.path.insert(0, str(HERE.parent / "src"))
    from trustseg.core.atomic import atomic_write_text

    parts = [
        "# Benchmark results\n",
        "Written by `benchmarks/run_all.py` from `benchmarks/results/*.md`; each section names the machine and "
        "the command that produced it. Targets come from the issues; ratios compare against peers measured in "
        "the same run.\n",
    ]
    files = sorted((HERE / "results").glob("*.md"), key=lambda p: (_rank(p.stem), p.stem))
    parts += [p.read_text().strip() + "\n" for p in files]
    return atomic_write_text(HERE / "RESULTS.md", "\n".join(parts))


def _rank(stem: str) -> int:
    for i, name in enumerate(ORDER):
        if name.removeprefix("bench_") == stem or stem.startswith(name.removeprefix("bench_")):
            return i
    return len(ORDER)


def main(argv: list[str]) -> int:
    if "--collect" not in argv:
        words = [a for a in argv if not a.startswith("-")]
        scripts = sorted(HERE.glob("bench_*.py"), key=lambda p: (_rank(p.stem.removeprefix("bench_")), p.stem))
        for script in scripts:
            if words and not any(w in script.stem for w in words):
                continue
            print(f"== {script.name}", flush=True)
            rc = subprocess.call([sys.executable, str(script)])
            if rc != 0:
                print(f"{script.name} failed with exit status {rc}", file=sys.stderr)
                return rc
    print(f"wrote {collect()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
