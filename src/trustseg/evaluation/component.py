"""The suite component protocol and the :data:`SUITE` registry.

A **case component** scores one case at a time. It declares

* ``requires``: the inputs it needs, from :data:`~trustseg.evaluation.context.REQUIREMENTS` (``hard``, ``probs``,
  ``labels``, ``spacing``, ``maps``, ``samples``, ``image``, ``qc``); the suite runs it on the cases that meet them;
* ``higher_is_better``: metric name -> ``True`` / ``False`` / ``None`` (no better direction, e.g. a volume), for
  every metric it produces;
* :meth:`SuiteComponent.per_case`: the case's values as a nested dict ``metric -> target -> item``
  (:mod:`trustseg.evaluation.results`);
* optionally a fixed-size, sum-mergeable state: :meth:`~SuiteComponent.init_state` (``None`` when stateless),
  :meth:`~SuiteComponent.update`, :meth:`~SuiteComponent.merge` and :meth:`~SuiteComponent.finalize`, which
  returns nested result sections (e.g. ``{"calibration": {...}}``).

A **dataset analysis** (:class:`DatasetAnalysis`) reads the per-case rows of every case once all are in
(image-level correlation, quality-control curves) and returns result sections.

Both kinds are registered with :func:`register`, which copies the declarations into the registry metadata
(``kind``, ``requires``, ``higher_is_better``, ``streaming``), so tools can list them without instantiating.
Adding a metric to ``trustseg evaluate`` is one registered component plus its test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from trustseg.core.registry import Registry
from trustseg.evaluation.context import REQUIREMENTS, CaseContext, SuiteConfig

#: Registered suite components (case components and dataset analyses), by name.
SUITE: Registry[type] = Registry("suite component")


class SuiteComponent:
    """Base class of a case component (module docstring). Stateless unless :meth:`init_state` is overridden.

    Args:
        cfg: The suite settings.
        classes: Class names, background first.
        raters: Rater names.
    """

    name: ClassVar[str] = ""
    order: ClassVar[int] = 100
    requires: ClassVar[frozenset[str]] = frozenset({"hard", "labels"})
    higher_is_better: ClassVar[Mapping[str, bool | None]] = {}

    def __init__(self, cfg: SuiteConfig, classes: Sequence[str], raters: Sequence[str]):
        self.cfg, self.classes, self.raters = cfg, list(classes), list(raters)

    def applies(self, ctx: CaseContext) -> bool:
        """Whether the case meets :attr:`requires`."""
        return self.requires <= ctx.available

    def per_case(self, ctx: CaseContext) -> dict[str, Any]:
        """The case's values, ``metric -> target -> item -> float``."""
        return {}

    def init_state(self) -> Any:
        """An empty state (``None``: the component keeps none)."""
        return None

    def update(self, state: Any, ctx: CaseContext) -> Any:
        """Fold one case into ``state`` and return it."""
        return state

    def merge(self, a: Any, b: Any) -> Any:
        """The state of the union of the cases of ``a`` and ``b``."""
        return a

    def finalize(self, state: Any) -> dict[str, Any]:
        """Result sections from the final state."""
        return {}


class DatasetAnalysis:
    """Base class of a dataset-level analysis over the per-case rows (module docstring).

    Args:
        cfg: The suite settings.
        classes: Class names, background first.
        raters: Rater names.
    """

    name: ClassVar[str] = ""
    order: ClassVar[int] = 100
    reads: ClassVar[tuple[str, ...]] = ()
    higher_is_better: ClassVar[Mapping[str, bool | None]] = {}

    def __init__(self, cfg: SuiteConfig, classes: Sequence[str], raters: Sequence[str]):
        self.cfg, self.classes, self.raters = cfg, list(classes), list(raters)

    def analyse(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Result sections from the per-case rows (nested, as :meth:`SuiteComponent.per_case` returns them)."""
        raise NotImplementedError


def register(cls: type) -> type:
    """Class decorator registering a component or analysis under its ``name`` with its declarations as metadata."""
    if issubclass(cls, SuiteComponent):
        unknown = set(cls.requires) - REQUIREMENTS
        if unknown:
            raise ValueError(f"suite component {cls.name!r} requires unknown inputs {sorted(unknown)}")
        streaming = cls.init_state is not SuiteComponent.init_state
        SUITE.add(
            cls.name,
            cls,
            kind="case",
            requires=frozenset(cls.requires),
            higher_is_better=dict(cls.higher_is_better),
            streaming=streaming,
            order=cls.order,
        )
    elif issubclass(cls, DatasetAnalysis):
        SUITE.add(
            cls.name,
            cls,
            kind="dataset",
            requires=frozenset(),
            reads=tuple(cls.reads),
            higher_is_better=dict(cls.higher_is_better),
            streaming=False,
            order=cls.order,
        )
    else:
        raise TypeError(f"{cls!r} is neither a SuiteComponent nor a DatasetAnalysis")
    return cls
