"""What every suite component reads: the settings (:class:`SuiteConfig`) and one case's inputs, checked and with
the shared derived quantities computed once (:class:`CaseContext`).

Conventions fixed here, for every component:

* the hard prediction is ``argmax_k p̄_k`` (ties to the lower class);
* the majority vote gives ties to the lower class; the soft label is ``ȳ_k = mean_r 1[y^(r) = k]``;
* the rater disagreement is ``Σ_k ȳ_k (1 − ȳ_k)``; the error mask is ``hard ≠ majority vote``;
* every uncertainty map is oriented "higher = more uncertain": a certainty measure (``confidence``) enters as
  ``1 − value`` and is named :func:`oriented_name` (``one_minus_confidence``) wherever it appears in the results;
* a field-of-view mask (``valid``) leaves the voxels outside it out of every metric: there the probabilities and
  samples become background with certainty, the labels background and the maps 0, so that counts, overlaps,
  volumes and surfaces see only the inside; the voxel statistics (calibration, map-vs-disagreement correlations,
  error AUROC/AUPRC, UEO, image means) read only the inside voxels (:meth:`CaseContext.voxels`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from trustseg.core.errors import DataError
from trustseg.data.rater_codes import CodeTables, code_dtype, code_tables, num_codes, rater_code, uses_codes
from trustseg.data.targets import majority_vote, rater_disagreement, soft_label
from trustseg.measures.registry import MEASURES, as_uncertainty, is_certainty
from trustseg.metrics.voxel_stats import CHUNK, spans

#: What a component may require (:attr:`~trustseg.evaluation.component.SuiteComponent.requires`).
REQUIREMENTS = frozenset({"hard", "probs", "labels", "spacing", "maps", "samples", "image", "qc"})


def background_outside(probs: Tensor, outside: Tensor) -> Tensor:
    """``probs`` ``(..., K, *spatial)`` with every voxel of ``outside`` ``(*spatial)`` set to background with
    certainty (1 for class 0, 0 for the others).

    Example:
        >>> p = torch.full((2, 1, 3), 0.5)
        >>> background_outside(p, torch.tensor([[True, False, False]]))[:, 0, 0].tolist()
        [1.0, 0.0]
    """
    k = probs.shape[-outside.dim() - 1]
    bg = torch.zeros(k, *([1] * outside.dim()), dtype=probs.dtype)
    bg[0] = 1
    return torch.where(outside, bg, probs)


def first_argmax(probs: Tensor, out: Tensor) -> Tensor:
    """``out[:] = argmax_k probs[k]`` of ``(K, n)`` values (the first maximum, i.e. the lower class, on ties), by
    ``K − 1`` row comparisons: the same values as ``probs.argmax(0)`` for finite values, without its slow
    reduction over the strided class axis (one chunk of float32 scratch).

    Example:
        >>> first_argmax(torch.tensor([[0.2, 0.5, 0.9], [0.8, 0.5, 0.1]]), torch.empty(3, dtype=torch.uint8)).tolist()
        [1, 0, 0]
    """
    out.zero_()
    best = probs[0].clone()
    for k in range(1, probs.shape[0]):
        gt = probs[k] > best  # strictly greater: an equal later class does not win
        out.masked_fill_(gt, k)
        torch.maximum(best, probs[k], out=best)
    return out


def oriented_name(measure: str) -> str:
    """The results name of a measure's map oriented "higher = more uncertain".

    Example:
        >>> oriented_name("entropy"), oriented_name("confidence")
        ('entropy', 'one_minus_confidence')
    """
    return f"one_minus_{measure}" if _is_certainty(measure) else measure


def _is_certainty(measure: str) -> bool:
    """A registered certainty measure (a map of another name, e.g. from another tool, is an uncertainty)."""
    return measure in MEASURES and is_certainty(measure)


def _finite_chunk(x: Tensor) -> bool:
    """Whether every value of ``x`` is finite, from its minimum and maximum (NaN propagates through them): one
    reduction, no bool copy."""
    if not x.numel():
        return True
    lo, hi = torch.aminmax(x)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


class CaseInputError(DataError):
    """A case's input the suite cannot score, with structured fields so that callers name the culprit file.

    Args:
        problem: What is wrong (the message starts with ``case <id>:``).
        case_id: The case.
        source: Which input: ``"probs"``, ``"labels"``, ``"samples"``, ``"image"``, ``"map"`` or ``"qc"``.
        measure: The measure name when ``source == "map"``.
        path: The file, when known (:meth:`at` adds it).
    """

    def __init__(
        self, problem: str, *, case_id: str, source: str, measure: str | None = None, path: str | Path | None = None
    ):
        self.case_id, self.source, self.measure = case_id, source, measure
        super().__init__(problem, path)

    def at(self, path: str | Path) -> CaseInputError:
        """The same error naming ``path``."""
        return CaseInputError(self.problem, case_id=self.case_id, source=self.source, measure=self.measure, path=path)


@dataclass(frozen=True)
class SuiteConfig:
    """Evaluation settings.

    Attributes:
        bins: Calibration bins.
        nsd_tolerance: NSD tolerance in spacing units (mm when spacing is in mm).
        curvas_modes: CURVAS modes to report (``volumetric``, ``challenge``; challenge for 3D cases only).
        per_rater_calibration: Also accumulate calibration against each rater.
        qc_aggregators: Image-level aggregations used for image-level correlation and quality control.
        empty: Dice/IoU of a class absent from both maps, for every overlap entry (``nan``: left out of means,
            the default; ``one``; ``zero``). The quality-control Dice ``qc_dice`` always counts it as 1.
        gradient_band: Half-width of the boundary band of SURE's gradient metrics (UCC_g, UR_g).
        qc_failure_threshold: A case fails when its QC Dice is below this (failure AUROC, catch rate of the
            predicted quality, ``quality_prediction``).
        components: Names of the registered components to run (``None``: all of them).
        exact: Use the exact sort-based voxel statistics (rank correlations, error AUROC/AUPRC, UEO) instead of
            the one-pass streaming ones computed from fine joint histograms (``docs/evaluation.md`` gives the
            documented error bounds of the streaming path; ``False``, the default, streams).
    """

    bins: int = 15
    nsd_tolerance: float = 2.0
    curvas_modes: tuple[str, ...] = ("volumetric", "challenge")
    per_rater_calibration: bool = True
    qc_aggregators: tuple[str, ...] = ("mean", "fg_mean")
    empty: str = "nan"
    gradient_band: float = 1.0
    qc_failure_threshold: float = 0.7
    components: tuple[str, ...] | None = None
    exact: bool = False


class CaseContext:
    """One case's checked inputs and the quantities every component shares, each computed at most once.

    Args:
        case_id: The case.
        classes: Class names, background first (K of them).
        raters: Rater names (R of them).
        probs: ``(K, *spatial)`` predictive mean.
        labels: ``(R, *spatial)`` rater class maps.
        spacing: Voxel size per spatial axis (1 per axis when not given).
        maps: Measure name -> ``(*spatial)`` map, as the measure defines it.
        samples: ``(M, K, *spatial)`` sample probabilities (used when ``M > 1``).
        image: ``(C, *spatial)`` input image (SURE's gradient metrics).
        qc: The case's predicted quality, its ``qc`` entry of ``predictions.json`` (``predicted_dice``, ...).
        valid: ``(*spatial)`` bool field of view: only the voxels inside are scored (module docstring); ``None``
            or all-true: every voxel.

    Raises:
        CaseInputError: shapes that do not match, or NaN / infinite probabilities or maps.
    """

    def __init__(
        self,
        case_id: str,
        classes: list[str],
        raters: list[str],
        probs: Tensor,
        labels: Tensor,
        spacing: tuple[float, ...] | None = None,
        maps: dict[str, Tensor] | None = None,
        samples: Tensor | None = None,
        image: Tensor | None = None,
        qc: dict[str, Any] | None = None,
        valid: Tensor | None = None,
    ):
        self.case_id, self.classes, self.raters = case_id, list(classes), list(raters)
        self.cache: dict[Any, Any] = {}  # per-case values a component computes once and reuses (its own keys)
        self.num_classes = len(self.classes)
        self.probs = torch.as_tensor(probs).float()
        self.labels = torch.as_tensor(labels).long()
        k, sp = self.num_classes, tuple(self.labels.shape[1:])
        if self.probs.shape[0] != k or tuple(self.probs.shape[1:]) != sp or self.labels.shape[0] != len(self.raters):
            raise self.error(
                f"probabilities {tuple(self.probs.shape)} and labels {tuple(self.labels.shape)} do not match "
                f"(K={k}, R={len(self.raters)}, labels (R, *spatial))",
                "probs",
            )
        flat = self.probs.reshape(k, -1)
        if not all(_finite_chunk(flat[:, a:b]) for a, b in spans(flat.shape[1], CHUNK)):
            raise self.error("probabilities contain NaN or infinite values", "probs")
        self.spatial_dims = len(sp)
        self.spacing = tuple(float(s) for s in spacing) if spacing is not None else (1.0,) * self.spatial_dims
        self.samples = None if samples is None else torch.as_tensor(samples)
        if self.samples is not None and tuple(self.samples.shape[1:]) != tuple(self.probs.shape):
            raise self.error(f"samples {tuple(self.samples.shape)} are not (M, *{tuple(self.probs.shape)})", "samples")
        self.image = None if image is None else torch.as_tensor(image)
        if self.image is not None and tuple(self.image.shape[1:]) != sp:
            raise self.error(f"image {tuple(self.image.shape)} is not (C, *{sp})", "image")
        if qc is not None and not isinstance(qc, dict):
            raise self.error(f"the qc entry must be an object, got {type(qc).__name__}", "qc")
        self.qc = None if qc is None else dict(qc)
        self.raw_maps = {name: torch.as_tensor(m) for name, m in (maps or {}).items()}
        for name, m in self.raw_maps.items():
            if tuple(m.shape) != sp or (m.is_floating_point() and not _finite_chunk(m)):
                raise self.error(f"map {name!r} has shape {tuple(m.shape)} or non-finite values", "map", name)
        self.valid: Tensor | None = None
        if valid is not None:
            v = torch.as_tensor(valid).bool()
            if tuple(v.shape) != sp:
                raise self.error(f"field-of-view mask {tuple(v.shape)} is not the labels' {sp}", "mask")
            if not v.any():
                raise self.error("the field-of-view mask is empty: nothing to score", "mask")
            if not v.all():
                self.valid, outside = v, ~v
                self.probs = background_outside(self.probs, outside)
                self.labels = self.labels.masked_fill(outside, 0)
                if self.samples is not None:
                    self.samples = background_outside(self.samples.float(), outside)

    def voxels(self, t: Tensor) -> Tensor:
        """The voxels of ``t`` ``(..., *spatial)`` inside the field of view, as ``(..., N)`` (``t`` itself when
        the case has no field-of-view mask): what voxel statistics read."""
        return t if self.valid is None else t[..., self.valid]

    def error(self, problem: str, source: str, measure: str | None = None) -> CaseInputError:
        """A :class:`CaseInputError` about this case."""
        return CaseInputError(f"case {self.case_id}: {problem}", case_id=self.case_id, source=source, measure=measure)

    @property
    def available(self) -> frozenset[str]:
        """The requirements this case meets (``samples`` needs ``M > 1``)."""
        have = {"hard", "probs", "labels", "spacing"}
        if self.raw_maps:
            have.add("maps")
        if self.samples is not None and self.samples.shape[0] > 1:
            have.add("samples")
        if self.image is not None:
            have.add("image")
        if self.qc is not None:
            have.add("qc")
        return frozenset(have)

    @property
    def foreground(self) -> list[str]:
        """Foreground class names (``classes[1:]``)."""
        return self.classes[1:]

    @property
    def index_dtype(self) -> torch.dtype:
        """The smallest integer type holding a class index: uint8 for ``K ≤ 256`` (1 byte per voxel), else int64.
        The hard map and the majority vote are kept in it; metrics take any integer type and widen per chunk."""
        return torch.uint8 if self.num_classes <= 256 else torch.long  # as chunked_argmax

    @cached_property
    def hard(self) -> Tensor:
        """``(*spatial)`` ``argmax_k p̄_k`` in :attr:`index_dtype`, chunk by chunk (:func:`first_argmax`: no
        transposed copy of the probabilities)."""
        flat = self.probs.reshape(self.num_classes, -1)
        out = torch.empty(flat.shape[1], dtype=self.index_dtype)
        for a, b in spans(flat.shape[1], CHUNK):
            first_argmax(flat[:, a:b], out[a:b])
        return out.view(self.probs.shape[1:])

    @property
    def code_tables(self) -> CodeTables | None:
        """The per-code rater targets (:mod:`trustseg.data.rater_codes`) when ``K^R`` is small enough, else None."""
        k, r = self.num_classes, len(self.raters)
        return code_tables(k, r) if uses_codes(k, r) else None

    @property
    def num_codes(self) -> int:
        """``C = K^R``, the number of rater codes."""
        return num_codes(self.num_classes, len(self.raters))

    @cached_property
    def codes(self) -> Tensor | None:
        """``(*spatial)`` rater code ``Σ_r y^(r) K^r`` of every voxel (uint8 for ``K^R ≤ 256``), one pass over the
        label maps, chunk by chunk; ``None`` when :attr:`code_tables` is None. The majority vote, the soft label and
        the disagreement are lookups of it (the same values as their formulas, :mod:`trustseg.data.rater_codes`).

        Raises:
            CaseInputError: labels outside ``[0, K)``.
        """
        if self.code_tables is None:
            return None
        flat = self.labels.reshape(self.labels.shape[0], -1)
        out = torch.empty(flat.shape[1], dtype=code_dtype(self.num_classes, len(self.raters)))
        try:
            for a, b in spans(flat.shape[1], CHUNK):
                rater_code(flat[:, a:b], self.num_classes, out=out[a:b])
        except DataError as e:
            raise self.error(e.problem, "labels") from None
        return out.view(self.labels.shape[1:])

    def _lookup(self, table: Tensor, out: Tensor) -> Tensor:
        """``out[..., i] = table[..., code_i]`` over chunks of the flattened voxels; reshaped to
        ``(*table_leading, *spatial)``."""
        assert self.codes is not None
        codes = self.codes.reshape(-1)
        flat_out = out.view(*out.shape[: out.dim() - 1], -1) if out.dim() > 1 else out
        for a, b in spans(codes.numel(), CHUNK):
            torch.index_select(table, table.dim() - 1, codes[a:b].long(), out=flat_out[..., a:b])
        return flat_out.view(*out.shape[: out.dim() - 1], *self.labels.shape[1:])

    def _per_voxel(self, fn: Any, out: Tensor) -> Tensor:
        """``out[..., a:b] = fn(labels[:, a:b])`` over chunks of voxels (flattened); ``out`` reshaped to
        ``(*out_leading, *spatial)``. Per-voxel functions of the rater maps give the same values chunk by chunk, with
        temporaries (one-hot votes, float copies) of one chunk only."""
        flat_labels = self.labels.reshape(self.labels.shape[0], -1)
        flat_out = out.view(*out.shape[: out.dim() - 1], -1) if out.dim() > 1 else out
        for a, b in spans(flat_labels.shape[1], CHUNK):
            flat_out[..., a:b] = fn(flat_labels[:, a:b])
        return flat_out.view(*out.shape[: out.dim() - 1], *self.labels.shape[1:])

    @cached_property
    def majority(self) -> Tensor:
        """``(*spatial)`` majority vote of the raters (ties to the lower class) in :attr:`index_dtype`, chunk by
        chunk."""
        n, k, tab = self.labels[0].numel(), self.num_classes, self.code_tables
        out = torch.empty(n, dtype=self.index_dtype)
        if tab is not None and self.codes is not None:
            return self._lookup(tab.majority.to(self.index_dtype), out)
        return self._per_voxel(lambda lab: majority_vote(lab, k), out)

    @cached_property
    def soft(self) -> Tensor:
        """``(K, *spatial)`` float32 soft label, chunk by chunk. The suite's components do not keep it (it is as
        large as the probabilities): they read :meth:`soft_class` or :meth:`soft_chunk`."""
        n, k, tab = self.labels[0].numel(), self.num_classes, self.code_tables
        if tab is not None and self.codes is not None:
            return self._lookup(tab.soft, torch.empty(k, n))
        return self._per_voxel(lambda lab: soft_label(lab, k), torch.empty(k, n))

    def soft_class(self, k: int) -> Tensor:
        """``(*spatial)`` float32 soft label of class ``k``, ``ȳ_k`` (row ``k`` of :attr:`soft`, same values), chunk
        by chunk and not kept."""
        n, kk, tab = self.labels[0].numel(), self.num_classes, self.code_tables
        if tab is not None and self.codes is not None:
            return self._lookup(tab.soft[k], torch.empty(n))
        return self._per_voxel(lambda lab: soft_label(lab, kk)[k], torch.empty(n))

    def soft_chunk(self, a: int, b: int) -> Tensor:
        """``(K, b − a)`` float32 soft label of the flattened voxels ``a:b`` (columns of :attr:`soft`)."""
        tab = self.code_tables
        if tab is not None and self.codes is not None:
            return tab.soft[:, self.codes.reshape(-1)[a:b].long()]
        return soft_label(self.labels.reshape(self.labels.shape[0], -1)[:, a:b], self.num_classes)

    @cached_property
    def disagreement(self) -> Tensor:
        """``(*spatial)`` float32 rater disagreement ``Σ_k ȳ_k (1 − ȳ_k)``, chunk by chunk."""
        n, k, tab = self.labels[0].numel(), self.num_classes, self.code_tables
        if tab is not None and self.codes is not None:
            return self._lookup(tab.disagreement, torch.empty(n))
        return self._per_voxel(lambda lab: rater_disagreement(lab, k).float(), torch.empty(n))

    @cached_property
    def error_mask(self) -> Tensor:
        """``(*spatial)`` bool, ``hard ≠ majority``."""
        return self.hard != self.majority

    @cached_property
    def maps(self) -> dict[str, Tensor]:
        """Oriented name (:func:`oriented_name`) -> ``(*spatial)`` float32 map, higher = more uncertain."""
        out = {
            oriented_name(name): as_uncertainty(name, m.float()) if _is_certainty(name) else m.float()
            for name, m in self.raw_maps.items()
        }
        if self.valid is not None:
            out = {name: m.masked_fill(~self.valid, 0.0) for name, m in out.items()}
        return out

    @cached_property
    def measure_of(self) -> dict[str, str]:
        """Oriented name -> the measure it comes from."""
        return {oriented_name(name): name for name in self.raw_maps}
