"""Colours, line styles and the PNG + PDF export shared by the report figures.

Methods get the Okabe–Ito palette (distinguishable by the common colour-vision deficiencies) *and* a marker and
line style each, so a figure printed in grey still tells them apart; maps use perceptually uniform colour maps
(``viridis`` for uncertainty, ``cividis`` for soft labels), whose lightness rises monotonically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from trustseg.core.atomic import atomic_path
from trustseg.core.figures import pyplot

#: RGB in [0, 1] per class index (background black), for class overlays.
CLASS_COLOURS = (
    np.array(
        [[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180]],
        dtype=np.float32,
    )
    / 255.0
)

#: Okabe & Ito (2008), "Color Universal Design", without black (kept for references such as the diagonal).
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")
#: Markers and line styles cycle with other periods than the 7 colours (10 and 8), so up to 56 methods (every
#: recipe compares 9) never repeat an earlier method's colour *and* marker, nor its colour and line style.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 1)), (0, (6, 3)))
#: Colour maps of per-pixel maps: uncertainty, soft labels (both readable in grey).
UNCERTAINTY_CMAP = "viridis"
SOFT_CMAP = "cividis"


#: savefig metadata without matplotlib's default "Software"/"Creator" entry (which carries a web address), so an
#: inlined figure holds no URL at all.
NO_URL_METADATA: dict[str, dict[str, Any]] = {"png": {"Software": None}, "pdf": {"Creator": None}}


def png_bytes(fig: Any, dpi: int = 80) -> bytes:
    """``fig`` as PNG bytes (no URL in its metadata), then closed: for figures embedded in a page only."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png", bbox_inches="tight", metadata=NO_URL_METADATA["png"])
    pyplot().close(fig)
    return buf.getvalue()


def method_style(i: int) -> dict[str, Any]:
    """matplotlib keyword arguments of the ``i``-th method (colour, marker, line style; cycling).

    >>> method_style(0)["color"], method_style(7)["color"], method_style(7)["marker"]
    ('#E69F00', '#E69F00', '*')
    """
    return {
        "color": OKABE_ITO[i % len(OKABE_ITO)],
        "marker": MARKERS[i % len(MARKERS)],
        "linestyle": LINESTYLES[i % len(LINESTYLES)],
    }


def rater_linestyle(r: int) -> Any:
    """Contour line style of rater ``r`` (distinct in grey: solid, dashed, dash-dot, dotted, ...)."""
    return LINESTYLES[r % len(LINESTYLES)]


def save_png_pdf(fig: Any, stem: str | Path, dpi: int = 100) -> tuple[Path, Path]:
    """Write ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` (vector, for papers) atomically, then close it."""
    stem = Path(stem)
    paths = (stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf"))
    for p, fmt in zip(paths, ("png", "pdf"), strict=True):
        with atomic_path(p) as tmp:
            fig.savefig(tmp, dpi=dpi, format=fmt, bbox_inches="tight", metadata=NO_URL_METADATA[fmt])
    pyplot().close(fig)
    return paths
