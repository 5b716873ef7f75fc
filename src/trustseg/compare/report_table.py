"""The summary table of the comparison report: one row per method of a dataset, ``mean ± sd`` over seeds and the
paired-bootstrap CI of the difference to the baseline, the best value of every column marked (★ and bold, so it
reads without colour) according to the metric's ``higher_is_better``. Headers sort the rows (inline JS)."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from trustseg.reports.html import fmt

#: Cost columns shown after the metrics (lower is better for all of them): key -> label.
COST_COLUMNS = {
    "params": "parameters",
    "train_s": "train s",
    "inference_rel_forward": "inference / forward",
    "peak_rss_mb": "peak RSS MB",
}


def _mean(cell: Any) -> float | None:
    if not isinstance(cell, Mapping):
        return None if cell is None else float(cell)
    m = cell.get("mean")
    return None if m is None or (isinstance(m, float) and math.isnan(m)) else float(m)


def best_methods(rows: Sequence[Mapping[str, Any]], key: str, higher_is_better: bool | None) -> set[str]:
    """The methods whose mean of ``key`` is the best (all of them on a tie); none when the metric has no better
    direction or no value.

    >>> rows = [{"method": "a", "values": {"d": {"mean": 0.7}}}, {"method": "b", "values": {"d": {"mean": 0.8}}}]
    >>> best_methods(rows, "d", True), best_methods(rows, "d", False), best_methods(rows, "d", None)
    ({'b'}, {'a'}, set())
    """
    if higher_is_better is None:
        return set()
    means = {r["method"]: _mean(r.get("values", {}).get(key)) for r in rows}
    vals = {m: v for m, v in means.items() if v is not None}
    if not vals:
        return set()
    target = max(vals.values()) if higher_is_better else min(vals.values())
    return {m for m, v in vals.items() if v == target}


def _cell(cell: Any, best: bool) -> str:
    mean = _mean(cell)
    sort = "" if mean is None else f' data-v="{mean!r}"'
    text = fmt(mean)
    extra = ""
    if isinstance(cell, Mapping):
        if cell.get("sd") is not None:
            text += f" ± {fmt(float(cell['sd']))}"
        ci = cell.get("ci_vs_baseline")
        if ci:
            extra = (
                f'<div class="ci">Δ {float(ci["diff"]):+.3g} [{float(ci["low"]):.3g}, {float(ci["high"]):.3g}]'
                + (f", P(better) {float(ci['p_better']):.2f}" if ci.get("p_better") is not None else "")
                + "</div>"
            )
    cls = ' class="best"' if best else ""
    mark = "★ " if best else ""
    return f"<td{cls}{sort}>{mark}{html.escape(text)}{extra}</td>"


def summary_table(table: Mapping[str, Any], dataset: str) -> str:
    """The HTML table of ``dataset``'s rows of ``table.json`` (schema: ``docs/report.md``)."""
    rows = [r for r in table.get("rows", []) if r["dataset"] == dataset]
    metrics = [m for m in table.get("metrics", []) if any(m["key"] in r.get("values", {}) for r in rows)]
    costs = [k for k in COST_COLUMNS if any(k in (r.get("cost") or {}) for r in rows)]
    head = ['<th data-col="0">method</th>', '<th data-col="1">seeds</th>']
    for i, m in enumerate(metrics, start=2):
        arrow = "↑" if m.get("higher_is_better") else "↓" if m.get("higher_is_better") is False else ""
        head.append(
            f'<th data-col="{i}" title="{html.escape(m.get("group", ""))}">{html.escape(m.get("label", m["key"]))}'
            f" {arrow}</th>"
        )
    for i, k in enumerate(costs, start=2 + len(metrics)):
        head.append(f'<th data-col="{i}" title="cost">{html.escape(COST_COLUMNS[k])} ↓</th>')
    best = {m["key"]: best_methods(rows, m["key"], m.get("higher_is_better")) for m in metrics}
    cost_rows = [{"method": r["method"], "values": r.get("cost") or {}} for r in rows]
    best_cost = {k: best_methods(cost_rows, k, False) for k in costs}
    body = []
    for r in rows:
        name = html.escape(r["method"])
        base = " (baseline)" if r["method"] == table.get("baseline") else ""
        cells = [
            f'<td data-v="{name}">{name}{base}</td>',
            f"<td>{html.escape(', '.join(map(str, r.get('seeds', []))))}</td>",
        ]
        cells += [_cell(r.get("values", {}).get(m["key"]), r["method"] in best[m["key"]]) for m in metrics]
        cells += [_cell((r.get("cost") or {}).get(k), r["method"] in best_cost[k]) for k in costs]
        body.append(f'<tr data-method="{html.escape(r["method"])}">{"".join(cells)}</tr>')
    return (
        f'<table class="sortable summary" data-dataset="{html.escape(dataset)}"><thead><tr>{"".join(head)}</tr>'
        f"</thead><tbody>{''.join(body)}</tbody></table>"
    )
