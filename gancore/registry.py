"""Architecture registry: one pluggy ``PluginManager`` over the ``gancore`` entry-point group.

As pytest does it: one manager holds every plugin; each entry point is loaded and registered in
its own try/except, so a plugin that fails to import is named in a warning and skipped while the
rest keep working; ``check_pending()`` then reports a plugin whose ``@hookimpl`` names no known
hook (a misspelled ``gancore_architectures``), which would otherwise contribute nothing, silently.
The built-in architectures (``plugins/``, installed as ``gancore_plugins``) register through this
project's own entry points: one mechanism for everyone.

Each plugin's hook implementation is then called on its own, so that what it returns can be
attributed to it, and a plugin that raises or returns something that is not a valid
:class:`Architecture` is named and skipped too.
"""

from __future__ import annotations

import inspect
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pluggy

from gancore import hookspecs

VALID_KINDS = frozenset({"vector", "image"})
ENTRY_POINT_GROUP = hookspecs.PROJECT
# The distribution that ships the built-in architectures (pyproject.toml [project.entry-points.gancore]).
BUILTIN_DISTRIBUTION = "gancore"


class PluginWarning(UserWarning):
    """A plugin could not be loaded or returned something invalid; it was skipped."""


def options_of(build: Callable[..., Any]) -> dict[str, Any]:
    """The options ``build(shape, latent_dim, **options)`` takes, with their defaults: the
    keyword parameters after the first two that have a default."""
    try:
        parameters = list(inspect.signature(build).parameters.values())
    except (TypeError, ValueError):
        return {}
    named = [p for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)][2:]
    return {p.name: p.default for p in named if p.default is not p.empty}


@dataclass(frozen=True)
class Architecture:
    """A generator/discriminator family that a plugin contributes.

    ``build(shape, latent_dim, **options) -> (generator, discriminator)``. ``defaults`` lists every
    option ``build`` accepts with its default value (``model.options`` in params.yaml may only use
    these keys); when the plugin gives none they are read from ``build``'s signature, so an
    option's default is written once. ``shapes`` optionally lists the shapes the architecture
    supports, which ``gan plugins check`` builds at; when empty, a representative shape per kind
    is used. ``legacy`` maps an option added after checkpoints were written to the value those
    checkpoints trained with: a checkpoint without the option resumes where the option has that
    value, and is another run under any other (declare it in the release that adds the option:
    checkpoints that recorded the option are another run under it). ``build`` raises ValueError
    or TypeError for option values it refuses, and nothing else: it runs on the CPU of whatever
    machine validates the parameters, which reports such an error as the options' (exit 2).
    """

    name: str
    kinds: frozenset[str] | set[str]
    build: Callable[..., tuple[Any, Any]]
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    shapes: tuple[tuple[int, ...], ...] = ()
    legacy: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"Architecture.name must be an identifier-like string, got {self.name!r}")
        kinds = frozenset(self.kinds)
        if not kinds or not kinds <= VALID_KINDS:
            raise ValueError(f"Architecture {self.name!r}: kinds must be a non-empty subset of {sorted(VALID_KINDS)}, got {sorted(kinds)}")
        object.__setattr__(self, "kinds", kinds)
        if not callable(self.build):
            raise ValueError(f"Architecture {self.name!r}: build must be callable")
        if not isinstance(self.defaults, dict):
            raise ValueError(f"Architecture {self.name!r}: defaults must be a dict")
        if not self.defaults:
            object.__setattr__(self, "defaults", options_of(self.build))
        object.__setattr__(self, "shapes", tuple(tuple(int(d) for d in s) for s in self.shapes))
        unknown = sorted(set(self.legacy) - set(self.defaults)) if isinstance(self.legacy, dict) else None
        if unknown is None or unknown:
            raise ValueError(
                f"Architecture {self.name!r}: legacy must be a dict of its options ({', '.join(sorted(self.defaults)) or 'none'}), "
                f"got {self.legacy!r}"
            )

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


def _warn(message: str) -> None:
    warnings.warn(message, PluginWarning, stacklevel=3)


def _entry_points() -> Any:
    from importlib.metadata import entry_points

    return entry_points(group=ENTRY_POINT_GROUP)


def _constant(value: Any) -> Callable[[], Any]:
    return lambda: value


def plugin_manager(extra_modules: tuple[Any, ...] = ()) -> tuple[pluggy.PluginManager, dict[str, tuple[str, str]]]:
    """A manager with every loadable plugin registered and checked, and ``{plugin name:
    (distribution, version)}``. Plugins that fail to load or name unknown hooks are skipped."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    origins: dict[str, tuple[str, str]] = {}
    sources: list[tuple[str, str, str, Callable[[], Any]]] = []
    for ep in _entry_points():
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        sources.append((ep.name, dist, version, ep.load))
    # This project's own plugins first, whatever order the path lists distributions in: of two
    # architectures of one name the first registered is kept, and a plugin that also calls itself
    # "mlp" must not silently replace the default architecture.
    sources.sort(key=lambda source: source[1] != BUILTIN_DISTRIBUTION)
    for module in extra_modules:
        sources.append((getattr(module, "__name__", repr(module)), "(direct)", "-", _constant(module)))
    for name, dist, version, load in sources:
        if name in origins:  # pluggy would refuse it with its whole registry in the message
            _warn(
                f"plugin {name!r} (from {dist}) was skipped: plugin {name!r} (from {origins[name][0]}) has that name already; "
                "rename the entry point ([project.entry-points.gancore] in its pyproject.toml)"
            )
            continue
        try:
            pm.register(load(), name=name)
        except Exception as exc:  # a broken plugin must not take the others down
            _warn(f"plugin {name!r} (from {dist}) failed to load and was skipped: {type(exc).__name__}: {exc}")
            continue
        origins[name] = (dist, version)
    while True:
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or repr(exc.plugin)
            dist = origins.pop(name, ("?", "?"))[0]
            pm.unregister(exc.plugin)
            _warn(
                f"plugin {name!r} (from {dist}) was skipped: {exc} (hooks gancore knows: "
                f"{', '.join(sorted(h for h in dir(hookspecs) if h.startswith('gancore_')))})"
            )
    for name in list(origins):
        plugin = pm.get_plugin(name)
        if plugin is not None and not pm.get_hookcallers(plugin):
            dist = origins.pop(name)[0]
            pm.unregister(plugin)
            _warn(f"plugin {name!r} (from {dist}) implements no gancore hook and was skipped; did you forget @gancore.hookimpl?")
    return pm, origins


def discover(extra_modules: tuple[Any, ...] = ()) -> dict[str, RegisteredArchitecture]:
    """Load every plugin and return the valid architectures by name (uncached)."""
    pm, origins = plugin_manager(extra_modules)
    found: dict[str, RegisteredArchitecture] = {}
    # Registration order; pluggy itself calls the implementations last-registered first.
    for impl in sorted(pm.hook.gancore_architectures.get_hookimpls(), key=lambda i: list(origins).index(i.plugin_name)):
        name = impl.plugin_name
        dist, version = origins[name]
        label = f"plugin {name!r} (from {dist})"
        try:
            result = impl.function()
        except Exception as exc:
            _warn(f"{label} failed to load and was skipped: {type(exc).__name__}: {exc}")
            continue
        try:
            items = list(result)  # type: ignore[call-overload]
        except TypeError:
            _warn(f"{label} returned {type(result).__name__}, not an iterable of Architecture; skipped")
            continue
        for arch in items:
            if not isinstance(arch, Architecture):
                _warn(f"{label} returned {type(arch).__name__}, not an Architecture; skipped")
                continue
            if arch.name in found:
                prev = found[arch.name]
                builtin = " (built in)" if prev.distribution == BUILTIN_DISTRIBUTION else ""
                _warn(
                    f"{label}: architecture {arch.name!r} is already provided by plugin "
                    f"{prev.plugin!r} (from {prev.distribution}){builtin}; this one was skipped: give it another name"
                )
                continue
            found[arch.name] = RegisteredArchitecture(arch, name, dist, version)
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
    """Defaults overlaid with user options; unknown option names and values of another type than
    the default's are an error."""
    unknown = sorted(set(options) - set(arch.defaults))
    if unknown:
        allowed = ", ".join(sorted(arch.defaults)) or "(none)"
        raise ValueError(f"architecture {arch.name!r} has no option(s) {', '.join(unknown)}; allowed: {allowed}")
    wrong = [problem for name, value in options.items() if (problem := _option_type_problem(name, value, arch.defaults[name]))]
    if wrong:
        raise ValueError(f"architecture {arch.name!r}: " + "; ".join(wrong))
    return {**arch.defaults, **options}


def build_networks(arch: Architecture, shape: tuple[int, ...], latent_dim: int, resolved: dict[str, Any]) -> tuple[Any, Any]:
    """``arch.build(shape, latent_dim, **resolved)`` held to the plugin contract. A ValueError or
    TypeError raised by build is its refusal of the options and propagates, as does an OSError (a
    plugin fetching weights may succeed on a retry). Anything else is the plugin's defect, a
    :class:`~gancore.errors.PluginError` naming it: defaults its build does not take (before build
    runs, so that Python's TypeError is not taken for a refusal), another exception, or a return
    value that is not two networks."""
    from torch import nn

    from gancore.errors import PluginError

    check = f"`gan plugins check {arch.name}` checks the whole contract"
    try:
        inspect.signature(arch.build).bind(tuple(shape), int(latent_dim), **resolved)
    except TypeError as exc:
        raise PluginError(
            f"architecture {arch.name!r}: its build does not take its own options {dict(resolved)} ({exc}); {check}"
        ) from None
    except ValueError:  # no signature to read (a builtin): build itself will tell
        pass
    try:
        built = arch.build(tuple(shape), int(latent_dim), **resolved)
    except (ValueError, TypeError, OSError):
        raise
    except Exception as exc:
        raise PluginError(f"architecture {arch.name!r} failed to build its networks: {type(exc).__name__}: {exc}; {check}") from None
    if not (isinstance(built, (tuple, list)) and len(built) == 2 and all(isinstance(m, nn.Module) for m in built)):
        what = f"({', '.join(type(m).__name__ for m in built)})" if isinstance(built, (tuple, list)) else type(built).__name__
        raise PluginError(f"architecture {arch.name!r}: build returned {what}, expected (generator, discriminator) torch modules; {check}")
    return built[0], built[1]


def build_problem(arch: Architecture, shape: tuple[int, ...], latent_dim: int, resolved: dict[str, Any]) -> tuple[str, str] | None:
    """Why ``arch`` cannot build its networks with ``resolved`` options, as ``(key, message)``, or
    None: ``model.options`` where the plugin refuses the values (its ValueError or TypeError: a
    width below 1, an unknown activation), ``model.arch`` where the plugin is broken
    (:func:`build_networks`). An OSError is left to the real build (a retry may pass)."""
    return _trial_build(arch, shape, latent_dim, resolved)[0]


def discriminator_batch_normalised(arch: Architecture, shape: tuple[int, ...], latent_dim: int, resolved: dict[str, Any]) -> bool:
    """Whether ``arch``'s discriminator with ``resolved`` options has batch norm (False where it
    cannot be built: :func:`build_problem` says why)."""
    return _trial_build(arch, shape, latent_dim, resolved)[1]


def batch_normalised(module: Any) -> bool:
    from torch.nn.modules.batchnorm import _BatchNorm

    return any(isinstance(m, _BatchNorm) for m in module.modules())


def _trial_build(
    arch: Architecture, shape: tuple[int, ...], latent_dim: int, resolved: dict[str, Any]
) -> tuple[tuple[str, str] | None, bool]:
    """What validation asks of the networks, (refusal, D batch-normalised): built on the CPU and
    dropped, torch's global random state restored (PyTorch's meta device took 0.8 s for resnet_sn
    and 2 s for a first build, against 0.1 s), once per process for the same question (a flow
    validates each of its members)."""
    import torch

    from gancore.errors import PluginError

    key = (arch.name, arch.build, tuple(shape), int(latent_dim), json.dumps(resolved, sort_keys=True, default=repr))
    if key not in _TRIED:
        try:
            with torch.random.fork_rng(devices=[]):
                _, discriminator = build_networks(arch, shape, latent_dim, resolved)
            _TRIED[key] = (None, batch_normalised(discriminator))
        except (ValueError, TypeError) as exc:
            _TRIED[key] = (("model.options", cannot_build(arch.name, resolved, exc)), False)
        except PluginError as exc:
            _TRIED[key] = (("model.arch", str(exc)), False)
        except OSError:
            _TRIED[key] = (None, False)
    return _TRIED[key]


_TRIED: dict[tuple[Any, ...], tuple[tuple[str, str] | None, bool]] = {}


def cannot_build(name: str, resolved: dict[str, Any], exc: Exception) -> str:
    return f"architecture {name!r} cannot build {dict(resolved)}: {exc}"


def _option_type_problem(name: str, value: Any, default: Any) -> str | None:
    """Why ``value`` cannot stand where ``default`` stands, or None: an option takes its default's
    type (a float one takes an int too; a default of None takes anything). Python would take
    ``hidden=1.5`` for width 1 and ``batch_norm='maybe'`` for true."""
    if default is None:
        return None
    expected: tuple[type, ...]
    if isinstance(default, bool):
        expected, label = (bool,), "true or false"
    elif isinstance(default, int):
        expected, label = (int,), "an integer"
    elif isinstance(default, float):
        expected, label = (int, float), "a number"
    elif isinstance(default, str):
        expected, label = (str,), "a string"
    else:
        return None
    if isinstance(value, bool) and bool not in expected or not isinstance(value, expected):
        return f"option {name} must be {label} (its default is {default!r}), got {value!r}"
    return None
