"""The full evaluation suite: every registered component (:data:`~trustseg.evaluation.component.SUITE`) over a
set of predicted cases.

:class:`EvaluationSuite` takes one case at a time (probabilities, optional samples, uncertainty maps, image,
rater labels, spacing), builds its :class:`~trustseg.evaluation.context.CaseContext` once and runs every case
component whose requirements the case meets. It keeps only

* each component's fixed-size, sum-mergeable state (calibration histograms, pooled Pearson sums);
* the nested per-case values (a handful of numbers per case) for the dataset-level analyses.

So a suite streams over any number of large volumes, and two suites over disjoint cases :meth:`merge
<EvaluationSuite.merge>` into the suite of all of them. :meth:`EvaluationSuite.result` returns one JSON-able
dict (the schema is in ``docs/evaluation.md`` and :mod:`trustseg.evaluation.results`).

Example:
    >>> import torch
    >>> suite = EvaluationSuite(["background", "organ"], ["r0", "r1"], SuiteConfig(components=("overlap",)))
    >>> labels = torch.zeros(2, 4, 4, dtype=torch.long)
    >>> labels[:, 1:3, 1:3] = 1
    >>> probs = torch.nn.functional.one_hot(labels[0], 2).movedim(-1, 0).float()
    >>> suite.add_case("a", probs, labels)["dice"]["majority"]
    {'organ': 1.0, 'mean': 1.0}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from torch import Tensor

import trustseg.evaluation.components  # noqa: F401 (registers the components)
from trustseg.core.errors import ConfigError, DataError
from trustseg.core.memory import available_bytes, is_allocation_failure
from trustseg.evaluation.component import SUITE, DatasetAnalysis, SuiteComponent
from trustseg.evaluation.context import CaseContext, CaseInputError, SuiteConfig
from trustseg.evaluation.memory import case_memory_need, check_case_memory, memory_error
from trustseg.evaluation.results import check_names, count_tree, get, mean_tree, merge

#: Headline paths (``metric, target, item``; ``*`` = every item) read from the means over cases. The pooled
#: calibration numbers come from the calibration component's state.
HEADLINE = (
    ("dice", "majority", "*"),
    ("dice", "consensus", "mean"),
    ("dice", "mean_rater", "mean"),
    ("hd95", "majority", "mean"),
    ("assd", "majority", "mean"),
    ("nsd", "majority", "mean"),
    ("qubiq_soft_dice", "soft", "mean"),
    ("ged2_iou", "raters", "all"),
    ("sqrt_ged2_iou", "raters", "all"),
)


def _ordered(names: Sequence[str]) -> list[str]:
    return sorted(names, key=lambda n: (SUITE.meta(n)["order"], n))


class EvaluationSuite:
    """Accumulates every registered component over cases.

    Args:
        classes: Class names, background first (K = len(classes)).
        raters: Rater names, or their number R (names ``rater_0`` ... then).
        cfg: Settings (which components run: ``cfg.components``, default all).
        names_from: The file that defines the class and rater names (``dataset.json``), named when a name cannot
            be used as a results key.

    Raises:
        DataError: a class or rater name containing ``/`` or equal to a reserved key.
        UnknownNameError: an unknown component in ``cfg.components``.
    """

    def __init__(
        self,
        classes: Sequence[str],
        raters: int | Sequence[str],
        cfg: SuiteConfig | None = None,
        names_from: str | Path | None = None,
    ):
        self.classes = list(classes)
        self.raters = [f"rater_{r}" for r in range(raters)] if isinstance(raters, int) else list(raters)
        check_names(self.classes, "class", names_from)
        check_names(self.raters, "rater", names_from)
        if len(set(self.raters)) != len(self.raters):
            raise ConfigError(f"rater names must be distinct, got {self.raters}")
        self.cfg = cfg or SuiteConfig()
        names = _ordered(self.cfg.components if self.cfg.components is not None else SUITE.names())
        made = [SUITE.get(n)(self.cfg, self.classes, self.raters) for n in names]
        self.components: list[SuiteComponent] = [c for c in made if isinstance(c, SuiteComponent)]
        self.analyses: list[DatasetAnalysis] = [c for c in made if isinstance(c, DatasetAnalysis)]
        self.states: dict[str, Any] = {c.name: c.init_state() for c in self.components}
        self._rows: list[dict[str, Any]] = []

    @property
    def num_raters(self) -> int:
        """R."""
        return len(self.raters)

    def context(self, case_id: str, probs: Tensor, labels: Tensor, **inputs: Any) -> CaseContext:
        """The checked :class:`CaseContext` of one case (``inputs``: ``spacing``, ``maps``, ``samples``, ``image``,
        ``qc``, ``valid``)."""
        return CaseContext(case_id, self.classes, self.raters, probs, labels, **inputs)

    def add_case(
        self,
        case_id: str,
        probs: Tensor,
        labels: Tensor,
        spacing: tuple[float, ...] | None = None,
        maps: dict[str, Tensor] | None = None,
        samples: Tensor | None = None,
        image: Tensor | None = None,
        qc: dict[str, Any] | None = None,
        valid: Tensor | None = None,
    ) -> dict[str, Any]:
        """Score one case and fold it into the running state.

        Args:
            case_id: Case id.
            probs: ``(K, *spatial)`` predictive mean.
            labels: ``(R, *spatial)`` rater class maps.
            spacing: Voxel size per spatial axis (1 per axis when not given).
            maps: Measure name -> ``(*spatial)`` map, as the measure defines it (``confidence`` is a certainty).
            samples: Optional ``(M, K, *spatial)`` sample probabilities (GED², Hungarian IoU).
            image: Optional ``(C, *spatial)`` input image (SURE's gradient metrics).
            qc: Optional predicted quality of the case (its ``qc`` entry of ``predictions.json``).
            valid: Optional ``(*spatial)`` bool field of view: the voxels outside are not scored
                (:class:`~trustseg.evaluation.context.CaseContext`).

        Returns:
            The case's row: ``{"case": id, metric: {target: {item: value}}}``.

        Raises:
            CaseInputError: inputs that do not match or are not finite (it names the input, and the map).
            DataError: the case needs more memory than is available (:mod:`trustseg.evaluation.memory`: the
                estimate before starting, or an allocation that failed), naming the case, both sizes and what
                helps.
        """
        check_case_memory(case_id, tuple(labels.shape[1:]), len(self.classes), len(maps or {}))
        try:
            return self._add_case(case_id, probs, labels, spacing, maps, samples, image, qc, valid)
        except (MemoryError, RuntimeError) as e:  # an allocator failure: the same message as the estimate's
            if not is_allocation_failure(e):
                raise
            need = case_memory_need(tuple(labels.shape[1:]), len(self.classes), len(maps or {}))
            raise memory_error(case_id, need, available_bytes(), f"an allocation failed: {e}") from None

    def _add_case(
        self,
        case_id: str,
        probs: Tensor,
        labels: Tensor,
        spacing: tuple[float, ...] | None,
        maps: dict[str, Tensor] | None,
        samples: Tensor | None,
        image: Tensor | None,
        qc: dict[str, Any] | None,
        valid: Tensor | None,
    ) -> dict[str, Any]:
        ctx = self.context(
            case_id, probs, labels, spacing=spacing, maps=maps, samples=samples, image=image, qc=qc, valid=valid
        )
        row: dict[str, Any] = {"case": case_id}
        for comp in self.components:
            if not comp.applies(ctx):
                continue
            try:
                merge(row, comp.per_case(ctx))
                if self.states[comp.name] is not None:
                    self.states[comp.name] = comp.update(self.states[comp.name], ctx)
            except CaseInputError:
                raise
            except DataError as e:  # a metric's own input check: the probabilities unless it says otherwise
                raise ctx.error(f"{e.problem} ({comp.name})", "probs") from None
        self._rows.append(row)
        return row

    def merge(self, other: EvaluationSuite) -> EvaluationSuite:
        """Fold the cases of ``other`` (same classes, raters and settings) into this suite; returns ``self``."""
        if (other.classes, other.raters, other.cfg) != (self.classes, self.raters, self.cfg):
            raise ConfigError("only suites with the same classes, raters and settings can be merged")
        for comp in self.components:
            if self.states[comp.name] is not None:
                self.states[comp.name] = comp.merge(self.states[comp.name], other.states[comp.name])
        self._rows.extend(other._rows)
        return self

    def rows(self) -> list[dict[str, Any]]:
        """Per-case rows (nested)."""
        return list(self._rows)

    def higher_is_better(self) -> dict[str, bool | None]:
        """Metric name -> its better direction (``None``: none), over every component that runs."""
        out: dict[str, bool | None] = {}
        every: list[SuiteComponent | DatasetAnalysis] = [*self.components, *self.analyses]
        for comp in every:
            out.update(comp.higher_is_better)
        return out

    def summary(self, mean: dict[str, Any], sections: dict[str, Any]) -> dict[str, Any]:
        """The headline numbers: :data:`HEADLINE` from the means over cases, plus the components' ``summary``."""
        out: dict[str, Any] = {}
        for metric, target, item in HEADLINE:
            values = get(mean, (metric, target), None)
            if not values:
                continue
            picked = values if item == "*" else {item: values[item]} if item in values else {}
            if picked:
                merge(out, {metric: {target: picked}})
        return merge(out, sections.get("summary", {}))

    def result(self) -> dict[str, Any]:
        """Everything, JSON-able: summary, means and counts over cases, and the components' sections
        (calibration, uncertainty, quality control)."""
        rows = self._rows
        sections: dict[str, Any] = {"calibration": {}, "uncertainty": {}, "quality_control": {}}
        for comp in self.components:
            if self.states[comp.name] is not None:
                merge(sections, comp.finalize(self.states[comp.name]))
        for analysis in self.analyses:
            merge(sections, analysis.analyse(rows))
        mean = mean_tree(rows)
        config = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.cfg).items()}
        every: list[SuiteComponent | DatasetAnalysis] = [*self.components, *self.analyses]
        return {
            "classes": self.classes,
            "raters": self.raters,
            "num_raters": self.num_raters,
            "cases": [r["case"] for r in rows],
            "num_cases": len(rows),
            "config": config,
            "components": [c.name for c in every],
            "higher_is_better": self.higher_is_better(),
            "summary": self.summary(mean, sections),
            "mean": mean,
            "count": count_tree(rows),
            **{k: v for k, v in sections.items() if k != "summary"},
        }
