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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from trustseg.core.errors import UnknownNameError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object, its one-line documentation and its metadata.

    Attributes:
        name: The registered name.
        obj: The object.
        doc: One line of documentation (the docstring's first line unless given).
        meta: What the object declares about itself (capabilities, inputs it needs, orientation, ...); the keys
            are the registry owner's vocabulary, documented where the registry is defined.
    """

    name: str
    obj: T
    doc: str
    meta: Mapping[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """A named collection of objects of one kind.

    Args:
        kind: What the registry holds ("method", "measure", ...), used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, doc: str | None = None, **meta: Any) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name`` with metadata ``meta``; ``doc`` defaults to the docstring's
        first line."""

        def deco(obj: T) -> T:
            self.add(name, obj, doc, **meta)
            return obj

        return deco

    def add(self, name: str, obj: T, doc: str | None = None, **meta: Any) -> None:
        """Register ``obj`` under ``name`` with metadata ``meta``. Registering a name twice is an error."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if doc is None:
            lines = (getattr(obj, "__doc__", None) or "").strip().splitlines()[0:1]
            doc = lines[0] if lines else ""
        self._entries[name] = Entry(name, obj, doc, MappingProxyType(dict(meta)))

    def meta(self, name: str) -> Mapping[str, Any]:
        """The metadata of ``name`` (read-only; unknown names get a "did you mean" error)."""
        return self.entry(name).meta

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
