"""The ``nnunet:`` predictor on a tiny real nnU-Net v2 model folder built here (nnU-Net's own PlainConvUNet, two
folds, random weights), against nnU-Net's own ``nnUNetPredictor`` with mirroring and ``save_probabilities``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from trustseg.cli.main import main
from trustseg.core.errors import ConfigError
from trustseg.core.predictive import Predictive, precomputed_measures
from trustseg.data.io import read_image
from trustseg.data.synthetic import SynthConfig, make_synthetic_dataset
from trustseg.inference.adapters.nnunet_members import STREAMED_MEASURES, MemberMoments
from trustseg.inference.predictor import load_predictor
from trustseg.measures.pixel import compute_measures

NEEDS = "nnunetv2 not installed (optional extra: .ci/install-nnunet)"

PATCH = [16, 16, 16]
ARCH = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 2,
        "features_per_stage": [4, 8],
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3], [3, 3, 3]],
        "strides": [[1, 1, 1], [2, 2, 2]],
        "n_conv_per_stage": [1, 1],
        "n_conv_per_stage_decoder": [1],
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def _plans(spacing: list[float], patch: list[int] | None = None) -> dict:
    resample = "resample_data_or_seg_to_shape"
    config = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": patch or PATCH,
        "median_image_size_in_voxels": [20, 18, 24],
        "spacing": spacing,
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": resample,
        "resampling_fn_seg": resample,
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": resample,
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": ARCH,
        "batch_dice": True,
    }
    return {
        "dataset_name": "Dataset999_Tiny",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": [20, 18, 24],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": config},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 3.0,
                "mean": 0.0,
                "median": 0.0,
                "min": -3.0,
                "percentile_00_5": -2.5,
                "percentile_99_5": 2.5,
                "std": 1.0,
            }  # fmt: skip
        },
    }


DATASET = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "lesion": 1, "other": 2}, "numTraining": 2,
           "file_ending": ".nii.gz"}  # fmt: skip


def make_model_folder(
    root: Path,
    folds: int = 2,
    spacing: list[float] | None = None,
    patch: list[int] | None = None,
    mirror_axes: tuple[int, ...] = (0, 1, 2),
) -> Path:
    """An nnU-Net training output folder as nnU-Net writes it: plans, dataset.json, fingerprint, fold_N checkpoints
    (nnU-Net's checkpoint keys, numpy float64 in the logging as nnU-Net's trainer leaves them). ``patch``: the
    plans' patch size (default :data:`PATCH`); ``mirror_axes``: the checkpoints' allowed mirroring axes (views =
    2 ** len(mirror_axes))."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    folder = root / "Dataset999_Tiny" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    folder.mkdir(parents=True)
    plans = _plans(spacing or [1.0, 1.0, 1.0], patch)
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(DATASET, indent=2))
    fingerprint = {
        "spacings": [plans["original_median_spacing_after_transp"]] * 2,
        "shapes_after_crop": [[20, 18, 24]] * 2,
        "foreground_intensity_properties_per_channel": plans["foreground_intensity_properties_per_channel"],
        "median_relative_size_after_cropping": 1.0,
    }
    (folder / "dataset_fingerprint.json").write_text(json.dumps(fingerprint, indent=2))
    for f in range(folds):
        torch.manual_seed(100 + f)
        net = get_network_from_plans(ARCH["network_class_name"], ARCH["arch_kwargs"], ARCH["_kw_requires_import"],
                                     1, 3, allow_init=True, deep_supervision=False)  # fmt: skip
        with torch.no_grad():  # He init with tiny biases gives near-uniform outputs: spread the weights
            for p in net.parameters():
                p.add_(0.3 * torch.randn_like(p))
        (folder / f"fold_{f}").mkdir()
        ckpt = {
            "network_weights": net.state_dict(),
            "optimizer_state": {},
            "grad_scaler_state": None,
            "logging": {
                "mean_fg_dice": [np.float64(0.5)],
                "ema_fg_dice": [np.float64(0.5)],
                "epoch_end_timestamps": [1.0],
            },
            "_best_ema": np.float64(0.5),
            "current_epoch": 1,
            "init_args": {
                "plans": plans,
                "configuration": "3d_fullres",
                "fold": f,
                "dataset_json": DATASET,
                "device": torch.device("cpu"),
            },  # fmt: skip
            "trainer_name": "nnUNetTrainer",
            "inference_allowed_mirroring_axes": tuple(mirror_axes),
        }
        torch.save(ckpt, folder / f"fold_{f}" / "checkpoint_final.pth")
    return folder


def write_case(folder: Path, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Path:
    """One NIfTI image (X, Y, Z) = (20, 18, 24), zero border on one side (nnU-Net crops it), as case_0000.nii.gz."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    img = rng.normal(size=(20, 18, 24)).astype(np.float32) + np.linspace(0, 2, 24, dtype=np.float32)
    img[:2] = 0.0
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "case_0000.nii.gz"
    nib.save(nib.Nifti1Image(img, np.diag([*spacing, 1.0])), path)
    return path


def nnunet_reference(model: Path, inputs: Path, out: Path, folds=(0, 1)) -> np.ndarray:
    """nnU-Net's own prediction (mirroring on, probabilities saved), back in nibabel's (K, X, Y, Z) order."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(use_mirroring=True, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), folds, "checkpoint_final.pth")
    out.mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files_sequential(str(inputs), str(out), save_probabilities=True)
    probs = np.load(out / "case.npz")["probabilities"]  # (K, Z, Y, X), SimpleITK's order
    return probs.transpose(0, 3, 2, 1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    pytest.importorskip("nnunetv2", reason=NEEDS)
    root = tmp_path_factory.mktemp("nnunet")
    model = make_model_folder(root)
    case = write_case(root / "imagesTs")
    ref = nnunet_reference(model, root / "imagesTs", root / "ref")
    return model, case, ref


def _read(case: Path):
    from trustseg.data.io_read import read_image

    im = read_image(case)
    return im.array[None] if im.array.ndim == 3 else im.array, im.spacing


def well_weighted(predictor, image, spacing, floor: float = 1e-3) -> np.ndarray:
    """Voxels (X, Y, Z) whose nnU-Net float16 Gaussian weight sum is >= ``floor`` (nnU-Net's slicers and Gaussian)."""
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    img, sp = predictor._to_nnunet(image.astype(np.float32), spacing)
    data, _, props = predictor.config_manager.preprocessor_class(verbose=False).run_case_npy(
        img, None, {"spacing": sp}, predictor.plans_manager, predictor.config_manager, predictor.dataset_json
    )
    g = compute_gaussian(tuple(PATCH), 1 / 8, 10, device=torch.device("cpu"))
    weight = torch.zeros(data.shape[1:], dtype=torch.half)
    for sl in predictor._nn._internal_get_sliding_window_slicers(data.shape[1:]):
        weight[sl[1:]] += g
    full = np.ones(props["shape_before_cropping"], dtype=bool)  # cropped-away voxels: background, exact
    bbox = props["bbox_used_for_cropping"]
    full[tuple(slice(a, b) for a, b in bbox)] = weight.float().numpy() >= floor
    return full.transpose(2, 1, 0)


def test_members_reproduce_nnunets_own_prediction(tiny):
    model, case, ref = tiny
    image, spacing = _read(case)
    predictor = load_predictor(f"nnunet:{model}", "cpu", folds="0,1", tta="mirror", samples_policy="stack")
    assert predictor.num_members == 2 * 8  # M = folds x views (all 8 flip combinations nnU-Net uses in 3D)
    pred = predictor.predict(image, spacing)
    assert pred.probs.shape == (16, 1, 3, 20, 18, 24)
    assert torch.allclose(pred.probs.sum(2), torch.ones(1), atol=1e-5)
    nnunet = pred.extras["nnunet_probs"][0].numpy()
    # softmax of the members' mean logits, exported by nnU-Net's code = nnU-Net's own, wherever nnU-Net's float16
    # sliding-window sums are well conditioned (its Gaussian weight sum >= 1e-3; towards the image corners the
    # float16 weights underflow, and nnU-Net's own rounding differs between averaging per tile and per member)
    good = well_weighted(predictor, image, spacing)
    assert good.mean() > 0.7
    np.testing.assert_allclose(nnunet[:, good], ref[:, good], atol=1e-3)
    assert (np.abs(nnunet - ref) > 2e-3).mean() < 0.05
    # the cropped-away border is background with probability 1 in every member, as nnU-Net writes it
    assert torch.equal(pred.probs[:, 0, 0, :2], torch.ones_like(pred.probs[:, 0, 0, :2]))
    # members differ (folds, views) and their probability mean is near, not equal to, the logit-averaged one
    assert float((pred.probs - pred.probs.mean(0)).abs().max()) > 1e-2
    gap = float(np.abs(pred.mean()[0].numpy() - ref).max())
    assert gap > 1e-2  # (logit averaging is not probability averaging: reported, not hidden)


def test_one_fold_no_mirroring_is_one_member_equal_to_nnunet(tiny, tmp_path):
    model, case, _ = tiny
    image, spacing = _read(case)
    predictor = load_predictor(f"nnunet:{model}", "cpu", folds=[1], tta="none", samples_policy="stack")
    pred = predictor.predict(image, spacing)
    assert pred.num_samples == 1
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    nn = nnUNetPredictor(use_mirroring=False, device=torch.device("cpu"), allow_tqdm=False)
    nn.initialize_from_trained_model_folder(str(model), (1,), "checkpoint_final.pth")
    nn.predict_from_files_sequential(str(case.parent), str(tmp_path), save_probabilities=True)
    ref = np.load(tmp_path / "case.npz")["probabilities"].transpose(0, 3, 2, 1)
    np.testing.assert_allclose(pred.probs[0, 0].numpy(), ref, atol=1e-3)  # one member: the same float16 sums


def test_streamed_measures_equal_stacked(tiny):
    model, case, _ = tiny
    image, spacing = _read(case)
    stacked = load_predictor(f"nnunet:{model}", "cpu", samples_policy="stack").predict(image, spacing)
    streamed = load_predictor(f"nnunet:{model}", "cpu", samples_policy="stream").predict(image, spacing)
    assert streamed.num_samples == 1
    torch.testing.assert_close(streamed.probs[0], stacked.mean(), atol=1e-6, rtol=0)
    want = compute_measures(stacked, list(STREAMED_MEASURES))
    for name in STREAMED_MEASURES:
        got = precomputed_measures(streamed)[name]
        torch.testing.assert_close(got[:, 0], want[name], atol=2e-5, rtol=0, msg=name)
    assert float(want["mi"].max()) > 1e-3  # the members disagree somewhere: the check is not vacuous


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.7, 1.3, 2.0)])
def test_export_equals_nnunets_convert(tiny, spacing):
    """The predictor's export (nnU-Net's probability steps without the segmentation) is nnU-Net's
    ``convert_predicted_logits_to_segmentation_with_correct_shape`` to float round-off: with cropping reverted and, at a
    spacing other than the plans', resampling."""
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    model, case, _ = tiny
    image, _ = _read(case)
    predictor = load_predictor(f"nnunet:{model}", "cpu", folds=[0], tta="none")
    img, sp = predictor._to_nnunet(image.astype(np.float32), spacing)
    data, _, props = predictor.config_manager.preprocessor_class(verbose=False).run_case_npy(
        img, None, {"spacing": sp}, predictor.plans_manager, predictor.config_manager, predictor.dataset_json
    )
    logits = torch.randn(3, *data.shape[1:], generator=torch.Generator().manual_seed(0)) * 4
    _, want = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits.clone(), predictor.plans_manager, predictor.config_manager, predictor.label_manager, props, True
    )
    got = predictor._export([logits], props)
    assert tuple(got.shape) == want.shape and tuple(got.shape[1:]) == img.shape[1:]
    # to float round-off: the softmax is computed in place (and nnU-Net runs it with its own thread count)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-9)
    assert (want[0] == 1).any()  # the cropped-away border was reverted (background 1): the path is exercised


def test_lean_stream_keeps_only_what_the_measures_need(tiny):
    """``measures`` and ``nnunet_probs=False``: the same maps as the full stream, fewer sums and no logit sum."""
    model, case, _ = tiny
    image, spacing = _read(case)
    full = load_predictor(f"nnunet:{model}", "cpu", samples_policy="stream").predict(image, spacing)
    lean = load_predictor(
        f"nnunet:{model}", "cpu", samples_policy="stream", measures="entropy,mi", nnunet_probs=False
    ).predict(image, spacing)
    assert "nnunet_probs" in full.extras and "nnunet_probs" not in lean.extras
    assert sorted(precomputed_measures(lean)) == ["entropy", "mi"]
    torch.testing.assert_close(lean.probs, full.probs, atol=0, rtol=0)
    for name in ("entropy", "mi"):
        torch.testing.assert_close(precomputed_measures(lean)[name], precomputed_measures(full)[name], msg=name)
    # a measure the sums cannot give is refused when streaming, accepted when the members are stacked
    with pytest.raises(ConfigError, match="cannot stream.*vacuity.*stack"):
        load_predictor(f"nnunet:{model}", "cpu", samples_policy="stream", measures="mi,vacuity")
    stacked = load_predictor(f"nnunet:{model}", "cpu", samples_policy="stack", measures="mi,vacuity")
    assert stacked.predict(image, spacing).num_samples == 16
    auto = load_predictor(f"nnunet:{model}", "cpu", measures="vacuity", max_stack_bytes=1)
    with pytest.raises(ConfigError, match="cannot stream"):
        auto.predict(image, spacing)  # auto chose stream for this image


def test_member_moments_known_answer_and_subset():
    p = torch.tensor([[0.9, 0.5], [0.1, 0.5]]).view(2, 2, 1)  # K=2, two voxels
    q = torch.tensor([[0.1, 0.5], [0.9, 0.5]]).view(2, 2, 1)
    mm = MemberMoments(2, ["mi", "variance"]).update(p).update(q)
    assert mm.sl is None  # no epkl asked: no per-class log sums kept
    entropy_only = MemberMoments(2, ["confidence", "entropy"]).update(p).update(q)
    assert entropy_only.sx is None and entropy_only.s2 is None  # the mean is all they need
    assert entropy_only.compute()["entropy"][0, 0].item() == pytest.approx(np.log(2), abs=1e-6)
    out = mm.compute()
    h = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))
    assert out["mi"][0, 0].item() == pytest.approx(np.log(2) - h, abs=1e-6)
    assert out["mi"][1, 0].item() == pytest.approx(0.0, abs=1e-7)
    assert out["variance"][0, 0].item() == pytest.approx(2 * 0.4**2, abs=1e-6)
    with pytest.raises(ValueError, match="cannot stream"):
        MemberMoments(2, ["aula"])


def test_stacked_members_match_streamed_moments_random():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(5, 1, 3, 4, 5) * 3, 2)
    mm = MemberMoments(3)
    for m in range(5):
        mm.update(probs[m, 0])
    want = compute_measures(Predictive(probs=probs), list(STREAMED_MEASURES))
    for name, got in mm.compute().items():
        torch.testing.assert_close(got, want[name][0], atol=1e-5, rtol=0, msg=name)


def test_bad_options_are_clear(tiny):
    model, _, _ = tiny
    with pytest.raises(ConfigError, match="--tta"):
        load_predictor(f"nnunet:{model}", "cpu", tta="flips")
    with pytest.raises(ConfigError, match="--folds"):
        load_predictor(f"nnunet:{model}", "cpu", folds="zero")
    with pytest.raises(ConfigError, match="unknown option"):
        load_predictor(f"nnunet:{model}", "cpu", mc_dropout=3)
    from trustseg.core.errors import DataError

    with pytest.raises(DataError, match="checkpoint"):
        load_predictor(f"nnunet:{model}", "cpu", folds="0,7")


def test_cli_predict_nnunet(tiny, tmp_path, capsys):
    model, case, _ = tiny
    out = tmp_path / "pred"
    argv = ["predict", "--model", f"nnunet:{model}", "--folds", "0,1", "--tta", "mirror", "--input", str(case.parent)]
    argv += ["--out", str(out), "--measures", "entropy,mi,epkl", "--samples-policy", "stack", "--no-progress"]
    assert main(argv) == 0
    index = json.loads((out / "predictions.json").read_text())
    assert "nnunet" in json.dumps(index)
    assert (out / "case_0000_mi.nii.gz").is_file() and (out / "case_0000_epkl.nii.gz").is_file()
    # the streamed policy: the writer takes the streamed maps, equal to the ones computed from the stack
    streamed = tmp_path / "streamed"
    argv[argv.index("stack")] = "stream"
    argv[argv.index(str(out))] = str(streamed)
    assert main(argv) == 0
    for name in ("entropy", "mi", "epkl"):
        a = read_image(out / f"case_0000_{name}.nii.gz").array
        b = read_image(streamed / f"case_0000_{name}.nii.gz").array
        assert np.abs(a - b).max() < 2e-5, name
    # --measures reaches the predictor (only their sums are kept) and --no-nnunet-probs drops nnU-Net's average
    lean = tmp_path / "lean"
    argv[argv.index(str(streamed))] = str(lean)
    argv[argv.index("entropy,mi,epkl")] = "entropy,mi"
    assert main([*argv, "--no-nnunet-probs"]) == 0
    for name in ("entropy", "mi"):
        a = read_image(out / f"case_0000_{name}.nii.gz").array
        assert np.abs(a - read_image(lean / f"case_0000_{name}.nii.gz").array).max() < 2e-5, name
    assert not (lean / "case_0000_epkl.nii.gz").exists()
    assert main(["predict", "--model", str(tmp_path / "m.pt"), "--input", str(case.parent), "--out",
                 str(tmp_path / "x"), "--no-nnunet-probs"]) == 2  # fmt: skip
    assert "--no-nnunet-probs do(es) not apply to run: models" in capsys.readouterr().err


def test_logits_and_temperature(tiny, tmp_path):
    """Capabilities ``logits`` and ``temperature``: softmax of the logits is the members' probabilities, a
    temperature tempers each member (softmax(z / T)), and ``trustseg calibrate --model nnunet:`` fits one that
    ``predict --temperature`` applies."""
    model, case, _ = tiny
    image, spacing = _read(case)
    pred = load_predictor(f"nnunet:{model}", "cpu", samples_policy="stack")
    assert {"logits", "temperature"} <= pred.info.capabilities
    z = pred.predict_logits(image, spacing)
    probs = pred.predict(image, spacing).probs
    assert z.shape == probs.shape
    torch.testing.assert_close(torch.softmax(z, 2), probs, atol=1e-6, rtol=0)
    pred.temperature = 2.0
    torch.testing.assert_close(pred.predict(image, spacing).probs, torch.softmax(z / 2, 2), atol=1e-5, rtol=0)
    data = make_synthetic_dataset(tmp_path / "data", SynthConfig(cases=6, raters=2, dims=3, size=16, seed=0))
    out = tmp_path / "t.json"
    argv = ["calibrate", "--model", f"nnunet:{model}", "--data", str(data), "--split", "test", "--out", str(out)]
    assert main(argv) == 0
    t = json.loads(out.read_text())["temperature"]
    assert t > 0 and t != 1.0
    folder = tmp_path / "pred"
    argv = ["predict", "--model", f"nnunet:{model}", "--folds", "0", "--tta", "none", "--input", str(case.parent)]
    assert main([*argv, "--out", str(folder), "--temperature", str(out), "--no-progress"]) == 0
    assert json.loads((folder / "predictions.json").read_text())["temperature"] == pytest.approx(t)
