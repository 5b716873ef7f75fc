"""Peak memory of ``trustseg predict`` on one large 3D volume (issue 11, F7).

Each configuration runs in a fresh subprocess that loads a tiny trained 3D run (made here: a synthetic 3D dataset
of 64³ cases, a 2-level 4/8-channel U-Net trained one epoch), writes nothing but the predict folder, and reports

* ``peak``: ``ru_maxrss`` after :func:`trustseg.engine.predict.predict_folder` minus the current RSS after the
  imports and the model load (so the input volume read from disk, the prediction and the writing all count);
* ``ratio``: ``peak`` / the volume's float32 size (the target for the sliding window: ≤ 4);
* the wall time of the predict call.

Configurations: softmax whole-volume (a run without ``patch_size``), softmax / MC-dropout (M = 3) / deep ensemble
(2 members) by sliding window (``patch_size`` 64³, overlap 0.5), and softmax sliding with ``--dtype float16``
probabilities where the code has that option.

Usage:
    .venv/bin/python benchmarks/bench_memory_predict.py [--size 256,256,128] [--full] [--label after]
        [--only NAME ...]
``--full`` adds the audit's 512×512×300 volume (sliding-window softmax only). Results are merged by label into
benchmarks/results/memory_predict.json (so a "before" run on the unmodified code is kept) and the table
benchmarks/results/memory_predict.md is rewritten from it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import machine  # noqa: E402

WORK = HERE / "_work" / "memory_predict"
RESULTS = HERE / "results"

#: name -> (method, params, members, patch_size or None, extra predict options)
CONFIGS: dict[str, tuple[str, dict, int, list[int] | None, dict]] = {
    "softmax-whole": ("softmax", {}, 1, None, {}),
    "softmax-sliding": ("softmax", {}, 1, [64, 64, 64], {}),
    "softmax-sliding-f16": ("softmax", {}, 1, [64, 64, 64], {"dtype": "float16"}),
    "mc-dropout-sliding-M3": ("mc-dropout", {"samples": 3}, 1, [64, 64, 64], {}),
    "ensemble-sliding-M2": ("ensemble", {}, 2, [64, 64, 64], {}),
}


def make_run(name: str) -> Path:
    """A tiny 3D run of configuration ``name`` (trained once, then reused)."""
    from trustseg.data.synthetic import SynthConfig, make_synthetic_dataset
    from trustseg.engine.config import MethodConfig, RunConfig, TrainConfig
    from trustseg.engine.run import train
    from trustseg.models.config import NetConfig

    method, params, members, patch, _ = CONFIGS[name]
    data = WORK / "data3d"
    if not (data / "dataset.json").exists():
        make_synthetic_dataset(data, SynthConfig(cases=4, raters=2, dims=3, size=64, num_classes=2, seed=0))
    key = f"{method}-m{members}-{'x'.join(map(str, patch)) if patch else 'whole'}"
    run = WORK / "runs" / key
    if not (run / "run.json").exists():
        cfg = RunConfig(
            data=str(data),
            net=NetConfig(params={"channels": (4, 8), "dropout": 0.2 if method == "mc-dropout" else 0.0}),
            method=MethodConfig(method, {**params, **({"members": members} if members > 1 else {})}),
            train=TrainConfig(epochs=1, batch_size=2, patch_size=tuple(patch) if patch else None),
        )
        train(cfg, run, progress=False)
    return run


def child(run: str, volume: str, out: str, options: str) -> None:
    """Runs in the subprocess: load the model, predict the one volume, print the measurements as JSON."""
    import resource

    import torch

    from trustseg.engine.predict import predict_folder
    from trustseg.inference.predictor import load_predictor

    torch.set_num_threads(2)
    opts = json.loads(options)
    predictor = load_predictor(run, "cpu", overlap=opts.pop("overlap", 0.5))
    base = _rss_now()
    t0 = time.perf_counter()
    error = None
    try:
        predict_folder(predictor, volume, out, progress=False, **opts)
    except Exception as e:  # a clear refusal is a result too
        error = f"{type(e).__name__}: {e}"
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"baseline_bytes": base, "peak_bytes": peak, "wall_s": wall, "error": error}))


def _rss_now() -> int:
    """The current resident set size in bytes (``VmRSS`` of /proc/self/status)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(name: str, size: tuple[int, ...], overlap: float = 0.5) -> dict:
    """Predict a ``size`` volume with configuration ``name`` in a fresh process."""
    import shutil

    import numpy as np

    run = make_run(name)
    tag = "x".join(map(str, size))
    vol_dir = WORK / f"input_{tag}"
    vol = vol_dir / "vol.npy"
    if not vol.exists():
        vol_dir.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        arr = np.lib.format.open_memmap(vol, mode="w+", dtype=np.float32, shape=(1, *size))
        for i in range(size[0]):  # slab by slab: the parent never holds the volume
            arr[0, i] = rng.standard_normal(size[1:], dtype=np.float32)
        arr.flush()
        del arr
    out = WORK / f"out_{name}_{tag}"
    shutil.rmtree(out, ignore_errors=True)
    opts = {**CONFIGS[name][4], "overlap": overlap}
    # BENCH_SRC: the source tree to measure (a copy of the unmodified code for a "before" run)
    env = {**os.environ, "PYTHONPATH": os.environ.get("BENCH_SRC", str(ROOT / "src")), "OMP_NUM_THREADS": "2"}
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import bench_memory_predict as b; b.child(*sys.argv[1:])"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(run), str(vol_dir), str(out), json.dumps(opts)],
        capture_output=True,
        text=True,
        env=env,
    )
    shutil.rmtree(out, ignore_errors=True)
    if proc.returncode != 0:
        return {"config": name, "size": list(size), "error": proc.stderr.strip().splitlines()[-1:]}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    input_bytes = 4 * int(np.prod(size))
    peak = res["peak_bytes"] - res["baseline_bytes"]
    return {
        "config": name,
        "size": list(size),
        "overlap": overlap,
        "input_mb": round(input_bytes / 2**20, 1),
        "baseline_mb": round(res["baseline_bytes"] / 2**20, 1),
        "peak_over_baseline_mb": round(peak / 2**20, 1),
        "ratio": round(peak / input_bytes, 2),
        "wall_s": round(res["wall_s"], 1),
        "error": res["error"],
    }


def write_md(data: dict) -> None:
    lines = [
        "## Predict memory on one 3D volume (benchmarks/bench_memory_predict.py)",
        "",
        data.get("machine_md", ""),
        "",
        "Peak = `ru_maxrss` after `predict_folder` minus the RSS after imports and model load (the volume read,",
        "the prediction and the written files all count); ratio = peak / the volume's float32 size. Target for the",
        "sliding window: ratio ≤ 4 (plus the model). Tiny 3D U-Net (4/8 channels), patch 64³, overlap 0.5, K = 2,",
        "all measures of the method written, fresh process per row.",
        "",
        "| label | config | volume | overlap | input (MB) | peak over baseline (MB) | ratio | wall (s) | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, rows in data["runs"].items():
        for r in rows:
            size = "×".join(map(str, r["size"]))
            note = (r.get("error") or "")[:120]
            if "ratio" not in r:
                lines.append(
                    f"| {label} | {r['config']} | {size} | {r.get('overlap', 0.5)} | – | – | – | – | failed: {note} |"
                )
                continue
            lines.append(
                f"| {label} | {r['config']} | {size} | {r.get('overlap', 0.5)} | {r['input_mb']} | "
                f"{r['peak_over_baseline_mb']} | "
                f"**{r['ratio']}** | {r['wall_s']} | {note} |"
            )
    (RESULTS / "memory_predict.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256,256,128", help="volume size D,H,W (default 256,256,128)")
    ap.add_argument("--full", action="store_true", help="also the audit's 512×512×300 (sliding softmax)")
    ap.add_argument("--label", default="after", help="label of this run in the results (e.g. before/after)")
    ap.add_argument("--only", nargs="*", default=None, help="configurations to run (default all)")
    ap.add_argument(
        "--overlap",
        type=float,
        default=0.5,
        help="sliding-window overlap (default 0.5); the memory does not depend on it (image-sized accumulators, "
        "one window at a time), the time does: 0 predicts 4.6x fewer windows at 256x256x128",
    )
    args = ap.parse_args()
    size = tuple(int(s) for s in args.size.split(","))
    names = args.only or list(CONFIGS)
    rows = []
    for name in names:
        print(f"{name} {size} ...", flush=True)
        rows.append(measure(name, size, args.overlap))
        print(json.dumps(rows[-1]), flush=True)
    if args.full:
        rows.append(measure("softmax-sliding", (512, 512, 300), args.overlap))
        print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "memory_predict.json"
    data = json.loads(path.read_text()) if path.exists() else {"runs": {}}
    data["machine"] = machine.describe()
    data["machine_md"] = machine.markdown()
    data["runs"][args.label] = rows
    path.write_text(json.dumps(data, indent=2) + "\n")
    write_md(data)


if __name__ == "__main__":
    main()
