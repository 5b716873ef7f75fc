"""The case gallery of the comparison report: per test case, the image with every rater's contour, the soft
label, and per method its prediction and every uncertainty map, with the predicted Dice (and interval), the true
Dice, the review flag and its reason.

Each case is one ``<div class="case" data-id=... data-qc=... data-dice=...>`` (``data-qc``: the lowest predicted
Dice over the methods, empty without a QC model; ``data-dice``: the lowest true Dice); the page's inline script
filters them by id and sorts them (worst predicted quality first by default; by true Dice when no case has a
predicted one).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trustseg.compare.report_data import Job, per_case
from trustseg.core.figures import pyplot
from trustseg.data.dataset import Dataset
from trustseg.data.predictions import load_prediction, read_index
from trustseg.evaluation.context import oriented_name
from trustseg.reports.html import data_uri, fmt
from trustseg.reports.style import CLASS_COLOURS, OKABE_ITO, SOFT_CMAP, UNCERTAINTY_CMAP, png_bytes, rater_linestyle

#: At most this many cases are shown (the worst first).
MAX_CASES = 48


@dataclass
class MethodCase:
    """One method's view of a case."""

    seg: np.ndarray
    maps: dict[str, np.ndarray]
    qc: dict[str, Any] = field(default_factory=dict)
    dice: float = math.nan


def _slice2d(a: np.ndarray, z: int | None) -> np.ndarray:
    return a if z is None else a[z]


def _contours(ax: Any, labels: np.ndarray, z: int | None) -> None:
    for r in range(labels.shape[0]):
        lab = _slice2d(labels[r], z)
        for c in range(1, int(lab.max()) + 1):
            if (lab == c).any():
                ax.contour(
                    lab == c,
                    levels=[0.5],
                    colors=[OKABE_ITO[r % len(OKABE_ITO)]],
                    linestyles=[rater_linestyle(r)],
                    linewidths=1.0,
                )


def case_figure(image: np.ndarray, labels: np.ndarray | None, views: Mapping[str, MethodCase]) -> bytes:
    """The case's panel grid as PNG bytes: row 0 image | rater contours | soft label; then one row per method:
    prediction (class colours) | each uncertainty map (viridis, 0..its max)."""
    plt = pyplot()
    z = None
    if image.ndim - 1 >= 3:  # a volume: the slice with the most rater (else predicted) foreground
        ref = labels if labels is not None else next(iter(views.values())).seg[None]
        fg = (ref > 0).reshape(ref.shape[0], ref.shape[1], -1).sum((0, 2))
        z = int(fg.argmax())
    img = _slice2d(image[0], z)
    n_maps = max((len(v.maps) for v in views.values()), default=0)
    cols = max(3, 1 + n_maps)
    fig, axes = plt.subplots(1 + len(views), cols, figsize=(1.25 * cols, 1.3 * (1 + len(views))), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    axes[0][0].imshow(img, cmap="gray")
    axes[0][0].set_title("image", fontsize=6)
    if labels is not None:
        axes[0][1].imshow(img, cmap="gray")
        _contours(axes[0][1], labels, z)
        axes[0][1].set_title(f"{labels.shape[0]} raters", fontsize=6)
        soft = ((labels if z is None else labels[:, z]) > 0).mean(0)
        axes[0][2].imshow(soft, cmap=SOFT_CMAP, vmin=0, vmax=1)
        axes[0][2].set_title("soft label", fontsize=6)
    for i, (name, v) in enumerate(views.items(), start=1):
        seg = _slice2d(v.seg, z)
        axes[i][0].imshow(img, cmap="gray")
        axes[i][0].imshow(
            np.ma.masked_equal(seg, 0),
            cmap=_class_cmap(),
            vmin=0,
            vmax=len(CLASS_COLOURS) - 1,
            alpha=0.5,
            interpolation="nearest",
        )
        axes[i][0].set_title(f"{name}: prediction", fontsize=6)
        for j, (mname, m) in enumerate(v.maps.items(), start=1):
            m2 = _slice2d(m, z)
            axes[i][j].imshow(m2, cmap=UNCERTAINTY_CMAP, vmin=0, vmax=float(np.nanmax(m2)) or 1.0)
            axes[i][j].set_title(mname, fontsize=6)
    fig.tight_layout(pad=0.2)
    return png_bytes(fig, dpi=60)


def _class_cmap() -> Any:
    from matplotlib.colors import ListedColormap  # matplotlib is imported lazily (only figure paths need it)

    return ListedColormap(CLASS_COLOURS)


def _views(runs: Mapping[str, Sequence[Job]]) -> dict[str, tuple[Job, dict[str, dict[str, Any]]]]:
    """method -> (its first job, case id -> predictions.json entry)."""
    out = {}
    for method, jobs in runs.items():
        job = jobs[0]
        out[method] = (job, {c["id"]: c for c in read_index(job.pred_dir)["cases"]})
    return out


def gallery_order(cases: Sequence[str], qc: Mapping[str, float], dice: Mapping[str, float]) -> list[str]:
    """Worst first: by predicted Dice when some case has one (cases without last), else by true Dice; ties by id.

    >>> gallery_order(["a", "b", "c"], {"a": 0.9, "b": 0.2}, {})
    ['b', 'a', 'c']
    >>> gallery_order(["a", "b"], {}, {"a": 0.5, "b": 0.4})
    ['b', 'a']
    """
    key = qc if any(math.isfinite(v) for v in qc.values()) else dice

    def k(c: str) -> tuple[float, str]:
        v = key.get(c, math.nan)
        return (v if math.isfinite(v) else math.inf, c)

    return sorted(cases, key=k)


def _attr(v: float) -> str:
    return "" if not math.isfinite(v) else f"{v:.6g}"


def gallery_html(dataset: Dataset, runs: Mapping[str, Sequence[Job]], max_cases: int = MAX_CASES) -> str:
    """The gallery of a dataset's test cases (the first seed of every method), worst predicted quality first."""
    views = _views(runs)
    if not views:
        return ""
    first_job = next(iter(views.values()))[0]
    cases = list(first_job.results.get("cases", []))
    true = {m: per_case(j.results, ("qc_dice", "majority", "mean")) for m, (j, _) in views.items()}
    pred = {
        m: {c: float(e.get("qc", {}).get("predicted_dice", math.nan)) for c, e in idx.items()}
        for m, (_, idx) in views.items()
    }
    worst_qc = {c: min((pred[m].get(c, math.nan) for m in views), default=math.nan) for c in cases}
    worst_qc = {c: (v if math.isfinite(v) else math.nan) for c, v in worst_qc.items()}
    worst_dice = {c: float(np.nanmin([true[m].get(c, math.nan) for m in views] or [math.nan])) for c in cases}
    order = gallery_order(cases, worst_qc, worst_dice)[:max_cases]
    parts = []
    for cid in order:
        case = dataset[cid]
        per_method: dict[str, MethodCase] = {}
        rows = []
        for m, (job, idx) in views.items():
            entry = idx.get(cid)
            if entry is None:
                continue
            p = load_prediction(job.pred_dir, cid, entry=entry)
            maps = {oriented_name(k): (1 - v if oriented_name(k) != k else v) for k, v in p["maps"].items()}
            qc = entry.get("qc") or {}
            per_method[m] = MethodCase(p["seg"], maps, qc, true[m].get(cid, math.nan))
            interval = f" [{fmt(float(qc['dice_low']))}, {fmt(float(qc['dice_high']))}]" if "dice_low" in qc else ""
            review = "—" if "review" not in qc else ("yes" if qc["review"] else "no")
            rows.append(
                f"<tr><td>{html.escape(m)}</td><td>{html.escape(fmt(qc.get('predicted_dice')) + interval)}</td>"
                f"<td>{html.escape(fmt(true[m].get(cid)))}</td>"
                f'<td class="{"flag" if qc.get("review") else ""}">{review}</td>'
                f"<td>{html.escape(str(qc.get('reason', '')))}</td></tr>"
            )
        png = case_figure(case.image, case.labels, per_method)
        parts.append(
            f'<div class="case" data-id="{html.escape(cid)}" data-qc="{_attr(worst_qc.get(cid, math.nan))}" '
            f'data-dice="{_attr(worst_dice.get(cid, math.nan))}"><h4>{html.escape(cid)}</h4>'
            '<table class="caseinfo"><thead><tr><th>method</th><th>predicted Dice [interval]</th><th>true Dice</th>'
            f"<th>review</th><th>why</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f'<img src="{data_uri(png)}" alt="{html.escape(cid)}"></div>'
        )
    has_qc = any(math.isfinite(v) for v in worst_qc.values())
    note = (
        f"{len(order)} of {len(cases)} test cases, worst predicted Dice first."
        if has_qc
        else f"{len(order)} of {len(cases)} test cases; no QC model: worst true Dice first."
    )
    controls = (
        '<div class="gallery-controls"><label>case id <input type="search" class="case-search" '
        'placeholder="search case id"></label> sort: '
        '<button type="button" data-sort="qc-asc">predicted quality ↑ (worst first)</button>'
        '<button type="button" data-sort="qc-desc">predicted quality ↓</button>'
        '<button type="button" data-sort="id">case id</button>'
        f' <span class="note">{html.escape(note)}</span></div>'
    )
    return f'<div class="gallery" data-has-qc="{int(has_qc)}">{controls}<div class="cases">{"".join(parts)}</div></div>'
