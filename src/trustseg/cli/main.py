"""``trustseg`` command-line entry point.

Every subcommand is a thin wrapper over a Python function (named in its help) so the CLI and the API never
drift apart. Errors trustseg raises on purpose (bad data, bad config, unknown names) are printed as one clear
line and exit with status 2; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from trustseg import __version__
from trustseg.cli.compare import add_compare
from trustseg.cli.demo import run_demo
from trustseg.cli.qc import add_qc
from trustseg.cli.report import add_report
from trustseg.cli.saved import add_import_predictions, add_saved_options, prediction_folder_for
from trustseg.core.atomic import atomic_write_json
from trustseg.core.config import load_config, replace
from trustseg.core.errors import ConfigError, TrustsegError
from trustseg.core.registry import Registry
from trustseg.data.distortions import DISTORTIONS
from trustseg.data.importers import IMPORTERS, import_dataset
from trustseg.data.paths import outside_allowed
from trustseg.data.predictions import INDEX, read_index
from trustseg.data.synthetic import SynthConfig, make_synthetic_dataset
from trustseg.engine.calibrate import calibrate_predictor, calibrate_run, temperature_sidecar
from trustseg.engine.config import RunConfig, load_saved_run_config
from trustseg.engine.distributed import env_info, session
from trustseg.engine.predict import SHARDINGS, predict_folder
from trustseg.engine.run import train
from trustseg.engine.sharded_evaluate import evaluate_sharded
from trustseg.evaluation import SUITE, evaluate_predictions, flatten
from trustseg.evaluation.context import SuiteConfig
from trustseg.evaluation.parallel import check_workers
from trustseg.evaluation.robustness import NoiseConfig, OODConfig
from trustseg.inference.predictor import PREDICTORS, load_predictor, split_spec
from trustseg.measures import MEASURES
from trustseg.methods import METHODS
from trustseg.metrics import METRICS
from trustseg.models import MODELS
from trustseg.quality.registry import QC_PREDICTORS
from trustseg.quality.run import qc_annotator

#: ``trustseg <name>`` lists a registry: name -> (registry, what it holds).
LISTS: dict[str, tuple[Registry, str]] = {
    "methods": (METHODS, "uncertainty methods"),
    "measures": (MEASURES, "uncertainty measures"),
    "metrics": (METRICS, "metric functions"),
    "suite": (SUITE, "components of the evaluation suite (what `trustseg evaluate` reports)"),
    "models": (MODELS, "networks"),
    "predictors": (PREDICTORS, "predictor schemes (SCHEME:LOCATION names a model)"),
    "distortions": (DISTORTIONS, "graded distortions"),
    "importers": (IMPORTERS, "dataset importers (trustseg import KIND)"),
    "qc-predictors": (QC_PREDICTORS, "quality predictors (trustseg qc fit --predictor NAME)"),
}


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="generate a synthetic multi-rater dataset (trustseg.data.synthetic)")
    p.add_argument("--out", required=True, type=Path, help="output dataset folder")
    p.add_argument("--cases", type=int, default=40, help="number of cases (default 40)")
    p.add_argument("--raters", type=int, default=4, help="raters per case (default 4)")
    p.add_argument("--dims", type=int, choices=(2, 3), default=2, help="2D images or 3D volumes")
    p.add_argument("--size", type=int, default=64, help="image side length in pixels (default 64)")
    p.add_argument("--classes", type=int, default=3, help="classes including background (default 3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--val-fraction", type=float, default=0.15, help="share of cases in the val split (default 0.15)")
    p.add_argument("--test-fraction", type=float, default=0.15, help="share in the test split (default 0.15)")
    p.add_argument("--ext", default=".nii.gz", help="file format of the written images (default .nii.gz)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier trustseg dataset at --out")
    p.set_defaults(func=cmd_synth)


def _add_import(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="convert a users' layout into a trustseg dataset (trustseg.data.importers)")
    p.add_argument("kind", help="lidc, qubiq, nnunet or folder")
    p.add_argument("src", type=Path, help="source folder in its original layout")
    p.add_argument("--out", required=True, type=Path, help="output dataset folder")
    p.add_argument("--limit-patients", type=int, default=None, help="lidc: only the first N patients")
    p.add_argument(
        "--group-by", default=None, metavar="REGEX", help="folder: the patient of each case id (first group of REGEX)"
    )
    for flag, metavar, what in _IMPORT_FLAGS:
        p.add_argument(flag, default=None, metavar=metavar, help=what)
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="extra importer option (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier trustseg dataset at --out")
    p.set_defaults(func=cmd_import)


#: ``trustseg import`` flags that set an importer option of the same name (dashes -> underscores).
_IMPORT_FLAGS = (
    ("--image-pattern", "TEMPLATE", "folder: where the images are, e.g. 'images/{case}.*' (the default)"),
    ("--label-pattern", "TEMPLATE", "folder: where each rater's label is, e.g. '{rater}_manual/{case}_{rater}HO.png'"),
    ("--mask-pattern", "TEMPLATE", "folder: each case's field-of-view mask, e.g. 'mask/{case}_mask.png'"),
    (
        "--split-dirs",
        "DIR=PART,...",
        "folder: the source's split folders (training=train,test=test; none: no split)",
    ),
    ("--size", "[D,]H,W", "folder: resample every case to this many voxels (H,W or D,H,W)"),
    ("--spacing", "A,B[,C]", "folder: resample every case to this voxel size (one value per spatial axis)"),
)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a method on a dataset (trustseg.engine.train.train)")
    p.add_argument("--data", type=Path, help="trustseg dataset folder (overrides the config's data)")
    p.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, config.yaml, history)")
    p.add_argument("--config", type=Path, help="YAML/TOML run config (see docs/engine.md)")
    p.add_argument("--method", help="method name (see `trustseg methods`)")
    p.add_argument("--epochs", type=int, help="epochs")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoints")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing run at --out (kept until the new one finished)"
    )
    p.add_argument("--workers", type=int, default=1, help="ensemble members trained in parallel processes")
    p.add_argument("--calibrate", action="store_true", help="fit a post-hoc temperature on validation data")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, dotted (e.g. train.lr=1e-3, net.channels=[8,16,32], method.params.samples=5)",
    )
    p.add_argument(
        "--allow-outside",
        action="store_true",
        help="read files that dataset.json/predictions.json name outside their folder (absolute, '..', symlinks)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="predict probabilities and uncertainty maps (trustseg.engine.predict)")
    p.add_argument(
        "--run",
        "--model",
        dest="run",
        required=True,
        help="the model: a trained run folder, or SCHEME:LOCATION (see `trustseg predictors`)",
    )
    p.add_argument("--input", required=True, nargs="+", type=Path, help="image folder, files, or a dataset folder")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--split", default=None, help="with a dataset folder: predict only this split (e.g. test)")
    p.add_argument(
        "--tta", default=None, help="test-time views: torchscript:/state_dict: none, flips; nnunet: mirror, none"
    )
    p.add_argument("--folds", default=None, metavar="0,1,..", help="nnunet: models: folds (default: all present)")
    p.add_argument(
        "--samples-policy",
        default=None,
        choices=["auto", "stack", "stream"],
        help="nnunet: models: keep all members (stack) or stream them into running sums (stream)",
    )
    p.add_argument(
        "--no-nnunet-probs",
        dest="nnunet_probs",
        action="store_const",
        const=False,
        default=None,
        help="nnunet: models: skip nnU-Net's own averaged prediction (extras nnunet_probs; saves K volumes)",
    )
    p.add_argument(
        "--mc-dropout", type=int, default=None, metavar="N", help="torchscript:/state_dict: N passes, dropout on"
    )
    p.add_argument(
        "--patch-size", default=None, metavar="P,P[,P]", help="torchscript:/state_dict: Gaussian sliding window size"
    )
    p.add_argument("--measures", default=None, help="comma-separated measures (default: all the method supports)")
    p.add_argument(
        "--samples", action="store_true", help="also write the M sample probabilities (for GED / Hungarian IoU)"
    )
    p.add_argument(
        "--dtype",
        choices=["float32", "float16"],
        default="float32",
        help="storage of the .npy probabilities (float16: half the file; NIfTI stays float32)",
    )
    p.add_argument(
        "--qc", type=Path, default=None, help="a QC model (qc fit): write predicted quality and review per case"
    )
    p.add_argument("--resume", action="store_true", help="continue an earlier prediction folder in --out")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier prediction folder in --out (its listed files)"
    )
    p.add_argument(
        "--shard",
        choices=list(SHARDINGS),
        default="cases",
        help="under torchrun, what the ranks share: the cases, or the members of an ensemble (rank 0 writes)",
    )
    p.add_argument(
        "--temperature",
        default=None,
        metavar="TEMP.json|T",
        help="post-hoc temperature (a file of `trustseg calibrate --model`, or a number); default: "
        "MODEL.temperature.json beside a model file, if present",
    )
    p.add_argument(
        "--allow-outside",
        action="store_true",
        help="read files that dataset.json/predictions.json name outside their folder (absolute, '..', symlinks)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_predict)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score predictions against multi-rater labels (trustseg.evaluation)")
    p.add_argument(
        "--pred",
        required=True,
        type=Path,
        help="prediction folder written by `trustseg predict`, or a folder of probabilities saved by another tool "
        "(converted first, see `trustseg import-predictions`)",
    )
    p.add_argument("--data", required=True, type=Path, help="trustseg dataset folder with the rater labels")
    p.add_argument("--out", required=True, type=Path, help="results JSON (a per-case CSV is written beside it)")
    p.add_argument("--split", default=None, help="only cases of this split")
    p.add_argument(
        "--run",
        "--model",
        dest="run",
        help="the model (run folder or SCHEME:LOCATION) for --distort and --noise-robustness",
    )
    p.add_argument(
        "--distort", default=None, help="OOD protocol: comma-separated distortions (noise,blur,contrast,bias,ghosting)"
    )
    p.add_argument(
        "--severity",
        default="1,3,5",
        help="distortion severities from 1 to 5: a list (1,3,5) or a range (1..5); default 1,3,5",
    )
    p.add_argument("--noise-robustness", action="store_true", help="SURE's protocol: x + N(mu, 0.3^2), mu in 0.1..0.9")
    p.add_argument("--seed", type=int, default=0, help="seed of the distortions (default 0)")
    p.add_argument("--partial", action="store_true", help="evaluate a prediction folder marked incomplete")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="score the cases in N processes (contiguous blocks, merged in order: the one-process results)",
    )
    p.add_argument(
        "--exact",
        action="store_true",
        help="exact sort-based voxel statistics instead of the streaming histograms (SuiteConfig.exact)",
    )
    p.add_argument(
        "--allow-outside",
        action="store_true",
        help="read files that dataset.json/predictions.json name outside their folder (absolute, '..', symlinks)",
    )
    add_saved_options(p)
    p.set_defaults(func=cmd_evaluate)


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate", help="fit a trained run's post-hoc temperature (trustseg.engine.calibrate.calibrate_run)"
    )
    p.add_argument(
        "run", type=Path, nargs="?", default=None, help="trained run folder (the temperature goes into its run.json)"
    )
    p.add_argument(
        "--model",
        default=None,
        help="instead of RUN: any model giving logits (SCHEME:LOCATION, e.g. torchscript:model.pt?classes=2); "
        "needs --data, writes --out",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="temperature file (JSON) to write; default with --model: MODEL.temperature.json beside a model file",
    )
    p.add_argument("--data", type=Path, default=None, help="dataset to fit on (default: the run's own)")
    p.add_argument("--split", default=None, help="split to fit on (default: the run's validation cases, or val)")
    p.add_argument(
        "--allow-outside",
        action="store_true",
        help="read files that dataset.json/predictions.json name outside their folder (absolute, '..', symlinks)",
    )
    p.set_defaults(func=cmd_calibrate)


def _add_lists(sub: argparse._SubParsersAction) -> None:
    for name, (_, what) in LISTS.items():
        p = sub.add_parser(name, help=f"list the registered {what}")
        p.set_defaults(func=cmd_list, registry=name)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="synthetic data -> train -> predict -> evaluate -> report, in a few minutes")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--epochs", type=int, default=None, help="override the demo's epochs")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for the docs and the tests)."""
    parser = argparse.ArgumentParser(
        prog="trustseg",
        description="Trustworthy medical image segmentation: uncertainty maps, calibrated probabilities and "
        "quality scores, all measured.",
    )
    parser.add_argument("--version", action="version", version=f"trustseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (_add_synth, _add_import, _add_train, _add_predict, _add_evaluate, _add_lists, _add_demo):
        add(sub)
    _add_calibrate(sub)
    add_qc(sub, _parse_kv)
    add_import_predictions(sub)
    add_report(sub)
    add_compare(sub, _parse_kv)
    return parser


# -- commands --------------------------------------------------------------------------------------------------
def _console() -> Console:
    return Console(stderr=False)


def _parse_kv(pairs: Sequence[str], what: str) -> dict:

    out = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} {item!r}: expected KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def cmd_synth(args: argparse.Namespace) -> int:

    cfg = SynthConfig(
        cases=args.cases,
        raters=args.raters,
        dims=args.dims,
        size=args.size,
        num_classes=args.classes,
        seed=args.seed,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
    )
    path = make_synthetic_dataset(args.out, cfg, ext=args.ext, progress=True, overwrite=args.overwrite)
    _console().print(f"wrote synthetic dataset: [bold]{path}[/]")
    return 0


def cmd_import(args: argparse.Namespace) -> int:

    opts = _parse_kv(args.opt, "--opt")
    if args.limit_patients is not None:
        opts["limit_patients"] = args.limit_patients
    if args.group_by is not None:
        opts["group_by"] = args.group_by
    for flag, _, _ in _IMPORT_FLAGS:
        key = flag.lstrip("-").replace("-", "_")
        if getattr(args, key) is not None:
            opts[key] = getattr(args, key)
    path = import_dataset(args.kind, args.src, args.out, overwrite=args.overwrite, progress=True, **opts)
    _console().print(f"wrote dataset: [bold]{path}[/]")
    return 0


def run_config_from_args(args: argparse.Namespace):
    """Compose the run config: defaults < ``--config`` file < ``--set`` overrides < dedicated flags."""

    if args.config:
        cfg = load_config(RunConfig, args.config)
    elif getattr(args, "resume", False) and (Path(args.out) / "config.yaml").is_file():
        cfg = load_saved_run_config(Path(args.out) / "config.yaml")  # resume the run as it was configured
    else:
        cfg = RunConfig()
    changes = _parse_kv(args.set, "--set")
    if args.data is not None:
        changes["data"] = str(args.data)
    if args.method is not None:
        changes["method.name"] = args.method
    if args.epochs is not None:
        changes["train.epochs"] = args.epochs
    if args.seed is not None:
        changes["train.seed"] = args.seed
    params = {k.removeprefix("method.params."): v for k, v in changes.items() if k.startswith("method.params.")}
    changes = {k: v for k, v in changes.items() if not k.startswith("method.params.")}
    if params:
        changes["method.params"] = {**dict(cfg.method.params), **params}
    # net.<field> (the flat U-Net keys of older versions) and net.params.<field> both set a network parameter
    net_keys = [k for k in changes if k.startswith("net.") and k not in ("net.name", "net.params")]
    net_params = {k.removeprefix("net.").removeprefix("params."): changes.pop(k) for k in net_keys}
    # another network (net.name=monai.SegResNet) starts from its own defaults, not the earlier network's params
    other_net = changes.get("net.name", cfg.net.name) != cfg.net.name
    if net_params or (other_net and "net.params" not in changes):
        changes["net.params"] = {**({} if other_net else dict(cfg.net.params)), **net_params}
    return replace(cfg, **changes) if changes else cfg


def cmd_train(args: argparse.Namespace) -> int:

    cfg = run_config_from_args(args)
    if not cfg.data:
        raise ConfigError("no dataset: pass --data DIR or set `data:` in the config")
    METHODS.get(cfg.method.name)  # unknown names fail before any work, with a suggestion
    summary = train(
        cfg,
        args.out,
        resume=args.resume,
        progress=not args.no_progress,
        workers=args.workers,
        calibrate=args.calibrate,
        overwrite=args.overwrite,
    )
    _console().print(f"run written to [bold]{args.out}[/]")
    _console().print(summary)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    if (args.run is None) == (args.model is None):
        raise ConfigError("calibrate: give a trained run folder (RUN) or --model SCHEME:LOCATION, one of them")
    if args.model is None:
        t = calibrate_run(args.run, data=args.data, split=args.split)
        _console().print(f"temperature {t:.6g} written to [bold]{Path(args.run) / 'run.json'}[/]")
        if args.out is not None:
            calibrate_out = {"temperature": t, "model": str(args.run), "data": args.data, "split": args.split}
            atomic_write_json(args.out, {k: str(v) if isinstance(v, Path) else v for k, v in calibrate_out.items()})
        return 0
    if args.data is None:
        raise ConfigError("calibrate --model: say which dataset to fit on (--data DATA [--split val])")
    out = args.out if args.out is not None else temperature_sidecar(args.model)
    if out is None:
        raise ConfigError(f"calibrate --model {args.model}: say where to write the temperature (--out temp.json)")
    t = calibrate_predictor(args.model, args.data, out, split=args.split or "val")
    _console().print(f"temperature {t:.6g} written to [bold]{out}[/]")
    return 0


#: Predictor options whose flag is not ``--<option>``.
_OPTION_FLAGS = {"nnunet_probs": "--no-nnunet-probs"}


def _predictor_options(args: argparse.Namespace) -> dict:
    """``--tta``, ``--mc-dropout``, ``--patch-size`` as predictor options, refused for schemes without them."""
    options: dict = {}
    if args.tta is not None:
        options["tta"] = args.tta
    if args.mc_dropout is not None:
        options["mc_dropout"] = args.mc_dropout
    for key in ("folds", "samples_policy", "nnunet_probs"):  # nnunet: options
        if getattr(args, key, None) is not None:
            options[key] = getattr(args, key)
    if args.patch_size is not None:
        try:
            options["patch_size"] = [int(p) for p in str(args.patch_size).split(",")]
        except ValueError:
            raise ConfigError(f"--patch-size must be integers like 64,64, got {args.patch_size!r}") from None
    scheme, _ = split_spec(args.run)
    accepted = PREDICTORS.meta(scheme).get("options", frozenset())
    if "measures" in accepted and getattr(args, "measures", None):
        options["measures"] = args.measures  # a streaming predictor keeps only the sums these need
    refused = sorted(k for k in options if k not in accepted)
    if refused:
        flags = ", ".join(_OPTION_FLAGS.get(k, "--" + k.replace("_", "-")) for k in refused)
        takers = [e.name + ":" for e in PREDICTORS if set(refused) <= set(e.meta.get("options", ()))]
        raise ConfigError(f"{flags} do(es) not apply to {scheme}: models; use it with {' or '.join(takers)} models")
    return options


def cmd_predict(args: argparse.Namespace) -> int:

    measures = [m.strip() for m in args.measures.split(",")] if args.measures else None
    inputs = args.input[0] if len(args.input) == 1 else list(args.input)
    options = _predictor_options(args)
    model = load_predictor(args.run, **options) if args.qc is not None or options else args.run
    temperature = args.temperature
    if temperature is not None and not Path(temperature).is_file():
        try:
            temperature = float(temperature)
        except ValueError:
            raise ConfigError(f"--temperature {temperature}: neither a temperature file nor a number") from None
    annotate = None
    if args.qc is not None:
        annotate = qc_annotator(args.qc, layer_heads=bool(model.info.samples_are_heads))
    out = predict_folder(
        model,
        inputs,
        args.out,
        measures=measures,
        split=args.split,
        progress=not args.no_progress,
        save_samples=args.samples,
        dtype=args.dtype,
        resume=args.resume,
        overwrite=args.overwrite,
        annotate=annotate,
        annotation=None if args.qc is None else str(args.qc),
        temperature=temperature,
        shard=args.shard,
    )
    if not env_info().is_main:
        return 0  # one report, from rank 0 of a sharded predict
    console = _console()
    console.print(f"predictions written to [bold]{out}[/]")
    for what, why in read_index(out).get("notes", {}).items():
        console.print(f"[yellow]note[/]: {what} {why}")
    return 0


def parse_severities(text: str) -> list[int]:
    """Severities from "3", "1,3,5", "1..5" or "1..2,5" (ranges inclusive); each an integer from 1 to 5."""

    out: list[int] = []
    try:
        for part in (p.strip() for p in str(text).split(",")):
            if not part:
                continue
            lo, sep, hi = part.partition("..")
            out.extend(range(int(lo), int(hi) + 1) if sep else [int(part)])
    except ValueError:
        out = []
    if not out or any(not 1 <= s <= 5 for s in out):
        raise ConfigError(f"--severity {text}: give integers from 1 to 5, as a list (1,3,5) or a range (1..5)")
    return sorted(set(out))


def cmd_evaluate(args: argparse.Namespace) -> int:
    if (args.distort or args.noise_robustness) and args.run is None:
        raise ConfigError("--distort and --noise-robustness predict again: pass the trained run with --run RUN")
    ood = noise = None
    if args.distort:
        distortions = tuple(d.strip() for d in args.distort.split(",") if d.strip())
        ood = OODConfig(distortions, tuple(parse_severities(args.severity)), args.seed)  # checked before any work
    if args.noise_robustness:
        noise = NoiseConfig(seed=args.seed)
    check_workers(args.workers, "--workers")
    suite = SuiteConfig(exact=args.exact)
    predictor = load_predictor(args.run) if args.run is not None else None
    if env_info().enabled:
        if args.workers > 1:
            raise ConfigError("--workers: under torchrun the ranks already share the cases; use one or the other")
        if not (args.pred / INDEX).is_file():
            raise ConfigError(
                f"{args.pred}: a sharded evaluate (torchrun) needs a trustseg prediction folder; convert saved "
                "probabilities first (trustseg import-predictions)"
            )
        with session("cpu") as info:
            sharded = evaluate_sharded(
                args.pred,
                args.data,
                args.out,
                info,
                split=args.split,
                suite=suite,
                predictor=predictor,
                ood=ood,
                noise=noise,
                progress=info.is_main,
                partial=args.partial,
            )
        if sharded is None:
            return 0  # one report, from rank 0
        return _report_results(sharded, args)
    results = evaluate_predictions(
        prediction_folder_for(args.pred, args.data, args.out, args),
        args.data,
        args.out,
        split=args.split,
        suite=suite,
        predictor=predictor,
        ood=ood,
        noise=noise,
        progress=True,
        partial=args.partial,
        workers=args.workers,
    )
    return _report_results(results, args)


def _report_results(results: dict, args: argparse.Namespace) -> int:
    """Print where the results went and their headline numbers."""
    console = _console()
    if "partial" in results:
        part = results["partial"]
        console.print(f"[yellow]partial[/]: {part['scored']} of {part['expected']} cases predicted")
    console.print(f"results written to [bold]{args.out}[/] (per-case table: {Path(args.out).with_suffix('.csv')})")
    for key, value in flatten(results.get("summary", {})).items():
        if isinstance(value, float):
            console.print(f"  {key}: {value:.4f}")
    for dist, best in results.get("ood", {}).get("best", {}).items():
        console.print(f"  OOD {dist}: best score {best['score']} (mean AUROC {best['mean_auroc']:.3f})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    reg, _ = LISTS[args.registry]
    table = Table(title=f"trustseg {args.registry}")
    table.add_column("name", style="bold")
    table.add_column("what it is")
    for entry in reg:
        table.add_row(entry.name, entry.doc)
    _console().print(table)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:

    report = run_demo(args.out, epochs=args.epochs, seed=args.seed, progress=not args.no_progress)
    _console().print(f"\n[bold green]demo finished[/]: open [bold]{report}[/]")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 for a usage/data/config error)."""

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with outside_allowed(getattr(args, "allow_outside", False)):  # reaches every reader, member processes too
            return int(args.func(args) or 0)
    except TrustsegError as e:
        print(f"trustseg {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"trustseg {args.command}: interrupted (finished outputs are kept; train --resume continues)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
