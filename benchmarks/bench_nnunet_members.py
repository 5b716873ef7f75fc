"""Peak memory and time of the ``nnunet:`` predictor's folds × mirror views on a synthetic CT-like volume.

Three ways, each in its own process (peak RSS = ``ru_maxrss`` of that process, minus nothing: model and image
included), on the same tiny nnU-Net model folder (nnU-Net's PlainConvUNet, random weights) and volume:

* ``stream``: trustseg's streamed members (``samples_policy=stream``: running sums, all M members' measures);
* ``stack``: the naive "stack all members" approach (``samples_policy=stack``, ``(M, 1, K, *sp)`` in memory);
* ``nnunet``: nnU-Net's own averaged prediction (``run_case_npy`` + ``predict_logits_from_preprocessed_data`` +
  ``convert_predicted_logits_to_segmentation_with_correct_shape`` with probabilities), mirroring on.

Usage: ``PYTHONPATH=src python benchmarks/bench_nnunet_members.py [--shape 160,160,96] [--folds 2]``; results go
to ``benchmarks/results/nnunet_members.{md,json}``. Needs nnunetv2 (``.ci/install-nnunet``).
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


def _child(mode: str, model: str, shape: tuple[int, ...], folds: int) -> dict:
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    image = (rng.normal(size=(1, *shape)) * 100).astype(np.float32)
    spacing = (1.0, 1.0, 1.0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    from trustseg.inference.predictor import load_predictor

    p = load_predictor(f"nnunet:{model}", "cpu", folds=list(range(folds)), tta="mirror", samples_policy="stream")
    if mode == "nnunet":
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        nn = nnUNetPredictor(use_mirroring=True, device=torch.device("cpu"), allow_tqdm=False)
        nn.initialize_from_trained_model_folder(model, tuple(range(folds)), "checkpoint_final.pth")
        img, sp = p._to_nnunet(image, spacing)
        pre = nn.configuration_manager.preprocessor_class(verbose=False)
        data, _, props = pre.run_case_npy(img, None, {"spacing": sp}, nn.plans_manager, nn.configuration_manager,
                                          nn.dataset_json)  # fmt: skip
        logits = nn.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
        del data
        seg, probs = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits, nn.plans_manager, nn.configuration_manager, nn.label_manager, props, True
        )
        members = 1
    else:
        p.samples_policy = mode
        p.predict(image, spacing)
        members = p.num_members
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "seconds": round(seconds, 2), "peak_rss_mib": round(peak, 1),
            "peak_above_start_mib": round(peak - base, 1), "members": members}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="160,160,96")
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--child", default=None)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    if args.child:
        print(json.dumps(_child(args.child, args.model, shape, args.folds)))
        return
    from test_nnunet_adapter import make_model_folder

    root = Path(tempfile.mkdtemp(prefix="bench_nnunet_"))
    model = make_model_folder(root, folds=args.folds)
    rows = []
    for mode in ("nnunet", "stream", "stack"):
        cmd = [sys.executable, __file__, "--child", mode, "--model", str(model), "--shape", args.shape,
               "--folds", str(args.folds)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
        print(rows[-1], flush=True)
    voxels = int(np.prod(shape))
    ref = rows[0]["peak_above_start_mib"]
    for r in rows:
        r["peak_vs_nnunet"] = round(r["peak_above_start_mib"] / ref, 2)
    result = {"shape": list(shape), "voxels": voxels, "classes": 3, "folds": args.folds, "views": 8,
              "patch": [16, 16, 16], "threads": 2, "rows": rows}  # fmt: skip
    res = HERE / "results"
    res.mkdir(exist_ok=True)
    (res / "nnunet_members.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# nnunet: members (folds x mirror views): peak memory and time",
        "",
        f"Synthetic volume {shape} (1 channel, K = 3), tiny PlainConvUNet (patch 16^3), {args.folds} folds x 8 "
        "mirror views, CPU, 2 threads. Peak = ru_maxrss of a fresh process above its start (imports excluded).",
        "",
        "| approach | members kept | seconds | peak above start (MiB) | x nnU-Net |",
        "|---|---|---|---|---|",
    ]
    names = {"nnunet": "nnU-Net's own averaged prediction", "stream": "trustseg streamed members",
             "stack": "naive stack of all members"}  # fmt: skip
    for r in rows:
        lines.append(f"| {names[r['mode']]} | {r['members']} | {r['seconds']} | {r['peak_above_start_mib']} | "
                     f"{r['peak_vs_nnunet']} |")  # fmt: skip
    (res / "nnunet_members.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
