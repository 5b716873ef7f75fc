"""Path templates of the ``folder`` importer (``--image-pattern``, ``--label-pattern``, ``--mask-pattern``).

A template is a path relative to a source folder with placeholders and glob-ish wildcards:

* ``{case}``: the case id; ``{rater}``: the rater id (label templates only). A placeholder used twice must take
  the same value both times (``'{rater}_manual/{case}_{rater}HO.png'``);
* ``*``: any characters within one folder or file name, ``?``: one character, ``**/``: any number of folders;
* a trailing ``.*``: any extension trustseg reads (``.nii.gz``, ``.png``, ``.jpg``, ...), so ``images/{case}.*``
  matches ``images/a.nii.gz`` with case ``a``.

Case ids come from the image template; label and mask templates are then matched against those ids only (the
longest id wins), so ``'{case}_{rater}.png'`` splits ``Image_01L_1st.png`` into ``Image_01L`` and ``1st``.

Example:
    >>> t = Template("{rater}_manual/{case}_{rater}HO.png", "--label-pattern", ("case", "rater"))
    >>> t.match("1st_manual/Image_01L_1stHO.png", cases=["Image_01L", "Image_01"])
    {'rater': '1st', 'case': 'Image_01L'}
    >>> t.expected("Image_02R", "2nd")
    '2nd_manual/Image_02R_2ndHO.png'
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from trustseg.core.errors import ConfigError
from trustseg.data.io_read import EXTENSIONS

_TOKEN = re.compile(r"\{([^{}]*)\}|\*\*/|\*|\?|\.\*$")
_ANY_EXT = "(?i:" + "|".join(re.escape(e) for e in EXTENSIONS) + ")"


class Template:
    """A compiled path template (see the module docstring).

    Args:
        text: The template, relative to the source folder, ``/``-separated.
        option: The option it came from (named in errors), e.g. ``--label-pattern``.
        allowed: The placeholders this template may use; ``{case}`` is always required.

    Raises:
        ConfigError: an unknown or missing placeholder, an absolute path or ``..``.
    """

    def __init__(self, text: str, option: str, allowed: Sequence[str] = ("case",)):
        self.text, self.option = str(text), option
        if not self.text or self.text.startswith("/") or ".." in Path(self.text).parts:
            raise ConfigError(f"{option} {self.text!r} must be a path relative to the source folder (no '..')")
        self._parts: list[tuple[str, str]] = []  # (kind, text): kind in literal / field / glob token
        pos = 0
        for m in _TOKEN.finditer(self.text):
            if m.start() > pos:
                self._parts.append(("literal", self.text[pos : m.start()]))
            if m.group(1) is not None:
                if m.group(1) not in allowed:
                    raise ConfigError(
                        f"{option} {self.text!r}: unknown placeholder {{{m.group(1)}}}; "
                        f"it may use {', '.join('{' + a + '}' for a in allowed)}"
                    )
                self._parts.append(("field", m.group(1)))
            else:
                self._parts.append(("glob", m.group(0)))
            pos = m.end()
        if pos < len(self.text):
            self._parts.append(("literal", self.text[pos:]))
        self.fields = {t for k, t in self._parts if k == "field"}
        if "case" not in self.fields:
            raise ConfigError(f"{option} {self.text!r} must contain {{case}} (where the case id is in the path)")
        self._generic = self._compile(None)

    def __repr__(self) -> str:
        return f"Template({self.text!r})"

    @property
    def prefix(self) -> str:
        """The folders before the first placeholder or wildcard (where the files can be; ``''`` for the root)."""
        lit = self._parts[0][1] if self._parts[0][0] == "literal" else ""
        return lit.rsplit("/", 1)[0] if "/" in lit else ""

    def _compile(self, cases: Sequence[str] | None) -> re.Pattern[str]:
        case_rx = "|".join(re.escape(c) for c in sorted(cases, key=len, reverse=True)) if cases else "[^/]+"
        out, seen = [], set()
        for kind, text in self._parts:
            if kind == "literal":
                out.append(re.escape(text))
            elif kind == "field":
                out.append(f"(?P={text})" if text in seen else f"(?P<{text}>{case_rx if text == 'case' else '[^/]+'})")
                seen.add(text)
            else:
                out.append({"**/": "(?:[^/]+/)*", "*": "[^/]*", "?": "[^/]", ".*": _ANY_EXT}[text])
        return re.compile("".join(out))

    def match(self, rel: str, cases: Sequence[str] | None = None) -> dict[str, str] | None:
        """The placeholder values of a ``/``-separated relative path, or ``None`` when it does not match.

        Args:
            rel: Path relative to the source folder.
            cases: Restrict ``{case}`` to these ids (the longest that fits wins); ``None``: any name.
        """
        m = (self._compile(cases) if cases else self._generic).fullmatch(rel)
        return None if m is None else m.groupdict()

    def matches(self, root: Path, cases: Sequence[str] | None = None) -> Iterator[tuple[Path, dict[str, str]]]:
        """Every file under ``root`` the template matches, in sorted order, with its placeholder values."""
        rx = self._compile(cases) if cases else self._generic
        base = root / self.prefix if self.prefix else root
        if not base.is_dir():
            return
        for f in sorted(base.rglob("*")):
            if f.is_file():
                m = rx.fullmatch(f.relative_to(root).as_posix())
                if m is not None:
                    yield f, m.groupdict()

    def expected(self, case: str, rater: str | None = None) -> str:
        """The template with its placeholders filled in (wildcards left as they are), for error messages."""
        return "".join(
            (case if t == "case" else str(rater)) if k == "field" else t
            for k, t in self._parts  # noqa: B023
        )
