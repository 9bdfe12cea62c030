"""What the registries (data sets, losses, metrics) share: their entries keyed by name, and
``"module:function"`` references, how they name code that is imported only when it runs, so
that the registries stay light. :mod:`gancore.codedeps` reads the same references, so the stages
that run them depend on their modules."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any, Protocol, TypeVar


class _Named(Protocol):
    @property
    def name(self) -> str: ...


Entry = TypeVar("Entry", bound=_Named)


def by_name(*entries: Entry) -> dict[str, Entry]:
    """A registry: ``entries`` keyed by their names, in order; a name registered twice is an error
    (a dict would keep the second entry silently)."""
    registry: dict[str, Entry] = {}
    for entry in entries:
        if entry.name in registry:
            raise ValueError(f"{entry.name!r} is registered twice")
        registry[entry.name] = entry
    return registry


def resolve(reference: str) -> Any:
    """The object ``reference`` names (``"gancore.data.toy:build"``), its module imported now."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def modules(references: Iterable[str]) -> tuple[str, ...]:
    """The modules of ``references``, each once, in order."""
    return tuple(dict.fromkeys(r.partition(":")[0] for r in references))
