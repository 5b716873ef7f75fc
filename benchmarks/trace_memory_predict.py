"""Where the peak memory of ``trustseg predict`` on one volume comes from (issue 11, F7): a stage trace.

A sampling thread reads ``VmRSS`` every 2 ms; the stages of the predict path (reading, checking, normalising,
the windows, the writer's argmax / measures / saves) are wrapped so that each reports the RSS at its entry and
exit and the highest RSS seen while it ran, all relative to the RSS after the imports and the model load.

Usage (a run and an input folder made by bench_memory_predict.py):
    .venv/bin/python benchmarks/trace_memory_predict.py RUN INPUT_DIR [--overlap 0.5] [--dtype float32]
"""

from __future__ import annotations

import argparse
import functools
import shutil
import tempfile
import threading
import time

import torch

import trustseg.engine.predict as ep
import trustseg.engine.prediction_folder as pf
import trustseg.inference.run_predictor as rp
import trustseg.inference.sliding_window as sw
from trustseg.inference.predictor import load_predictor


def rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Tracer:
    def __init__(self) -> None:
        self.base = rss()
        self.stack: list[str] = []
        self.peaks: dict[str, int] = {}
        self.log: list[str] = []
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            now = rss()
            for s in self.stack:
                self.peaks[s] = max(self.peaks.get(s, 0), now)
            self.peaks["<all>"] = max(self.peaks.get("<all>", 0), now)
            time.sleep(0.002)

    def wrap(self, owner, name: str, label: str | None = None, once: bool = False) -> None:
        fn = getattr(owner, name)
        label = label or name
        seen = {"n": 0}

        @functools.wraps(fn)
        def inner(*a, **k):
            seen["n"] += 1
            quiet = once and seen["n"] > 1
            before = rss()
            self.stack.append(label)
            try:
                return fn(*a, **k)
            finally:
                self.stack.remove(label)
                if not quiet:
                    mb = lambda b: f"{(b - self.base) / 2**20:7.1f}"  # noqa: E731
                    self.log.append(
                        f"{label:28s} in {mb(before)}  out {mb(rss())}  peak {mb(self.peaks.get(label, before))} MB"
                    )

        setattr(owner, name, inner)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("inputs")
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args()
    torch.set_num_threads(2)
    predictor = load_predictor(args.run, "cpu", overlap=args.overlap)
    t = Tracer()
    t.wrap(pf, "read_image")
    t.wrap(ep, "check_image", "check_image (predict_folder)")
    t.wrap(rp, "check_image", "check_image (predictor)")
    t.wrap(rp.RunPredictor, "prepare")
    t.wrap(rp.RunPredictor, "predict")
    t.wrap(rp.RunPredictor, "predict_batch")
    t.wrap(sw, "_normalise")
    t.wrap(pf.FolderWriter, "write")
    t.wrap(pf, "_argmax")
    t.wrap(pf, "_measure_map")
    t.wrap(pf, "_save_npy")
    t.wrap(pf, "write_label")
    out = tempfile.mkdtemp()
    shutil.rmtree(out)
    try:
        ep.predict_folder(predictor, args.inputs, out, progress=False, dtype=args.dtype)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    t.running = False
    t.thread.join()
    print("\n".join(t.log))
    print(f"peak over baseline: {(t.peaks['<all>'] - t.base) / 2**20:.1f} MB")


if __name__ == "__main__":
    main()
