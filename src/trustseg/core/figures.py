"""Figures written the one way every layer writes them: matplotlib's non-interactive backend, PNG, atomically.

matplotlib is imported on first use (it is slow to import and only the figure-writing paths need it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trustseg.core.atomic import atomic_path


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the ``Agg`` backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (tight bounding box) and close it."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    pyplot().close(fig)
    return path
