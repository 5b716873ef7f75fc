"""Training benchmarks (issue: foundation).

1. Throughput of trustseg's training loop vs a bare PyTorch loop on the same model, data, optimiser, schedule,
   loss and number of steps (images/s; target overhead <= 10%). The trustseg figure is the whole `train()`
   call: data loading, validation every epoch, atomic checkpoints, history — everything a user pays for.
2. The Dice the default U-Net (softmax method, soft-label training) reaches on the LIDC-IDRI slices of
   ../shared/data, split by patient (the last 60 of the 300 patients are the test set), in a fixed CPU-time
   budget. The number of epochs is set from a measured first epoch so that training fits the budget.

Usage:
    .venv/bin/python benchmarks/bench_training.py [--budget-min 15] [--skip-lidc] [--skip-throughput]
Writes benchmarks/results/training.md and training.json.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import machine  # noqa: E402

WORK = HERE / "_work"
LIDC = HERE.parent.parent / "shared" / "data" / "lidc-idri-slices"


def _bare_loop(cfg, dataset, train_ids, steps_per_epoch: int) -> float:
    """Same model/optimiser/schedule/loss/batches as trustseg, written as the shortest plain loop."""
    from trustseg.methods import build_method
    from trustseg.methods.losses import dice_ce_loss

    torch.manual_seed(cfg.train.seed)
    method = build_method("softmax", cfg.net, dataset.spatial_dims, dataset.channels, dataset.num_classes)
    model = method.build_model(0)
    cases = [dataset[i] for i in train_ids]
    x_all = torch.from_numpy(np.stack([c.image for c in cases])).float()
    r_all = torch.from_numpy(np.stack([c.labels for c in cases])).long()  # (N, R, H, W), as trustseg gets them
    k = dataset.num_classes
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    total = cfg.train.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    bs = cfg.train.batch_size
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    model.train()
    for _ in range(cfg.train.epochs):
        perm = torch.randperm(len(cases), generator=g)
        for s in range(steps_per_epoch):
            idx = perm[s * bs : (s + 1) * bs]
            soft = torch.nn.functional.one_hot(r_all[idx], k).float().mean(1).movedim(-1, 1)  # soft label
            loss = dice_ce_loss(model(x_all[idx]), soft)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
            opt.step()
            sched.step()
    return time.perf_counter() - t0


def throughput(repeats: int = 2) -> dict:
    from trustseg.data.augmentation import AugmentConfig
    from trustseg.data.dataset import load_dataset
    from trustseg.data.synthetic import SynthConfig, make_synthetic_dataset
    from trustseg.engine.config import MethodConfig, RunConfig, TrainConfig
    from trustseg.engine.run import train
    from trustseg.models.config import NetConfig

    data = WORK / "synth64"
    if not (data / "dataset.json").exists():
        make_synthetic_dataset(data, SynthConfig(cases=60, raters=4, dims=2, size=64, num_classes=3, seed=0))
    ds = load_dataset(data)
    train_ids = ds.split("train")
    cfg = RunConfig(
        data=str(data),
        net=NetConfig(params={"channels": (16, 32, 64, 128)}),
        method=MethodConfig(name="softmax"),
        train=TrainConfig(epochs=20, batch_size=8, seed=0, augment=AugmentConfig(enabled=False)),
    )
    steps = math.ceil(len(train_ids) / cfg.train.batch_size)
    n_images = cfg.train.epochs * len(train_ids)
    once = RunConfig(
        data=cfg.data,
        net=cfg.net,
        method=cfg.method,
        train=TrainConfig(
            epochs=cfg.train.epochs, batch_size=8, seed=0, val_every=cfg.train.epochs, augment=AugmentConfig(False)
        ),
    )
    # the default pipeline: augmentation on (the bare loop has none, so this row is not overhead but its cost)
    augmented = RunConfig(
        data=cfg.data,
        net=cfg.net,
        method=cfg.method,
        train=TrainConfig(epochs=cfg.train.epochs, batch_size=8, seed=0, val_every=cfg.train.epochs),
    )
    ours, ours_val, ours_aug, bare = [], [], [], []
    for r in range(repeats):  # interleaved, best of `repeats` for each
        for conf, times in ((once, ours), (cfg, ours_val), (augmented, ours_aug)):
            run = WORK / f"tp_run{r}"
            shutil.rmtree(run, ignore_errors=True)
            t0 = time.perf_counter()
            train(conf, run, progress=False)
            times.append(time.perf_counter() - t0)
        bare.append(_bare_loop(cfg, ds, train_ids, steps))
    t_ours, t_val, t_aug, t_bare = min(ours), min(ours_val), min(ours_aug), min(bare)
    return {
        "images": n_images,
        "train_cases": len(train_ids),
        "val_cases": len(ds.split("val")),
        "epochs": cfg.train.epochs,
        "trustseg_s": round(t_ours, 2),
        "trustseg_val_every_epoch_s": round(t_val, 2),
        "bare_s": round(t_bare, 2),
        "trustseg_img_s": round(n_images / t_ours, 1),
        "trustseg_val_every_epoch_img_s": round(n_images / t_val, 1),
        "bare_img_s": round(n_images / t_bare, 1),
        "overhead_pct": round(100 * (t_ours / t_bare - 1), 1),
        "overhead_val_every_epoch_pct": round(100 * (t_val / t_bare - 1), 1),
        "trustseg_augmented_s": round(t_aug, 2),
        "trustseg_augmented_img_s": round(n_images / t_aug, 1),
        "augmentation_cost_pct": round(100 * (t_aug / t_ours - 1), 1),
        "note": "trustseg times are whole `train()` calls: dataset opening, fitting the intensity normalisation, a "
        "resumable checkpoint (model, optimiser, RNG) written atomically every epoch, history, validation; "
        "augmentation off for the overhead rows (the bare loop has none); best of "
        f"{repeats} interleaved runs",
    }


def lidc_budget(budget_min: float) -> dict:
    from trustseg.data.dataset import load_dataset
    from trustseg.data.importers import import_dataset
    from trustseg.engine.config import MethodConfig, RunConfig, TrainConfig
    from trustseg.engine.run import train
    from trustseg.inference import RunPredictor
    from trustseg.metrics.overlap import dice, nanmean
    from trustseg.models.config import NetConfig

    if not LIDC.exists():
        return {"skipped": f"{LIDC} not found"}
    data = WORK / "lidc"
    t_import = time.perf_counter()
    if not (data / "dataset.json").exists():
        import_dataset("lidc", LIDC, data, progress=False)
    t_import = time.perf_counter() - t_import
    ds = load_dataset(data)
    base = RunConfig(
        data=str(data),
        net=NetConfig(),
        method=MethodConfig(name="softmax"),
        train=TrainConfig(epochs=1, batch_size=16, seed=0),
    )
    probe = WORK / "lidc_probe"
    shutil.rmtree(probe, ignore_errors=True)
    c0 = time.process_time()
    train(base, probe, progress=False)
    cpu_epoch = time.process_time() - c0
    epochs = max(1, int(budget_min * 60 // cpu_epoch))
    cfg = RunConfig(
        data=base.data, net=base.net, method=base.method, train=TrainConfig(epochs=epochs, batch_size=16, seed=0)
    )
    run = WORK / "lidc_run"
    shutil.rmtree(run, ignore_errors=True)
    c0, w0 = time.process_time(), time.perf_counter()
    train(cfg, run, progress=True)
    cpu_train, wall_train = time.process_time() - c0, time.perf_counter() - w0
    predictor = RunPredictor(run)  # normalises as in training, pads to the network's multiple
    test = ds.split("test")
    d_major, d_rater, d_major_one = [], [], []
    for cid in test:
        case = ds[cid]
        hard = predictor.predict(case.image, case.spacing).hard()[0]
        maj = torch.from_numpy(case.majority_vote(ds.num_classes))
        d_major.append(float(dice(hard, maj, 2, empty="nan")[0]))
        d_major_one.append(float(dice(hard, maj, 2, empty="one")[0]))
        d_rater.append(
            float(nanmean(torch.stack([dice(hard, torch.from_numpy(lab), 2, empty="nan")[0] for lab in case.labels])))
        )
    return {
        "patients": len(set(ds.groups)),
        "train_cases": len(ds.split("train")),
        "val_cases": len(ds.split("val")),
        "test_cases": len(test),
        "import_s": round(t_import, 1),
        "budget_cpu_min": budget_min,
        "cpu_s_per_epoch": round(cpu_epoch, 1),
        "epochs": epochs,
        "train_cpu_s": round(cpu_train, 1),
        "train_wall_s": round(wall_train, 1),
        "dice_vs_majority_nonempty": float(np.nanmean(d_major)),
        "dice_vs_majority_empty_is_1": float(np.mean(d_major_one)),
        "dice_vs_each_rater_mean": float(np.nanmean(d_rater)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-min", type=float, default=15.0, help="LIDC training budget in CPU minutes")
    ap.add_argument("--skip-lidc", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(2)
    out_json = HERE / "results" / "training.json"
    res = json.loads(out_json.read_text()) if out_json.exists() else {}
    res["machine"] = machine.describe()
    if not args.skip_throughput:
        res["throughput"] = throughput()
        print(res["throughput"], flush=True)
    if not args.skip_lidc:
        res["lidc"] = lidc_budget(args.budget_min)
        print(res["lidc"], flush=True)
    from trustseg.core.atomic import atomic_write_json, atomic_write_text

    atomic_write_json(out_json, res)
    lines = ["## Training (benchmarks/bench_training.py)", "", machine.markdown(), ""]
    tp = res.get("throughput")
    if tp:
        lines += [
            "| loop | images | time (s) | images/s | overhead |",
            "|---|---|---|---|---|",
            f"| bare PyTorch loop (same model, optimiser, schedule, loss, batches) | {tp['images']} | "
            f"{tp['bare_s']} | {tp['bare_img_s']} | – |",
            f"| trustseg `train()`, validation at the end | {tp['images']} | {tp['trustseg_s']} | "
            f"{tp['trustseg_img_s']} | **{tp['overhead_pct']}%** |",
            f"| trustseg `train()`, validation every epoch ({tp['val_cases']} cases) | {tp['images']} | "
            f"{tp['trustseg_val_every_epoch_s']} | {tp['trustseg_val_every_epoch_img_s']} | "
            f"{tp['overhead_val_every_epoch_pct']}% |",
            f"| trustseg `train()` with the default augmentation (flips, rotations, intensity) | {tp['images']} | "
            f"{tp['trustseg_augmented_s']} | {tp['trustseg_augmented_img_s']} | "
            f"+{tp['augmentation_cost_pct']}% over validation at the end without it (work, not overhead) |",
            "",
            f"Target: overhead ≤ 10%. 2D 64×64 synthetic data, {tp['train_cases']} training cases with 4 raters "
            f"(both loops build the soft label from the rater maps each step), U-Net (16, 32, 64, 128), batch 8, "
            f"{tp['epochs']} epochs; {tp['note']}.",
            "",
        ]
    lidc = res.get("lidc")
    if lidc and "skipped" not in lidc:
        lines += [
            f"LIDC-IDRI slices (128×128, 4 raters), split by patient (last 60 patients = {lidc['test_cases']} test "
            f"slices; {lidc['train_cases']} train / {lidc['val_cases']} val slices), default U-Net "
            f"(16, 32, 64, 128), softmax on the soft label, z-score normalisation and the default augmentation, "
            f"budget {lidc['budget_cpu_min']} CPU-minutes "
            f"({lidc['epochs']} epochs at {lidc['cpu_s_per_epoch']} CPU-s each; {lidc['train_wall_s']} s wall):",
            "",
            "| Dice (nodule) | value |",
            "|---|---|",
            f"| vs majority vote, slices where the majority marks a nodule | {lidc['dice_vs_majority_nonempty']:.4f} |",
            f"| vs majority vote, empty-vs-empty = 1 | {lidc['dice_vs_majority_empty_is_1']:.4f} |",
            f"| vs each rater (mean over raters who mark it) | {lidc['dice_vs_each_rater_mean']:.4f} |",
            "",
        ]
    elif lidc:
        lines += [f"LIDC: skipped ({lidc['skipped']}).", ""]
    atomic_write_text(HERE / "results" / "training.md", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
