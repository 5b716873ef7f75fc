"""A self-contained HTML report: headline numbers, tables and figures side by side.

The page links its figures by relative path (they sit in the same folder), so the whole output folder can be
zipped or served as it is; with ``inline=True`` the figures are embedded as base64 ``data:`` URIs instead
(:func:`data_uri`), so the page is one self-contained file that opens offline.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trustseg.core.atomic import atomic_write_text

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1200px;color:#222}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
td,th{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
.cards{display:flex;flex-wrap:wrap;gap:.75rem}.card{border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem}
.card .v{font-size:1.4rem;font-weight:600}.card .k{font-size:.75rem;color:#666}
img{max-width:100%;border:1px solid #eee}.note{color:#555;font-size:.85rem}
"""


@dataclass
class Section:
    """One part of the report.

    Attributes:
        title: Heading.
        text: A paragraph of plain text (escaped).
        table: Rows (dicts with the same keys) shown as a table.
        images: Figure file names, relative to the report's folder.
    """

    title: str
    text: str = ""
    table: Sequence[Mapping[str, Any]] = field(default_factory=list)
    images: Sequence[str] = field(default_factory=list)


def fmt(value: Any) -> str:
    """Format a cell: floats with 4 significant digits, NaN/None as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def data_uri(source: str | Path | bytes, mime: str = "image/png") -> str:
    """A file (or its bytes) as a ``data:`` URI, to embed a figure in a page without any external reference.

    >>> data_uri(b"abc")
    'data:image/png;base64,YWJj'
    """
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(r.get(k)))}</td>" for k in keys) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_html_report(
    path: str | Path,
    title: str,
    headline: Mapping[str, Any],
    sections: Sequence[Section],
    footer: str = "",
    inline: bool = False,
) -> Path:
    """Write the report page atomically.

    Args:
        path: Output ``.html`` file.
        title: Page title.
        headline: A few key numbers shown as cards at the top.
        sections: The body, in order.
        footer: Provenance line (command, config, versions).
        inline: Embed the figures (read relative to the page's folder) as ``data:`` URIs instead of linking them.
    """
    folder = Path(path).parent
    cards = "".join(
        f'<div class="card"><div class="v">{html.escape(fmt(v))}</div><div class="k">{html.escape(str(k))}</div></div>'
        for k, v in headline.items()
    )
    parts = [f"<h1>{html.escape(title)}</h1>", f'<div class="cards">{cards}</div>']
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f'<p class="note">{html.escape(s.text)}</p>')
        parts.append(_table(s.table))
        for img in s.images:
            src = data_uri(folder / img) if inline else img
            parts.append(f'<p><img src="{html.escape(src)}" alt="{html.escape(img)}"></p>')
    if footer:
        parts.append(f'<p class="note">{html.escape(footer)}</p>')
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n"
    )
    return atomic_write_text(path, page)
