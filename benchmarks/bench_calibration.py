"""Calibration at 256³: trustseg vs MONAI's CalibrationErrorMetric vs torchmetrics' calibration error.

Usage (repository root):

    .venv/bin/python benchmarks/bench_calibration.py            # full size, 256³ (about 6–8 minutes)
    .venv/bin/python benchmarks/bench_calibration.py --size 64  # quick check

Two cases on the same seeded inputs: binary (a foreground probability map, float32, and uint8 labels) and
4-class (float32 (4, D, H, W) softmax probabilities and uint8 labels). Every implementation runs in its own
subprocess, which builds the inputs without temporaries (chunk by chunk), reads ``ru_maxrss``, runs the metric
``--repeats`` times (the best wall time is kept) and reports its values. A baseline subprocess only builds the
inputs and imports the libraries; peak extra memory = implementation's peak RSS − baseline's peak RSS.

* trustseg computes, in one streaming pass, ECE + NLL + Brier: for the binary case the foreground-probability
  ECE (the convention both peers use for a single channel), for the 4-class case the top-label ECE
  (torchmetrics' convention) and the class-wise ECE (MONAI's), so it does both peers' work at once.
* trustseg runs its compiled kernel (``backend="kernel"``: the run fails rather than time the fallback when the
  kernel is not built); ``trustseg_torch`` is the same work on the pure-torch path (``backend="torch"``).
* torchmetrics: ``binary_calibration_error`` / ``multiclass_calibration_error`` (15 bins, l1), default arguments
  (input validation on), inputs reshaped to (N,) / (N, K) as its API requires.
* MONAI: ``CalibrationErrorMetric(num_bins=15, right=True)`` (right=True gives [lo, hi) bins) on (1, C, D, H, W)
  inputs; its labels must be one-hot floats, built inside the timed region (part of using it).

Writes ``benchmarks/results/calibration.md`` and ``.json``.
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

BINS = 15
IMPLS = ("baseline", "trustseg", "trustseg_torch", "torchmetrics", "monai")  # trustseg_torch: its pure-torch path
# trustseg doing only what one peer does (plus NLL and Brier), 4-class case; binary trustseg already does that
MATCHED = {"torchmetrics": "trustseg_toplabel", "monai": "trustseg_classwise"}
CHECKS = ("torchmetrics_f64", "numpy_f64")  # value agreement only: the peer run on float64 copies of the inputs


def build(case: str, size: int, chunk: int = 1 << 16):
    """Seeded inputs built chunk by chunk (no full-size temporaries): probs and uint8 labels."""
    import torch

    g = torch.Generator().manual_seed(0)
    n = size**3
    if case == "binary":
        p = torch.empty(n)
        y = torch.empty(n, dtype=torch.uint8)
        for a in range(0, n, chunk):
            pc = torch.rand(min(chunk, n - a), generator=g)
            p[a : a + chunk] = pc
            y[a : a + chunk] = (torch.rand(pc.shape, generator=g) < pc**1.3).to(torch.uint8)  # miscalibrated
        return p.view(size, size, size), y.view(size, size, size)
    k = 4
    p = torch.empty(k, n)
    y = torch.empty(n, dtype=torch.uint8)
    for a in range(0, n, chunk):
        m = min(chunk, n - a)
        pc = torch.softmax(2.0 * torch.randn(k, m, generator=g), 0)
        p[:, a : a + m] = pc
        # labels drawn from a tempered version of p: the model is over-confident
        y[a : a + m] = torch.multinomial(torch.softmax(pc.log() * 0.6, 0).T, 1, generator=g)[:, 0].to(torch.uint8)
    return p.view(k, size, size, size), y.view(size, size, size)


def run_impl(impl: str, case: str, size: int) -> dict:
    """One implementation on one case, in this process."""
    import torch

    p, y = build(case, size)
    import monai.metrics  # noqa: F401  (same imports in every process: the baseline must carry them too)
    import torchmetrics.functional.classification as tmf

    from trustseg.metrics.calibration import calibration_metrics

    input_bytes = p.numel() * p.element_size() + y.numel() * y.element_size()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    backend = "torch" if impl == "trustseg_torch" else "kernel"  # "kernel": fail rather than time the fallback

    def trustseg():
        if case == "binary":
            m = calibration_metrics(p, y, bins=BINS, binary=True, toplabel=False, classes=[1], backend=backend)
            return {"ece": m["ece_foreground"], "nll": m["nll"], "brier": m["brier"]}
        only = {"trustseg_toplabel": {"classes": False}, "trustseg_classwise": {"toplabel": False}}.get(impl, {})
        m = calibration_metrics(p, y, bins=BINS, backend=backend, **only)
        return {
            "ece_toplabel": m["ece_toplabel"],
            "ece_classwise": m["ece_classwise"],
            "nll": m["nll"],
            "brier": m["brier"],
        }

    def tm(p=p):
        if impl == "torchmetrics_f64":
            p = p.double()
        if case == "binary":
            return {"ece": float(tmf.binary_calibration_error(p.reshape(-1), y.reshape(-1), n_bins=BINS))}
        flat = p.reshape(p.shape[0], -1).T
        return {"ece_toplabel": float(tmf.multiclass_calibration_error(flat, y.reshape(-1).long(), 4, n_bins=BINS))}

    def mon():
        from monai.metrics import CalibrationErrorMetric

        metric = CalibrationErrorMetric(num_bins=BINS, right=True)
        if case == "binary":
            metric(p[None, None], y[None, None].float())
            return {"ece": float(metric.aggregate())}
        onehot = torch.nn.functional.one_hot(y.long(), 4).movedim(-1, 0)[None].float()
        metric(p[None], onehot)
        return {"ece_classwise": float(metric.aggregate())}

    def numpy_f64():
        import numpy as np

        def ece(conf, acc):
            b = np.minimum((conf * BINS).astype(np.int64), BINS - 1)  # conf float64: exact edges b / BINS
            sums = [np.bincount(b, weights=w, minlength=BINS) for w in (acc, conf)]
            return float(np.abs(sums[0] - sums[1]).sum() / conf.size)

        yy = y.reshape(-1).numpy()
        if case == "binary":
            return {"ece": ece(p.reshape(-1).numpy().astype(np.float64), yy.astype(np.float64))}
        pp = p.reshape(p.shape[0], -1).numpy()
        top = ece(pp.max(0).astype(np.float64), (pp.argmax(0) == yy).astype(np.float64))
        cls = [ece(pp[k].astype(np.float64), (yy == k).astype(np.float64)) for k in range(pp.shape[0])]
        return {"ece_toplabel": top, "ece_classwise": float(np.mean(cls))}

    fn = {"torchmetrics": tm, "torchmetrics_f64": tm, "numpy_f64": numpy_f64, "monai": mon, "baseline": dict}
    fn = fn.get(impl, trustseg)
    times, values = [], {}
    for _ in range(ARGS.repeats if impl != "baseline" and impl not in CHECKS else 1):
        t0 = time.perf_counter()
        values = fn()
        times.append(time.perf_counter() - t0)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "impl": impl,
        "case": case,
        "seconds": min(times),
        "all_seconds": times,
        "peak_rss": rss_after,
        "peak_rss_before_run": rss_before,
        "input_bytes": input_bytes,
        "values": values,
    }


def subprocess_run(impl: str, case: str, size: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        impl,
        "--case",
        case,
        "--size",
        str(size),
        "--repeats",
        str(ARGS.repeats),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()
    except OSError:
        return "unknown"


def main() -> None:
    from machine import describe, markdown
    from trustseg.core.atomic import atomic_write_json, atomic_write_text

    load_start = load_average()
    results = {}
    # Rounds: every timed implementation once per round, in turn, so that a burst of load from elsewhere on a
    # shared machine hits all of them alike; best time over rounds, highest peak memory over rounds.
    for rnd in range(ARGS.rounds):
        for case in ("binary", "multiclass"):
            impls = IMPLS + (tuple(MATCHED.values()) if case == "multiclass" else ())
            for impl in impls + (CHECKS if rnd == 0 else ()):
                print(f"round {rnd + 1} {case:10s} {impl:18s}", end=" ", flush=True)
                r = subprocess_run(impl, case, ARGS.size)
                print(f"{r['seconds']:.3f} s, peak RSS {r['peak_rss'] / 2**20:.0f} MiB", flush=True)
                old = results.get((case, impl))
                if old is not None:
                    r["all_seconds"] = old["all_seconds"] + r["all_seconds"]
                    r["seconds"] = min(old["seconds"], r["seconds"])
                    r["peak_rss"] = max(old["peak_rss"], r["peak_rss"])
                results[(case, impl)] = r
    load_end = load_average()

    rows, agreement, summary = [], [], {}
    mib = 2**20
    for case in ("binary", "multiclass"):
        base = results[(case, "baseline")]
        ours = results[(case, "trustseg")]
        inp = base["input_bytes"]
        for impl in IMPLS[1:]:
            r = results[(case, impl)]
            extra = max(0, r["peak_rss"] - base["peak_rss"])
            ratio = r["seconds"] / ours["seconds"]
            same = results.get((case, MATCHED.get(impl, "")), ours) if impl != "trustseg_torch" else ours
            ratio_same = r["seconds"] / same["seconds"]
            summary[f"{case}/{impl}"] = {
                "seconds": r["seconds"],
                "extra_bytes": extra,
                "peak_over_inputs": (inp + extra) / inp,
                "speedup_of_trustseg": ratio,
                "speedup_of_trustseg_same_work": ratio_same,
                "trustseg_same_work_seconds": same["seconds"],
                "values": r["values"],
            }
            cells = [case, impl, f"{r['seconds']:.3f}", f"{ratio:.1f}×", f"{ratio_same:.1f}×", f"{extra / mib:.0f}"]
            cells.append(f"{(inp + extra) / inp:.2f}×")
            rows.append("| " + " | ".join(cells) + " |")
        for impl in ("trustseg_torch", "torchmetrics", "monai", *CHECKS):
            for key, v in results[(case, impl)]["values"].items():
                diff = abs(v - ours["values"][key])
                agreement.append(f"| {case} | {key} | {ours['values'][key]:.9f} | {impl} | {v:.9f} | {diff:.2e} |")
        summary[f"{case}/input_bytes"] = inp
        summary[f"{case}/trustseg_nll_brier"] = {k: ours["values"][k] for k in ("nll", "brier")}

    targets = []
    for case in ("binary", "multiclass"):
        for impl in ("torchmetrics", "monai"):
            r = summary[f"{case}/{impl}"]
            ok = "met" if r["speedup_of_trustseg_same_work"] >= 5 else "NOT met"
            targets.append(f"- {case}, vs {impl}: {r['speedup_of_trustseg_same_work']:.1f}× (same ECE): {ok}.")
        mem = summary[f"{case}/trustseg"]["peak_over_inputs"]
        targets.append(f"- {case}, trustseg peak / inputs {mem:.2f}×: {'met' if mem <= 1.2 else 'NOT met'}.")
    size = ARGS.size
    in_binary = results[("binary", "baseline")]["input_bytes"] / mib
    in_multi = results[("multiclass", "baseline")]["input_bytes"] / mib
    md = [
        f"## Calibration (ECE + NLL + Brier) at {size}³",
        "",
        f"Command: `python benchmarks/bench_calibration.py{'' if size == 256 else f' --size {size}'}` "
        f"(best of {ARGS.rounds} rounds × {ARGS.repeats} runs per implementation; each round runs every "
        "implementation in turn, each in its own subprocess).",
        "",
        markdown(),
        f"MONAI {_version('monai')}, torchmetrics {_version('torchmetrics')}. Load average {load_start} at the "
        f"start, {load_end} at the end (on 2 cores, above ~1 means something else was running): absolute times "
        "are noisy, the ratios less so.",
        "",
        f"Inputs: binary = float32 foreground map + uint8 labels ({in_binary:.0f} MiB); "
        f"4-class = float32 (4, D, H, W) probabilities + uint8 labels ({in_multi:.0f} MiB). "
        "trustseg computes ECE + NLL + Brier in "
        'one pass (4-class: top-label and class-wise ECE); the peers compute their ECE only. "trustseg (all)" '
        'is that one pass; "trustseg (same ECE)" computes only the peer\'s ECE convention + NLL + Brier '
        "(4-class: `trustseg_toplabel` vs torchmetrics, `trustseg_classwise` vs MONAI; binary: identical). "
        'trustseg runs its compiled one-pass kernel (`backend="kernel"`, built by `pip install`); '
        '`trustseg_torch` is the same computation on its pure-torch fallback path (`backend="torch"`), for '
        "reference, with its own speed-ups in the same columns (ratios < 1 mean the kernel is faster).",
        "",
        "| case | implementation | seconds | trustseg (all) speed-up | trustseg (same ECE) speed-up "
        "| extra peak memory (MiB) | peak / inputs |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Targets: trustseg ≥ 5× faster than both peers; peak memory ≤ 1.2× the input arrays.",
        "",
        *targets,
        "",
        "The kernel reads each voxel once and allocates nothing per voxel: one histogram of (1 + K) × 2 × S bins "
        "(16 bytes a bin, S = 2056 fine bins) per thread, each thread on one contiguous voxel range. The torch "
        "path streams chunks of 2¹⁷ voxels; most of its extra memory is paid once per process (library code pages, "
        "the worker threads' allocator arenas).",
        "",
        "Value agreement (same inputs; binary = foreground-probability ECE, torchmetrics' convention):",
        "",
        "| case | metric | trustseg | peer | peer value | abs. difference |",
        "|---|---|---|---|---|---|",
        *agreement,
        "",
        "The peers accumulate their bin sums in float32 (`scatter_add_`), trustseg in float64: at 256³ (about 1M "
        "voxels per bin) the peers' float32 sums drift, which is what the differences above measure; "
        "`torchmetrics_f64` (the same peer run on float64 copies of the inputs, for agreement only) shows the "
        "conventions themselves coincide (binary case; its multiclass path casts confidences to float32 whatever the "
        "input dtype, so there the float64 copy changes nothing), and `numpy_f64` (a plain float64 numpy bincount "
        "of the same definitions, agreement only) checks every case. MONAI's edges are k/n·(1 + 2⁻²³); see "
        "docs/metrics_calibration.md.",
        "",
    ]
    atomic_write_text(HERE / "results" / "calibration.md", "\n".join(md))
    atomic_write_json(
        HERE / "results" / "calibration.json",
        {"machine": describe(), "size": size, "load_start": load_start, "load_end": load_end, "results": summary},
    )
    print("\n".join(md))


def _version(name: str) -> str:
    import importlib

    return getattr(importlib.import_module(name), "__version__", "?")


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per subprocess")
    ap.add_argument("--rounds", type=int, default=2, help="subprocesses per implementation, interleaved")
    ap.add_argument("--worker", choices=IMPLS + tuple(MATCHED.values()) + CHECKS)
    ap.add_argument("--case", choices=("binary", "multiclass"))
    return ap.parse_args()


if __name__ == "__main__":
    ARGS = parse()
    if ARGS.worker:
        print(json.dumps(run_impl(ARGS.worker, ARGS.case, ARGS.size)))
    else:
        main()
