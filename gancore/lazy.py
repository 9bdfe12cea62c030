"""``"module:function"`` references: how the registries (data sets, losses, metrics) name code that
is imported only when it runs, so that the registries stay light. :mod:`gancore.codedeps` reads
the same references, so the stages that run them depend on their modules."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any


def resolve(reference: str) -> Any:
    """The object ``reference`` names (``"gancore.data.toy:build"``), its module imported now."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)


def modules(references: Iterable[str]) -> tuple[str, ...]:
    """The modules of ``references``, each once, in order."""
    return tuple(dict.fromkeys(r.partition(":")[0] for r in references))
