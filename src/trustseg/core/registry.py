"""Name -> object registries with "did you mean" errors.

Methods, measures, metrics, models, importers and distortions are all registered by name; the CLI and the
config files only ever refer to names.

Example:
    >>> MEASURES = Registry("measure")
    >>> @MEASURES.register("entropy", doc="predictive entropy H[p̄]")
    ... def entropy(pred): ...
    >>> MEASURES.get("entropie")
    Traceback (most recent call last):
    trustseg.core.errors.UnknownNameError: unknown measure 'entropie'; did you mean 'entropy'? Known: entropy
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from trustseg.core.errors import UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object and its one-line documentation."""

    name: str
    obj: T
    doc: str


class Registry(Generic[T]):
    """A named collection of objects of one kind.

    Args:
        kind: What the registry holds ("method", "measure", ...), used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, doc: str | None = None) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``; ``doc`` defaults to the docstring's first line."""

        def deco(obj: T) -> T:
            self.add(name, obj, doc)
            return obj

        return deco

    def add(self, name: str, obj: T, doc: str | None = None) -> None:
        """Register ``obj`` under ``name``. Registering a name twice is an error."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if doc is None:
            doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()[0:1]
            doc = doc[0] if doc else ""
        self._entries[name] = Entry(name, obj, doc)

    def get(self, name: str) -> T:
        """Return the object registered as ``name`` or raise :class:`UnknownNameError` with suggestions."""
        return self.entry(name).obj

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}{hint} Known: {', '.join(sorted(self._entries)) or '(none)'}"

    def entry(self, name: str) -> Entry[T]:
        """The full :class:`Entry` (object and doc) for ``name``."""
        if name not in self._entries:
            raise UnknownNameError(self.unknown_message(name))
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def resolve(registry: Registry[Any], names: str | list[str]) -> list[Entry[Any]]:
    """Resolve a comma-separated string or list of names into entries (each checked)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    return [registry.entry(n) for n in names]
