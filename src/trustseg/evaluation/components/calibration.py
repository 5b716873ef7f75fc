"""Calibration: fixed-size, sum-mergeable histogram states against the majority vote, the soft label and each
rater, and the per-case top-label ECE and NLL against the majority vote.

Equal-width bins (:attr:`SuiteConfig.bins <trustseg.evaluation.context.SuiteConfig>`, 15), left-closed edges;
top-label and class-wise ECE/MCE, approximate streaming ACE, NLL and Brier (sum over classes), as
:mod:`trustseg.metrics.calibration_state` defines them. The ``calibration`` section and the summary's ECE, NLL
and Brier are pooled over every voxel of every case (the streamed state), not means over cases.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from trustseg.evaluation.component import SuiteComponent, register
from trustseg.evaluation.context import CaseContext
from trustseg.evaluation.results import finite
from trustseg.metrics.calibration import empty_state, merge_states
from trustseg.metrics.calibration_codes import coded_states, fits
from trustseg.metrics.calibration_state import calibration_state, metrics_from_state, reliability_from_state
from trustseg.metrics.voxel_stats import CHUNK, spans

State = dict[str, dict[str, Tensor]]


@register
class Calibration(SuiteComponent):
    """Calibration against ``majority``, ``soft`` and each rater (state), and ``ece_toplabel``/``nll`` per case.

    Per-case values: ``ece_toplabel/majority/all``, ``nll/majority/all``. Sections: ``calibration/<target>``
    (every metric of :func:`~trustseg.metrics.calibration_state.metrics_from_state` plus ``reliability``) and the
    summary's ``ece_toplabel/{majority,soft}``, ``ece_classwise/majority``, ``nll/soft``, ``brier/soft``.
    """

    name = "calibration"
    order = 2
    requires = frozenset({"probs", "labels"})
    higher_is_better = {"ece_toplabel": False, "nll": False}

    def target_chunk(self, ctx: CaseContext, a: int, b: int) -> dict[str, Tensor]:
        """Target name -> the hard map or soft label of the flattened voxels ``a:b`` (the soft label is computed
        for these voxels only: no case-sized copy of it is kept)."""
        out = {"majority": ctx.majority.reshape(-1)[a:b], "soft": ctx.soft_chunk(a, b)}
        if self.cfg.per_rater_calibration:
            flat = ctx.labels.reshape(len(ctx.raters), -1)
            out.update({rater: flat[r, a:b] for r, rater in enumerate(ctx.raters)})
        return out

    def coded_case_states(self, ctx: CaseContext) -> State | None:
        """Every target's state from one pass over the probabilities (:func:`~trustseg.metrics.calibration_codes.
        coded_states`: the targets are tables of the rater codes), or None when the case has no codes or the key
        space is too large. With a field of view, only its voxels enter."""
        tables = ctx.code_tables
        if tables is None or ctx.codes is None or not fits(ctx.num_classes, ctx.num_codes, self.cfg.bins):
            return None
        targets = {"majority": tables.majority, "soft": tables.soft}
        if self.cfg.per_rater_calibration:
            targets.update({rater: tables.labels[r] for r, rater in enumerate(ctx.raters)})
        probs, hard, code = ctx.probs.reshape(ctx.num_classes, -1), ctx.hard.reshape(-1), ctx.codes.reshape(-1)
        valid = None if ctx.valid is None else ctx.valid.reshape(-1)
        # half-size chunks: per-thread temporaries of a few float64/int64 chunk copies
        return coded_states(probs, hard, code, targets, bins=self.cfg.bins, valid=valid, chunk=min(CHUNK, 1 << 17))

    def case_states(self, ctx: CaseContext) -> State:
        """The case's states per target, computed once per case (kept in the context): from one pass over the
        probabilities for all targets (:meth:`coded_case_states`), else per target, accumulated over chunks of
        :data:`~trustseg.metrics.voxel_stats.CHUNK` voxels (the states are sums, so chunking changes only the
        float64 summation order); with a field of view only its voxels enter."""
        key = (self.name, "states")
        if key not in ctx.cache:
            ctx.cache[key] = self.coded_case_states(ctx)
        if ctx.cache[key] is None:
            probs = ctx.probs.reshape(ctx.num_classes, -1)
            valid = None if ctx.valid is None else ctx.valid.reshape(-1)
            states: State | None = None
            for a, b in spans(probs.shape[1], CHUNK):
                p, tgt = probs[:, a:b], self.target_chunk(ctx, a, b)
                if valid is not None:
                    keep = valid[a:b]
                    if not keep.any():
                        continue
                    p, tgt = p[:, keep], {name: t[..., keep] for name, t in tgt.items()}
                got = {name: calibration_state(p, t, bins=self.cfg.bins) for name, t in tgt.items()}
                states = got if states is None else self.merge(states, got)
            ctx.cache[key] = states
        return ctx.cache[key]

    def per_case(self, ctx: CaseContext) -> dict[str, Any]:
        m = metrics_from_state(self.case_states(ctx)["majority"], self.cfg.bins)
        return {
            "ece_toplabel": {"majority": {"all": finite(m["ece_toplabel"])}},
            "nll": {"majority": {"all": finite(m["nll"])}},
        }

    def init_state(self) -> State:
        names = ["majority", "soft"] + (list(self.raters) if self.cfg.per_rater_calibration else [])
        return {name: empty_state(len(self.classes), self.cfg.bins) for name in names}

    def update(self, state: State, ctx: CaseContext) -> State:
        return self.merge(state, self.case_states(ctx))

    def merge(self, a: State, b: State) -> State:
        return {name: merge_states(a[name], b[name]) for name in a}

    def finalize(self, state: State) -> dict[str, Any]:
        cal = {}
        for name, st in state.items():
            m = metrics_from_state(st, self.cfg.bins)
            rel = reliability_from_state(st, self.cfg.bins)
            m["reliability"] = {k: [None if not math.isfinite(x) else x for x in v.tolist()] for k, v in rel.items()}
            cal[name] = m
        pick = [
            ("ece_toplabel", "majority"),
            ("ece_classwise", "majority"),
            ("ece_toplabel", "soft"),
            ("nll", "soft"),
            ("brier", "soft"),
        ]
        summary: dict[str, Any] = {}
        for metric, target in pick:
            summary.setdefault(metric, {})[target] = {"all": cal[target][metric]}
        return {"calibration": cal, "summary": summary}
