"""Peak memory and time of the ``nnunet:`` predictor's folds × mirror views on a synthetic CT-like volume.

Three ways, each in its own process (peak RSS = ``ru_maxrss`` of that process, minus nothing: model and image
included), on the same tiny nnU-Net model folder (nnU-Net's PlainConvUNet, random weights) and volume:

* ``stream``: trustseg's streamed members (``samples_policy=stream``: running sums, all M members' measures);
* ``stack``: the naive "stack all members" approach (``samples_policy=stack``, ``(M, 1, K, *sp)`` in memory);
* ``nnunet``: nnU-Net's own averaged prediction (``run_case_npy`` + ``predict_logits_from_preprocessed_data`` +
  ``convert_predicted_logits_to_segmentation_with_correct_shape`` with probabilities), mirroring on.

Usage (results go to ``benchmarks/results/nnunet_members.{md,json}``; needs nnunetv2, ``.ci/install-nnunet``)::

    PYTHONPATH=src python benchmarks/bench_nnunet_members.py                      # CT size, 300 x 512 x 512
    PYTHONPATH=src python benchmarks/bench_nnunet_members.py --shape 64,96,96 --patch 32,48,48   # quick

At CT size on a CPU, 5 folds x 8 views (40 sliding-window passes) take far too long to run every approach, so
the default measures what does not depend on M, and extrapolates what does, saying so:

* peak memory of the streamed members is independent of M (running sums, one member at a time): it is measured
  with ``--folds`` x 2 views and x 4 views (``--mirror-axes`` 0 and 0,1), to show it does not grow;
* nnU-Net's own averaged prediction accumulates too, so its peak is independent of folds and views;
* time is linear in M: seconds per member, times 40, is the 5 x 8 estimate;
* the naive stack's need is ``M x K x voxels x 4`` bytes (40 members of a K = 3 CT volume: 37.7 GB), computed
  and, with ``--stack``, measured at the smaller M.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "inference"))


def _child(mode: str, model: str, shape: tuple[int, ...], folds: int, step: float, measures: str | None,
           nnunet_probs: bool) -> dict:  # fmt: skip
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    image = (rng.normal(size=(1, *shape)) * 100).astype(np.float32)
    spacing = (1.0, 1.0, 1.0)
    from trustseg.inference.predictor import load_predictor

    opts = {"folds": list(range(folds)), "tta": "mirror", "samples_policy": "stream", "step_size": step,
            "measures": measures, "nnunet_probs": nnunet_probs}  # fmt: skip
    p = load_predictor(f"nnunet:{model}", "cpu", **opts)
    nn = None
    if mode == "nnunet":
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        nn = nnUNetPredictor(tile_step_size=step, use_mirroring=True, device=torch.device("cpu"), allow_tqdm=False)
        nn.initialize_from_trained_model_folder(model, tuple(range(folds)), "checkpoint_final.pth")

    def run(x: np.ndarray) -> None:
        if nn is None:
            p.samples_policy = mode
            p.predict(x, spacing)
            return
        img, sp = p._to_nnunet(x, spacing)
        pre = nn.configuration_manager.preprocessor_class(verbose=False)
        data, _, props = pre.run_case_npy(img, None, {"spacing": sp}, nn.plans_manager, nn.configuration_manager,
                                          nn.dataset_json)  # fmt: skip
        logits = nn.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
        del data
        convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, nn.plans_manager, nn.configuration_manager, nn.label_manager, props, True
        )

    run(image[:, : min(shape[0], 24), : min(shape[1], 32), : min(shape[2], 32)].copy())  # first-call set-up
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    run(image)
    members = p.num_members  # nnU-Net averages the same folds x views
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "seconds": round(seconds, 2), "peak_rss_mib": round(peak, 1),
            "peak_above_start_mib": round(peak - base, 1), "members": members,
            "measures": ",".join(p.measures), "nnunet_probs": p.nnunet_probs}  # fmt: skip


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.split(",") if s.strip())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="300,512,512", help="D,H,W of the synthetic volume")
    ap.add_argument("--patch", default="64,128,128", help="the plans' patch size")
    ap.add_argument("--step", type=float, default=1.0, help="nnU-Net's tile step size (0.5 = its default overlap)")
    ap.add_argument("--folds", type=int, default=1)
    ap.add_argument("--mirror-axes", default="0", help="allowed mirroring axes of the measured model (2^n views)")
    ap.add_argument("--more-axes", default="0,1", help="a second model with more views (memory must not grow)")
    ap.add_argument("--stack", action="store_true", help="also measure the naive stack (M x K x voxels in memory)")
    ap.add_argument("--child", default=None)
    ap.add_argument("--model", default=None)
    ap.add_argument("--measures", default=None)
    ap.add_argument("--no-nnunet-probs", action="store_true")
    args = ap.parse_args()
    shape = _ints(args.shape)
    if args.child:
        child = _child(args.child, args.model, shape, args.folds, args.step, args.measures, not args.no_nnunet_probs)
        print(json.dumps(child))
        return
    sys.path.insert(0, str(HERE))
    from test_nnunet_adapter import make_model_folder

    from machine import markdown

    root = Path(tempfile.mkdtemp(prefix="bench_nnunet_"))
    patch = list(_ints(args.patch))
    models = {}
    for label, axes in (("few", _ints(args.mirror_axes)), ("more", _ints(args.more_axes))):
        models[label] = make_model_folder(root / label, folds=args.folds, patch=patch, mirror_axes=axes)
    # (mode, model, measures, nnunet_probs): the defaults (all six streamed measures and nnU-Net's own average),
    # the command with --no-nnunet-probs, the two-measure minimum, and more views (memory must not grow)
    plan: list[tuple[str, str, str | None, bool]] = [
        ("nnunet", "few", None, True),
        ("stream", "few", None, True),
        ("stream", "few", "entropy,mi,epkl", False),
        ("stream", "few", "entropy,mi", False),
        ("stream", "more", "entropy,mi,epkl", False),
    ] + ([("stack", "few", None, True)] if args.stack else [])
    rows = []
    for mode, label, measures, probs in plan:
        cmd = [sys.executable, __file__, "--child", mode, "--model", str(models[label]), "--shape", args.shape,
               "--folds", str(args.folds), "--step", str(args.step)]  # fmt: skip
        cmd += (["--measures", measures] if measures else []) + ([] if probs else ["--no-nnunet-probs"])
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            rows.append({"mode": mode, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]})
        else:
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    voxels = int(np.prod(shape))
    k = 3
    ref = rows[0].get("peak_above_start_mib")
    for r in rows:
        if ref and "peak_above_start_mib" in r:
            r["peak_vs_nnunet"] = round(r["peak_above_start_mib"] / ref, 2)
        if "seconds" in r:
            r["seconds_per_member"] = round(r["seconds"] / r["members"], 2)
    streamed = [r for r in rows if r["mode"] == "stream" and "seconds" in r]
    per_member = max(r["seconds_per_member"] for r in streamed) if streamed else None
    result = {
        "shape": list(shape), "voxels": voxels, "classes": k, "folds": args.folds, "patch": patch,
        "step_size": args.step, "threads": 2, "rows": rows, "machine": markdown(),
        "float32_probabilities_mib": round(k * voxels * 4 / 2**20, 1),
        "naive_stack_40_members_gib": round(40 * k * voxels * 4 / 2**30, 1),
        "estimated_seconds_5x8_streamed": round(per_member * 40, 1) if per_member else None,
    }  # fmt: skip
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    (res / "nnunet_members.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "## nnU-Net folds x mirror views as members: peak memory and time (benchmarks/bench_nnunet_members.py)",
        "",
        result["machine"],
        "",
        f"Synthetic volume {'x'.join(map(str, shape))} (1 channel, K = {k}; float32 probabilities "
        f"{result['float32_probabilities_mib']} MiB), tiny nnU-Net PlainConvUNet (random weights), patch "
        f"{'x'.join(map(str, patch))}, tile step {args.step}, {args.folds} fold(s), CPU, 2 threads. Peak = ru_maxrss "
        "of a fresh process above its level after loading the model (imports and model excluded).",
        "",
        "| approach | streamed measures | nnunet_probs | members | seconds | s / member | peak above start (MiB) "
        "| x nnU-Net |",
        "|---|---|---|---|---|---|---|---|",
    ]
    names = {"nnunet": "nnU-Net's own averaged prediction", "stream": "trustseg streamed members",
             "stack": "naive stack of all members"}  # fmt: skip
    for r in rows:
        if "error" in r:
            lines.append(f"| {names[r['mode']]} | – | – | – | failed: {r['error']} | – | – | – |")
            continue
        streamed_measures = r.get("measures", "–") if r["mode"] == "stream" else "–"
        keeps = ("yes" if r.get("nnunet_probs") else "no") if r["mode"] != "nnunet" else "–"
        lines.append(f"| {names[r['mode']]} | {streamed_measures} | {keeps} | {r['members']} | {r['seconds']} | "
                     f"{r['seconds_per_member']} | {r['peak_above_start_mib']} "
                     f"| {r.get('peak_vs_nnunet', '–')} |")  # fmt: skip
    lines += [
        "",
        f"Target: peak ≤ 1.5x nnU-Net's averaged prediction while keeping every member's information. The streamed "
        "peak does not depend on M (compare the streamed rows with 2 and 4 members); for 5 folds x 8 views the "
        "streamed prediction "
        f"would take about {result['estimated_seconds_5x8_streamed']} s here (s / member x 40, extrapolated, not "
        f"run), and the naive stack of 40 members would need {result['naive_stack_40_members_gib']} GiB for the "
        "stack alone" + (" (more than this machine's memory)." if result["naive_stack_40_members_gib"] > 23 else "."),
    ]
    (res / "nnunet_members.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
