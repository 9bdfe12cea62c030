"""Architecture registry: plugins are found through the ``gancore`` entry-point group.

Built-in architectures (``plugins/``) register through this project's own entry points, so
there is one mechanism for everyone. A plugin that fails to import, raises, or returns something
that is not a valid :class:`Architecture` is named in a warning and skipped; the rest keep
working.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

VALID_KINDS = frozenset({"vector", "image"})


class PluginWarning(UserWarning):
    """A plugin could not be loaded or returned something invalid; it was skipped."""


@dataclass(frozen=True)
class Architecture:
    """A generator/discriminator family that a plugin contributes.

    ``build(shape, latent_dim, **options) -> (generator, discriminator)``; ``defaults`` lists
    every option ``build`` accepts with its default value (``model.options`` in params.yaml may
    only use these keys). ``shapes`` optionally lists the shapes the architecture supports, which
    ``gan plugins check`` builds at; when empty, a representative shape per kind is used.
    """

    name: str
    kinds: frozenset[str] | set[str]
    build: Callable[..., tuple[Any, Any]]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    shapes: tuple[tuple[int, ...], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"Architecture.name must be an identifier-like string, got {self.name!r}")
        kinds = frozenset(self.kinds)
        if not kinds or not kinds <= VALID_KINDS:
            raise ValueError(
                f"Architecture {self.name!r}: kinds must be a non-empty subset of "
                f"{sorted(VALID_KINDS)}, got {sorted(kinds)}"
            )
        object.__setattr__(self, "kinds", kinds)
        if not callable(self.build):
            raise ValueError(f"Architecture {self.name!r}: build must be callable")
        if not isinstance(self.defaults, dict):
            raise ValueError(f"Architecture {self.name!r}: defaults must be a dict")
        object.__setattr__(self, "shapes", tuple(tuple(int(d) for d in s) for s in self.shapes))

    def supports(self, shape: tuple[int, ...]) -> bool:
        kind = "vector" if len(shape) == 1 else "image"
        if kind not in self.kinds:
            return False
        return not self.shapes or tuple(shape) in self.shapes or kind == "vector"


@dataclass(frozen=True)
class RegisteredArchitecture:
    architecture: Architecture
    plugin: str  # entry-point name (or module name for directly registered plugins)
    distribution: str  # the installed distribution the entry point came from
    version: str


def _plugin_manager():
    import pluggy

    from gancore import hookspecs

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def _entry_points():
    from importlib.metadata import entry_points

    return entry_points(group="gancore")


def discover(extra_modules: tuple[Any, ...] = ()) -> dict[str, RegisteredArchitecture]:
    """Load every plugin and return the valid architectures by name (uncached)."""
    found: dict[str, RegisteredArchitecture] = {}
    sources: list[tuple[str, str, str, Callable[[], Any]]] = []
    for ep in _entry_points():
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        sources.append((ep.name, dist, version, ep.load))
    for module in extra_modules:
        sources.append((getattr(module, "__name__", repr(module)), "(direct)", "-", lambda m=module: m))

    for plugin_name, dist, version, load in sources:
        label = f"plugin {plugin_name!r} (from {dist})"
        try:
            module = load()
            pm = _plugin_manager()
            pm.register(module, name=plugin_name)
            results = pm.hook.gancore_architectures()
        except Exception as exc:  # a broken plugin must not take the others down
            warnings.warn(f"{label} failed to load and was skipped: {type(exc).__name__}: {exc}", PluginWarning, stacklevel=2)
            continue
        for result in results:
            try:
                items = list(result)
            except TypeError:
                warnings.warn(f"{label} returned {type(result).__name__}, not an iterable of Architecture; skipped", PluginWarning, stacklevel=2)
                continue
            for arch in items:
                if not isinstance(arch, Architecture):
                    warnings.warn(f"{label} returned {type(arch).__name__}, not an Architecture; skipped", PluginWarning, stacklevel=2)
                    continue
                if arch.name in found:
                    prev = found[arch.name]
                    warnings.warn(
                        f"{label}: architecture {arch.name!r} is already provided by plugin "
                        f"{prev.plugin!r} (from {prev.distribution}); the later one was skipped",
                        PluginWarning,
                        stacklevel=2,
                    )
                    continue
                found[arch.name] = RegisteredArchitecture(arch, plugin_name, dist, version)
    return found


@lru_cache(maxsize=1)
def architectures() -> dict[str, RegisteredArchitecture]:
    """All valid architectures from installed plugins (cached for the process)."""
    return discover()


def get_architecture(name: str) -> RegisteredArchitecture:
    archs = architectures()
    if name not in archs:
        raise KeyError(f"unknown architecture {name!r}; installed: {', '.join(sorted(archs)) or '(none)'}")
    return archs[name]


def resolve_options(arch: Architecture, options: dict[str, Any]) -> dict[str, Any]:
    """Defaults overlaid with user options; unknown option names are an error."""
    unknown = sorted(set(options) - set(arch.defaults))
    if unknown:
        allowed = ", ".join(sorted(arch.defaults)) or "(none)"
        raise ValueError(f"architecture {arch.name!r} has no option(s) {', '.join(unknown)}; allowed: {allowed}")
    return {**arch.defaults, **options}

