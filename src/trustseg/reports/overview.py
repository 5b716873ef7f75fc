"""Overview figure: one row per case with the image, every rater's mask, the rater disagreement, the
prediction and its uncertainty map.

Volumes are shown by one axial slice (the one with the most foreground across raters). Labels are drawn as
colour overlays (class k gets colour k of a qualitative map); maps use a fixed colour scale per column so rows
can be compared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trustseg.core.atomic import atomic_path

CLASS_COLOURS = (
    np.array(
        [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180]],
        dtype=np.float32,
    )
    / 255.0
)


@dataclass
class OverviewRow:
    """What one row of the figure shows.

    Attributes:
        case_id: Row title.
        image: ``(C, *spatial)`` image (first channel is shown).
        labels: ``(R, *spatial)`` rater class maps, or ``None`` when there is no ground truth.
        seg: ``(*spatial)`` predicted class map.
        maps: Named per-pixel maps ``(*spatial)`` (uncertainty measures), shown as heat maps.
        note: Text under the title (e.g. "Dice 0.91").
    """

    case_id: str
    image: np.ndarray
    labels: np.ndarray | None
    seg: np.ndarray
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    note: str = ""


def _pick_slice(row: OverviewRow) -> int | None:
    if row.image.ndim - 1 < 3:
        return None
    ref = row.labels if row.labels is not None else row.seg[None]
    fg = (ref > 0).reshape(ref.shape[0], ref.shape[1], -1).sum((0, 2))
    return int(fg.argmax()) if fg.any() else ref.shape[1] // 2


def _slice(a: np.ndarray, z: int | None, spatial_axis0: int) -> np.ndarray:
    return a if z is None else np.take(a, z, axis=spatial_axis0)


def _overlay(gray: np.ndarray, classes: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    g = (gray - np.percentile(gray, 1)) / max(float(np.ptp(np.clip(gray, *np.percentile(gray, [1, 99])))), 1e-6)
    rgb = np.repeat(np.clip(g, 0, 1)[..., None], 3, axis=-1)
    colours = CLASS_COLOURS[np.clip(classes, 0, len(CLASS_COLOURS) - 1)]
    mask = (classes > 0)[..., None]
    return np.where(mask, (1 - alpha) * rgb + alpha * colours, rgb)


def render_overview(rows: Sequence[OverviewRow], out_png: str | Path, title: str = "", dpi: int = 90) -> Path:
    """Draw the overview grid and write it to ``out_png`` atomically.

    Columns: image | rater 1..R (overlay) | rater disagreement Σ_k ȳ_k(1−ȳ_k) | prediction (overlay) | each map.

    Returns:
        The PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        raise ValueError("render_overview needs at least one row")
    n_raters = max((r.labels.shape[0] if r.labels is not None else 0) for r in rows)
    map_names = list(dict.fromkeys(name for r in rows for name in r.maps))
    cols = 1 + n_raters + (1 if n_raters else 0) + 1 + len(map_names)
    vmax = {name: max(float(np.nanmax(r.maps[name])) for r in rows if name in r.maps) for name in map_names}
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.9 * cols, 2.0 * len(rows) + 0.4), squeeze=False)
    for i, row in enumerate(rows):
        z = _pick_slice(row)
        img = _slice(row.image[0], z, 0)
        seg = _slice(row.seg, z, 0)
        panels: list[tuple[str, np.ndarray, dict]] = [("image", img, {"cmap": "gray"})]
        if row.labels is not None:
            labs = _slice(row.labels, z, 1)
            for r in range(labs.shape[0]):
                panels.append((f"rater {r + 1}", _overlay(img, labs[r]), {}))
            k = int(max(labs.max(), seg.max())) + 1
            ybar = np.stack([(labs == c).mean(0) for c in range(k)])
            panels.append(("rater disagreement", (ybar * (1 - ybar)).sum(0), {"cmap": "magma", "vmin": 0}))
        panels.append(("prediction", _overlay(img, seg), {}))
        for name in map_names:
            if name in row.maps:
                m = _slice(row.maps[name], z, 0)
                panels.append((name, m, {"cmap": "viridis", "vmin": 0, "vmax": vmax[name] or 1.0}))
        for j, ax in enumerate(axes[i]):
            ax.axis("off")
            if j < len(panels):
                name, data, kw = panels[j]
                ax.imshow(data, interpolation="nearest", **kw)
                if i == 0:
                    ax.set_title(name, fontsize=8)
        axes[i][0].text(
            -0.08,
            0.5,
            f"{row.case_id}\n{row.note}",
            transform=axes[i][0].transAxes,
            ha="right",
            va="center",
            fontsize=7,
        )
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return out_png
