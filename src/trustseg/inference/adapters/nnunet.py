"""A trained nnU-Net v2 model folder as a :class:`~trustseg.inference.predictor.Predictor`: scheme ``nnunet:``,
every fold × mirror view kept as a member instead of averaged.

``nnunet:MODEL_FOLDER`` is nnU-Net's training output folder (``.../Dataset042_X/nnUNetTrainer__nnUNetPlans__
3d_fullres``: ``plans.json``, ``dataset.json``, ``fold_N/checkpoint_final.pth``). Options:

* ``folds``: fold numbers (``[0, 1]``, or ``"0,1"``); default every ``fold_N`` holding the checkpoint;
* ``tta``: ``mirror`` (nnU-Net's test-time mirroring: the identity, then every non-empty combination of the
  checkpoint's ``inference_allowed_mirroring_axes``, in nnU-Net's order: 8 views in 3D, 4 in 2D) or ``none``;
* ``samples_policy``: ``stack`` (the prediction holds all members, ``probs (M, 1, K, *sp)``), ``stream`` (members
  are streamed into running sums: ``probs (1, 1, K, *sp)`` is their mean and the streamed measure maps are
  ``extras``), or ``auto`` (``stack`` while the stack takes at most ``max_stack_bytes``, default 1 GiB);
* ``measures``: the streamed measures (:data:`~trustseg.inference.adapters.nnunet_members.STREAMED_MEASURES`);
* ``nnunet_probs`` (default ``True``): also keep ``Σ z`` and export nnU-Net's own averaged prediction as
  ``extras["nnunet_probs"]``; ``False`` (``trustseg predict --no-nnunet-probs``) drops that ``K``-volume sum and
  its export, which at CT size is what keeps the streamed prediction within 1.5x nnU-Net's own peak memory;
* ``checkpoint`` (``checkpoint_final.pth``), ``step_size`` (nnU-Net's tile step, 0.5).

For each fold ``f`` and view ``v`` (``M = folds × views`` members, fold-major): nnU-Net's own preprocessing
(``DefaultPreprocessor.run_case_npy``: transpose, crop to non-zero, normalise, resample), nnU-Net's own Gaussian
sliding window (``predict_sliding_window_return_logits``) with the network of fold ``f`` and, on every tile,
only view ``v``: ``flip_v(net(flip_v(x)))``, then nnU-Net's own export
(the probability steps of ``convert_predicted_logits_to_segmentation_with_correct_shape``: resampling of the
logits to the original spacing, softmax, revert cropping and transpose) gives the member's probabilities
``p^(f,v)`` in the input's geometry. nnU-Net itself averages the *logits* of the views (per tile) and folds, then
applies the softmax; the predictor keeps ``Σ_(f,v) z^(f,v)`` too (unless ``nnunet_probs=False``), and exports
``z̄`` the same way: ``extras["nnunet_probs"]`` ``(1, K, *sp)`` is nnU-Net's own averaged prediction
(``nnUNetv2_predict --save_probabilities``, to nnU-Net's float16 accumulation). The mean of the members'
probabilities, ``p̄`` (what trustseg's measures read), differs from it by the members' disagreement.

Axis order: trustseg reads NIfTI in nibabel's order ``(C, X, Y, Z)``; nnU-Net works in SimpleITK's ``(Z, Y, X)``
(also through its ``NibabelIO``), so 3D images and spacings are reversed on the way in and the probabilities on
the way out. 2D models (nnU-Net's 2D datasets, spacing 999 on the first axis) take ``(C, H, W)`` as ``(C, 1, H,
W)``.

Checkpoints are read with ``torch.load(weights_only=True)``; nnU-Net's checkpoints hold numpy float64 scalars
(``_best_ema``, logging), allowed explicitly (:data:`CHECKPOINT_GLOBALS`). ``nnunetv2`` is an optional
dependency (``pip install trustseg[nnunet]``, or ``.ci/install-nnunet`` for the ``--no-deps`` set).
"""

from __future__ import annotations

import importlib
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from trustseg.core.errors import ConfigError, DataError
from trustseg.core.predictive import PRECOMPUTED, Predictive
from trustseg.inference.adapters.nnunet_members import STREAMED_MEASURES, MemberMoments
from trustseg.inference.device import resolve_device
from trustseg.inference.predictor import PREDICTORS, PredictorInfo, check_image

#: The options ``trustseg predict`` may pass to ``nnunet:``.
#: Smallest probability whose log stands for a logit (float32 probabilities below it are rounded-off zeros).
LOG_FLOOR = 1e-30
NNUNET_OPTIONS = frozenset(
    {"folds", "tta", "samples_policy", "measures", "nnunet_probs", "checkpoint", "step_size", "max_stack_bytes"}
)
#: numpy globals nnU-Net's checkpoints pickle (float64 scalars), allowed for ``weights_only=True``.
CHECKPOINT_GLOBALS: list[Any] = [
    np._core.multiarray.scalar,  # type: ignore[attr-defined]
    np.dtype,
    type(np.dtype(np.float64)),
    type(np.dtype(np.float32)),
]
#: The test-time options of ``nnunet:`` (``--tta``).
NNUNET_TTA = ("mirror", "none")
SAMPLES_POLICIES = ("auto", "stack", "stream")


def import_nnunet() -> dict[str, Any]:
    """The nnU-Net v2 pieces the predictor uses (lazy: nnunetv2 is optional).

    Raises:
        ConfigError: nnunetv2 is not importable (how to install it).
    """
    try:
        raw = importlib.import_module("nnunetv2.inference.predict_from_raw_data")
        plans = importlib.import_module("nnunetv2.utilities.plans_handling.plans_handler")
        net = importlib.import_module("nnunetv2.utilities.get_network_from_plans")
        labels = importlib.import_module("nnunetv2.utilities.label_handling.label_handling")
    except ImportError as e:
        raise ConfigError(
            f"nnunet: models need nnunetv2 ({e}); install it with `pip install trustseg[nnunet]` or, without "
            "its torch/torchvision/timm chain, `.ci/install-nnunet` (see docs/inference.md)"
        ) from None
    return {
        "Predictor": raw.nnUNetPredictor,
        "PlansManager": plans.PlansManager,
        "get_network": net.get_network_from_plans,
        "num_inputs": labels.determine_num_input_channels,
    }


def _single_view_predictor(base: type) -> type:
    """nnU-Net's predictor class with its per-tile mirroring replaced by one view (``view_axes``, spatial)."""

    class SingleViewPredictor(base):
        view_axes: tuple[int, ...] = ()

        @torch.inference_mode()
        def _internal_maybe_mirror_and_predict(self, x: Tensor) -> Tensor:
            if not self.view_axes:
                return self.network(x)
            axes = [a + 2 for a in self.view_axes]
            return torch.flip(self.network(torch.flip(x, axes)), axes)

    return SingleViewPredictor


def load_checkpoint(path: Path) -> dict:
    """An nnU-Net checkpoint, ``weights_only=True`` with :data:`CHECKPOINT_GLOBALS` allowed."""
    if not path.is_file():
        raise DataError(f"no checkpoint {path.name} in {path.parent} (train the fold, or pick --folds)", path)
    with torch.serialization.safe_globals(CHECKPOINT_GLOBALS):
        return torch.load(path, map_location="cpu", weights_only=True)


def parse_folds(folds: str | Sequence[int | str] | None, folder: Path, checkpoint: str) -> list[int | str]:
    """Fold names: the given ones (``"0,1"`` or a list), else every ``fold_N`` with ``checkpoint`` (not ``all``)."""
    if folds is None:
        found = sorted(
            int(p.name[5:]) for p in folder.glob("fold_*") if p.name[5:].isdigit() and (p / checkpoint).is_file()
        )
        if not found:
            raise DataError(f"no fold_N/{checkpoint} in {folder} (is it an nnU-Net training output folder?)", folder)
        return list(found)
    items = [s.strip() for s in folds.split(",")] if isinstance(folds, str) else list(folds)
    out: list[int | str] = []
    for f in items:
        if str(f) != "all" and not str(f).isdigit():
            raise ConfigError(f"--folds must be fold numbers like 0,1,2 (or all), got {folds!r}")
        out.append("all" if str(f) == "all" else int(f))
    return out


@dataclass
class MemberSummary:
    """The streamed result of one image: ``mean`` ``(K, *sp)`` (members' probabilities), ``nnunet`` ``(K, *sp)``
    (softmax of the mean logits, nnU-Net's own; ``None`` with ``nnunet_probs=False``), ``maps`` name -> ``(*sp)``,
    ``members`` (kept when stacking)."""

    mean: Tensor
    nnunet: Tensor | None
    maps: dict[str, Tensor]
    members: list[Tensor] = field(default_factory=list)


class NnunetPredictor:
    """An nnU-Net v2 training output folder predicting one image at a time, ``M = folds × views`` members.

    Args:
        folder: The model folder (``plans.json``, ``dataset.json``, ``fold_N/``).
        device: Where the networks run (``auto``, ``cpu``, ``cuda:N``).
        folds: Fold numbers (default: all present). tta: ``mirror`` or ``none``.
        samples_policy: ``auto``, ``stack`` or ``stream`` (module docstring). measures: the measures asked for
            (default: every streamed one); with ``stream`` each must be one of ``STREAMED_MEASURES``, and only the
            sums they need are kept. nnunet_probs: keep nnU-Net's own averaged prediction (module docstring).
        checkpoint: Checkpoint file name in each fold. step_size: nnU-Net's tile step size.
        max_stack_bytes: ``auto``'s limit on the member stack ``M · K · voxels · 4``.

    Raises:
        ConfigError: nnunetv2 missing, an unknown ``tta``/``samples_policy``/measure, a measure ``stream``
            cannot compute from running sums, bad ``folds``.
        DataError: the folder is not an nnU-Net model folder (missing files).
    """

    def __init__(
        self,
        folder: str | Path,
        device: str | torch.device = "auto",
        folds: str | Sequence[int | str] | None = None,
        tta: str = "mirror",
        samples_policy: str = "auto",
        measures: Sequence[str] | str | None = None,
        nnunet_probs: bool = True,
        checkpoint: str = "checkpoint_final.pth",
        step_size: float = 0.5,
        max_stack_bytes: int = 1 << 30,
    ):
        nn = import_nnunet()
        self.folder = Path(folder)
        for name in ("plans.json", "dataset.json"):
            if not (self.folder / name).is_file():
                raise DataError(
                    f"{name} missing: not an nnU-Net model folder (nnunet:TRAINER__PLANS__CONFIG)", self.folder
                )
        if tta not in NNUNET_TTA:
            raise ConfigError(f"nnunet: --tta must be one of {list(NNUNET_TTA)}, got {tta!r}")
        if samples_policy not in SAMPLES_POLICIES:
            raise ConfigError(f"--samples-policy must be one of {list(SAMPLES_POLICIES)}, got {samples_policy!r}")
        names = [m.strip() for m in measures.split(",")] if isinstance(measures, str) else measures
        # stack keeps every member, so the writer computes any measure; stream only what the sums give
        self.unstreamable = tuple(sorted(set(names or ()) - set(STREAMED_MEASURES)))
        if samples_policy == "stream":
            self._check_streamable()
        self.measures = tuple(m for m in names if m in STREAMED_MEASURES) if names else STREAMED_MEASURES
        self.nnunet_probs = bool(nnunet_probs)
        self.samples_policy, self.max_stack_bytes = samples_policy, int(max_stack_bytes)
        self.device = resolve_device(device, "predict device")
        self.folds = parse_folds(folds, self.folder, checkpoint)
        checkpoints = [load_checkpoint(self.folder / f"fold_{f}" / checkpoint) for f in self.folds]
        self.params = [c["network_weights"] for c in checkpoints]
        first = checkpoints[0]
        self.dataset_json = _load_json(self.folder / "dataset.json")
        self.plans_manager = nn["PlansManager"](str(self.folder / "plans.json"))
        self.config_manager = self.plans_manager.get_configuration(first["init_args"]["configuration"])
        self.label_manager = self.plans_manager.get_label_manager(self.dataset_json)
        allowed = first.get("inference_allowed_mirroring_axes")
        axes = tuple(allowed) if tta == "mirror" and allowed is not None else ()
        self.views = [()] + [c for i in range(len(axes)) for c in itertools.combinations(axes, i + 1)]
        cm = self.config_manager
        in_channels = nn["num_inputs"](self.plans_manager, cm, self.dataset_json)
        network = nn["get_network"](
            cm.network_arch_class_name,
            cm.network_arch_init_kwargs,
            cm.network_arch_init_kwargs_req_import,
            in_channels,
            self.label_manager.num_segmentation_heads,
            allow_init=True,
            deep_supervision=False,
        )
        network.load_state_dict(self.params[0])
        self._nn = _single_view_predictor(nn["Predictor"])(
            tile_step_size=step_size,
            use_gaussian=True,
            use_mirroring=False,
            perform_everything_on_device=self.device.type == "cuda",
            device=self.device,
            allow_tqdm=False,
        )
        self._nn.manual_initialization(
            network, self.plans_manager, cm, self.params, self.dataset_json, first["trainer_name"], axes or None
        )
        self.flat = float(self.plans_manager.plans.get("original_median_spacing_after_transp", [1.0])[0]) >= 999
        labels = self.dataset_json["labels"]
        classes = tuple(sorted(labels, key=lambda k: labels[k] if isinstance(labels[k], int) else labels[k][0]))
        self.member_names = [
            f"fold_{f}/" + ("identity" if not v else "mirror" + ",".join(map(str, v)))
            for f in self.folds
            for v in self.views
        ]
        self._info = PredictorInfo(
            classes=classes,
            in_channels=in_channels,
            spatial_dims=2 if self.flat else 3,
            method=f"nnunet+folds={len(self.folds)}+tta={tta}",
            num_samples=len(self.member_names),
            capabilities=frozenset({"logits", "temperature", *(["samples"] if len(self.member_names) > 1 else [])}),
            source=f"nnunet:{self.folder}",
        )

    @property
    def info(self) -> PredictorInfo:
        """What the model needs and offers."""
        return self._info

    def _check_streamable(self) -> None:
        if self.unstreamable:
            raise ConfigError(
                f"nnunet: cannot stream {list(self.unstreamable)} over members (streamed measures: "
                f"{', '.join(STREAMED_MEASURES)}); use --samples-policy stack for them"
            )

    #: Post-hoc temperature T (``trustseg calibrate --model nnunet:...``): every member's probabilities become
    #: ``softmax(ln p / T)``, which equals ``softmax(z / T)`` of its exported logits z (ln p = z − logsumexp z).
    temperature: float = 1.0

    @property
    def num_members(self) -> int:
        """M = folds × views."""
        return len(self.member_names)

    def _to_nnunet(self, image: np.ndarray, spacing: Sequence[float]) -> tuple[np.ndarray, list[float]]:
        """trustseg ``(C, X, Y, Z)`` -> nnU-Net ``(C, Z, Y, X)`` (2D: ``(C, H, W)`` -> ``(C, 1, H, W)``)."""
        if self.flat:
            return image[:, None], [999.0, *map(float, spacing)]
        return image.transpose(0, *range(image.ndim - 1, 0, -1)), [float(s) for s in reversed(spacing)]

    def _from_nnunet(self, probs: Tensor) -> Tensor:
        """nnU-Net ``(K, Z, Y, X)`` -> trustseg ``(K, X, Y, Z)`` (2D: drop the singleton axis)."""
        if self.flat:
            return probs[:, 0]
        return probs.permute(0, *range(probs.dim() - 1, 0, -1))

    def _export(self, box: list[Tensor], props: dict) -> Tensor:
        """nnU-Net's own export of the logits ``(K, *pre)`` popped from ``box`` to probabilities ``(K, *orig)``
        (nnU-Net's axis order).

        The probability steps of nnU-Net's ``convert_predicted_logits_to_segmentation_with_correct_shape``:
        nnU-Net's ``resampling_fn_probabilities`` to the cropped shape, its inference nonlinearity (softmax over
        the classes, sigmoid for region-based models) computed in place (:func:`_nonlin_`), nnU-Net's
        ``revert_cropping_on_probabilities``, the backward transpose; the same numbers to float round-off (test).
        Left out: the segmentation it also builds (an int64 argmax volume we would discard) and the reverted copy
        when nothing was cropped. The logits are taken out of ``box`` (the caller keeps no reference) so that the
        softmax can overwrite them: at CT size each avoided copy is a K-volume of the peak memory.
        """
        pm, cm, lm = self.plans_manager, self.config_manager, self.label_manager
        logits = box.pop()
        before = props["shape_after_cropping_and_before_resampling"]
        spacing = [props["spacing"][i] for i in pm.transpose_forward]
        current = cm.spacing if len(cm.spacing) == len(before) else [spacing[0], *cm.spacing]
        resampled = cm.resampling_fn_probabilities(logits, before, current, spacing)
        del logits
        probs = _nonlin_(resampled if isinstance(resampled, Tensor) else torch.from_numpy(resampled), lm.has_regions)
        del resampled
        shape, bbox = list(props["shape_before_cropping"]), props["bbox_used_for_cropping"]
        if list(probs.shape[1:]) != shape or any(tuple(b) != (0, n) for b, n in zip(bbox, shape, strict=True)):
            probs = lm.revert_cropping_on_probabilities(probs, bbox, shape)
        out = probs if isinstance(probs, Tensor) else torch.from_numpy(np.asarray(probs))
        return out.float().permute(0, *[i + 1 for i in pm.transpose_backward])

    @torch.inference_mode()
    def predict_members(
        self, image: np.ndarray | Tensor, spacing: Sequence[float] | None = None, keep: bool = False
    ) -> MemberSummary:
        """Stream every fold × view member of one raw image ``(C, *sp)`` into running sums.

        Returns:
            :class:`MemberSummary` in trustseg's axis order; ``members`` (each ``(K, *sp)``) only with ``keep``.
        """
        check_image(self._info, image)
        arr = (image.detach().cpu().numpy() if isinstance(image, Tensor) else np.asarray(image)).astype(np.float32)
        spacing = tuple(spacing) if spacing is not None else (1.0,) * (arr.ndim - 1)
        img, sp = self._to_nnunet(arr, spacing)
        pre = self.config_manager.preprocessor_class(verbose=False)
        data, _, props = pre.run_case_npy(
            img, None, {"spacing": sp}, self.plans_manager, self.config_manager, self.dataset_json
        )
        x = torch.from_numpy(np.ascontiguousarray(data)).float()
        del data, arr, img  # CT volumes: free every case-sized array as soon as it is not needed (x is the input)
        moments = MemberMoments(self._info.num_classes, self.measures)
        logit_sum: Tensor | None = None
        members: list[Tensor] = []
        for params in self.params:
            self._nn.network.load_state_dict(params)
            for view in self.views:
                self._nn.view_axes = tuple(view)
                z = self._nn.predict_sliding_window_return_logits(x).cpu()
                if self.nnunet_probs:  # (the export overwrites z: the first member's logits are copied)
                    logit_sum = z.float().clone() if logit_sum is None else logit_sum.add_(z)
                box = [z]
                del z  # the export frees the logits once read
                p = self._tempered(self._export(box, props))
                moments.update(p)
                if keep:
                    members.append(self._from_nnunet(p))
                del p
        del x
        nnunet = None
        if logit_sum is not None:
            box = [logit_sum.div_(self.num_members)]
            del logit_sum
            nnunet = self._from_nnunet(self._tempered(self._export(box, props)))
        maps = {k: self._from_nnunet(v[None])[0] for k, v in moments.compute(consume=True).items()}
        return MemberSummary(self._from_nnunet(moments.mean()), nnunet, maps, members)

    def _tempered(self, probs: Tensor) -> Tensor:
        """``softmax(ln p / T)`` over the classes (axis 0); ``probs`` itself for T = 1."""
        if self.temperature == 1.0:
            return probs
        return torch.softmax(torch.log(probs.clamp_min(LOG_FLOOR)) / self.temperature, 0)

    def predict_logits(self, image: np.ndarray | Tensor, spacing: Sequence[float] | None = None) -> Tensor:
        """Untempered member logits ``(M, 1, K, *sp)`` (capability ``logits``): ``ln p`` of each member's exported
        probabilities, logits up to a per-voxel constant, so ``softmax(ln p / T) = softmax(z / T)``."""
        t, self.temperature = self.temperature, 1.0
        try:
            members = self.predict_members(image, spacing, keep=True).members
        finally:
            self.temperature = t
        return torch.log(torch.stack(members, 0).clamp_min(LOG_FLOOR))[:, None]

    def stack_bytes(self, image: np.ndarray | Tensor) -> int:
        """Bytes of the member stack ``(M, K, *sp)`` float32 of ``image``."""
        return self.num_members * self._info.num_classes * int(np.prod(image.shape[1:])) * 4

    def predict(self, image: np.ndarray | Tensor, spacing: Sequence[float] | None = None) -> Predictive:
        """Predict one raw image ``(C, *sp)``: ``B = 1``, CPU, float32.

        ``stack`` (or ``auto`` under ``max_stack_bytes``): ``probs (M, 1, K, *sp)``; ``stream``: ``probs (1, 1, K,
        *sp)`` = the members' mean, with the streamed measures as ``extras["measure:<name>"]`` ``(1, 1, *sp)``
        (:data:`trustseg.core.predictive.PRECOMPUTED`; the writer takes them as they are). Both carry
        ``extras["nnunet_probs"]`` ``(1, K, *sp)``, nnU-Net's own averaged prediction (unless ``nnunet_probs`` is
        off).

        Raises:
            ConfigError: ``auto`` streams this image and a measure asked for cannot be streamed.
        """
        stack = self.samples_policy == "stack" or (
            self.samples_policy == "auto" and self.stack_bytes(image) <= self.max_stack_bytes
        )
        if not stack:
            self._check_streamable()
        s = self.predict_members(image, spacing, keep=stack)
        # each contiguous copy replaces its (permuted) source before the next one is made: one case-sized copy
        # at a time, not a second set of every array
        extras: dict[str, Tensor] = {}
        if s.nnunet is not None:
            extras["nnunet_probs"] = s.nnunet.contiguous()[None]
            s.nnunet = extras["nnunet_probs"]
        if stack:
            return Predictive(probs=torch.stack(s.members, 0)[:, None], extras=extras)
        for k in list(s.maps):
            extras[f"{PRECOMPUTED}{k}"] = s.maps.pop(k).contiguous()[None, None]
        mean, s.mean = s.mean.contiguous()[None, None], torch.empty(0)
        return Predictive(probs=mean, extras=extras)


def _nonlin_(logits: Tensor, regions: bool) -> Tensor:
    """nnU-Net's inference nonlinearity over axis 0 in place: ``softmax`` (``sigmoid`` for region-based models), one
    class-less volume of scratch instead of a ``K``-volume copy (``logits`` is overwritten unless not float32)."""
    x = logits.float()
    if regions:
        return x.sigmoid_()
    x.sub_(x.amax(0, keepdim=True)).exp_()
    return x.div_(x.sum(0, keepdim=True))


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text())


@PREDICTORS.register(
    "nnunet",
    doc="an nnU-Net v2 model folder (TRAINER__PLANS__CONFIG): members = folds x mirror views; --folds, --tta mirror",
    options=NNUNET_OPTIONS,
    capabilities=frozenset({"samples", "logits", "temperature"}),
)
def _nnunet(location: str, device: str | torch.device = "auto", **options: Any) -> NnunetPredictor:
    unknown = sorted(set(options) - NNUNET_OPTIONS)
    if unknown:
        raise ConfigError(f"nnunet: unknown option(s) {unknown}; known: {', '.join(sorted(NNUNET_OPTIONS))}")
    return NnunetPredictor(location, device, **options)


__all__ = ["CHECKPOINT_GLOBALS", "NNUNET_OPTIONS", "MemberSummary", "NnunetPredictor", "import_nnunet"]
