"""Plugin discovery, Architecture validation, option resolution and the `gan plugins` commands."""

from __future__ import annotations

import math
import types
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import gancore
from gancore import Architecture, hookimpl, registry
from gancore.cli import main
from gancore.conformance import check_shapes
from gancore.registry import PluginWarning, get_architecture, resolve_options
from helpers import PARAMS

BUILTINS = ("mlp", "dcgan", "resnet_sn")


def _build(shape, latent_dim, hidden: int = 8, scale: float = 1.0):
    g = nn.Sequential(nn.Linear(latent_dim, math.prod(shape)), nn.Unflatten(1, tuple(shape)))
    d = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), 1))
    return g, d


def _arch(name: str, **kw) -> Architecture:
    return Architecture(name=name, kinds={"vector"}, build=_build, defaults={"hidden": 8, "scale": 1.0}, **kw)


def _module(name: str, hook) -> types.ModuleType:
    module = types.ModuleType(name)
    module.gancore_architectures = hookimpl(hook)
    return module


def _ep(name: str, load, dist: str = "fake-dist", version: str = "1.0"):
    """What registry reads from an importlib.metadata EntryPoint."""
    return SimpleNamespace(name=name, dist=SimpleNamespace(name=dist, version=version), load=load)


def _fail(exc: Exception):
    def raise_():
        raise exc

    return raise_


@pytest.fixture
def fresh_registry():
    """`architectures()` caches for the process; tests that swap the entry points must not leak."""
    registry.architectures.cache_clear()
    yield
    registry.architectures.cache_clear()


# -- discovery ---------------------------------------------------------------------------------


def test_broken_plugins_are_named_and_skipped_the_rest_load(monkeypatch):
    eps = [
        _ep("good", lambda: _module("good", lambda: [_arch("alpha")]), dist="good-dist", version="1.2"),
        _ep("boom", _fail(ImportError("No module named 'torch_extra'")), dist="boom-dist"),
        _ep("wrong", lambda: _module("wrong", lambda: ["not an architecture"]), dist="wrong-dist"),
        _ep("scalar", lambda: _module("scalar", lambda: 5), dist="scalar-dist"),
        _ep("dup", lambda: _module("dup", lambda: [_arch("alpha"), _arch("beta")]), dist="dup-dist"),
        _ep("hookfails", lambda: _module("hookfails", _fail(RuntimeError("hook exploded"))), dist="hf-dist"),
    ]
    monkeypatch.setattr(registry, "_entry_points", lambda: eps)
    with pytest.warns(PluginWarning) as record:
        found = registry.discover()

    assert sorted(found) == ["alpha", "beta"]
    assert (found["alpha"].plugin, found["alpha"].distribution, found["alpha"].version) == ("good", "good-dist", "1.2")
    assert found["beta"].plugin == "dup"  # the duplicate alone was skipped, not its whole plugin
    messages = [str(w.message) for w in record if issubclass(w.category, PluginWarning)]
    expected = [
        ("plugin 'boom' (from boom-dist) failed to load", "ImportError: No module named 'torch_extra'"),
        ("plugin 'wrong' (from wrong-dist) returned str, not an Architecture", ""),
        ("plugin 'scalar' (from scalar-dist) returned int, not an iterable of Architecture", ""),
        ("plugin 'dup' (from dup-dist): architecture 'alpha' is already provided by plugin 'good' (from good-dist)", ""),
        ("plugin 'hookfails' (from hf-dist) failed to load", "RuntimeError: hook exploded"),
    ]
    assert len(messages) == len(expected), messages
    for head, tail in expected:
        assert any(head in m and tail in m for m in messages), (head, messages)


def test_directly_registered_modules_sit_beside_entry_points(monkeypatch):
    monkeypatch.setattr(registry, "_entry_points", lambda: [])
    found = registry.discover(extra_modules=(_module("local_plugin", lambda: [_arch("local")]),))
    assert (found["local"].plugin, found["local"].distribution) == ("local_plugin", "(direct)")


def test_a_third_party_architecture_named_like_a_builtin_never_replaces_it(monkeypatch):
    """Of two architectures of one name the first registered is kept, and registration followed
    the path's order of distributions: a plugin listed before gancore that also calls itself
    "mlp" replaced the default architecture, and the warning blamed the built-in (found by a
    review). This project's plugins now register first, and the warning names the other one."""
    builtin = _ep("mlp", lambda: _module("mlp", lambda: [_arch("mlp")]), dist="gancore", version=gancore.__version__)
    impostor = _ep("clash", lambda: _module("clash", lambda: [_arch("mlp", description="impostor")]), dist="revplug", version="0.1")
    monkeypatch.setattr(registry, "_entry_points", lambda: [impostor, builtin])
    with pytest.warns(PluginWarning) as record:
        found = registry.discover()
    assert (found["mlp"].plugin, found["mlp"].distribution) == ("mlp", "gancore")
    (message,) = [str(w.message) for w in record if issubclass(w.category, PluginWarning)]
    assert message.startswith(
        "plugin 'clash' (from revplug): architecture 'mlp' is already provided by plugin 'mlp' (from gancore) (built in)"
    )
    assert "give it another name" in message and "this one was skipped" in message


def test_an_entry_point_named_like_a_builtin_one_is_named_in_words(monkeypatch, capsys, fresh_registry):
    """pluggy refused it with "Plugin name already registered: mlp=<module> {...every plugin...}";
    the CLI printed that in Python's warning format (gancore's file and line, the warning's code)."""
    real = list(registry._entry_points())
    second = _ep("mlp", lambda: _module("mine", lambda: [_arch("mine")]), dist="my-plugs")
    monkeypatch.setattr(registry, "_entry_points", lambda: [*real, second])
    with pytest.warns(PluginWarning) as record:
        found = registry.discover()
    assert "mine" not in found and found["mlp"].distribution == "gancore"
    (message,) = [str(w.message) for w in record if issubclass(w.category, PluginWarning)]
    assert message == (
        "plugin 'mlp' (from my-plugs) was skipped: plugin 'mlp' (from gancore) has that name already; "
        "rename the entry point ([project.entry-points.gancore] in its pyproject.toml)"
    )
    import warnings

    def said(seen) -> str:  # as Python prints a warning, through its formatwarning
        (w,) = [w for w in seen if issubclass(w.category, PluginWarning)]
        return warnings.formatwarning(w.message, w.category, w.filename, w.lineno)

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert main(["plugins", "list"]) == 0
    assert said(seen) == f"gan plugins: warning: {message}\n"
    # the flows' own CLIs say it so too (they said it in Python's format), under their name
    from gancore_flows.sweep import main as sweep

    registry.architectures.cache_clear()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert sweep(["--params", str(PARAMS), "-S", "model.arch=nosuch"]) == 2
    assert said(seen) == f"gan-sweep: warning: {message}\n"
    assert "model.arch: 'nosuch' is not an installed architecture" in capsys.readouterr().err


def test_a_plugin_module_without_hookimpl_is_named_not_silently_empty(monkeypatch):
    module = types.ModuleType("nohook")
    module.gancore_architectures = lambda: [_arch("nohook")]  # @hookimpl forgotten
    monkeypatch.setattr(registry, "_entry_points", lambda: [_ep("nohook", lambda: module, dist="revplug")])
    with pytest.warns(PluginWarning, match=r"plugin 'nohook' \(from revplug\) implements no gancore hook .*@gancore.hookimpl"):
        found = registry.discover()
    assert "nohook" not in found


def test_builtins_come_from_this_project_distribution():
    found = registry.discover()
    for name in BUILTINS:
        reg = found[name]
        assert (reg.plugin, reg.distribution, reg.version) == (name, "gancore", gancore.__version__)
        assert reg.architecture.name == name


# -- Architecture and options ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kinds": set()}, "kinds must be a non-empty subset of \\['image', 'vector'\\]"),
        ({"kinds": {"vector", "audio"}}, "got \\['audio', 'vector'\\]"),
        ({"build": "not callable"}, "build must be callable"),
        ({"name": "two words"}, "identifier-like"),
        ({"defaults": [("hidden", 8)]}, "defaults must be a dict"),
        ({"legacy": {"width": 1}}, "legacy must be a dict of its options \\(hidden, scale\\), got \\{'width': 1\\}"),
        ({"legacy": [("hidden", 8)]}, "legacy must be a dict of its options"),
    ],
)
def test_architecture_validation(kwargs, message):
    base = {"name": "x", "kinds": {"vector"}, "build": _build}
    with pytest.raises(ValueError, match=message):
        Architecture(**{**base, **kwargs})


def test_architecture_shapes_and_supports():
    arch = Architecture(name="img", kinds=["image"], build=_build, shapes=[[3, 32, 32], (1.0, 28, 28)])
    assert arch.kinds == frozenset({"image"}) and arch.shapes == ((3, 32, 32), (1, 28, 28))
    assert arch.supports((3, 32, 32)) and not arch.supports((3, 64, 64)) and not arch.supports((2,))
    both = Architecture(name="both", kinds={"vector", "image"}, build=_build)
    assert both.supports((5,)) and both.supports((3, 64, 64))  # no shapes listed: any of its kinds


def test_resolve_options_overlays_defaults_and_names_allowed_keys():
    arch = _arch("alpha")
    assert resolve_options(arch, {"hidden": 64}) == {"hidden": 64, "scale": 1.0}
    assert resolve_options(arch, {}) == {"hidden": 8, "scale": 1.0}
    with pytest.raises(ValueError, match="'alpha' has no option\\(s\\) depth, widht; allowed: hidden, scale"):
        resolve_options(arch, {"widht": 3, "depth": 2, "hidden": 4})


def test_options_take_their_default_s_type():
    """Python would build hidden=1.5 at width 1 and read batch_norm='maybe' as true: an option
    takes its default's type (a float one an int too; YAML's true is no integer)."""
    arch = _arch("alpha")
    assert resolve_options(arch, {"scale": 2}) == {"hidden": 8, "scale": 2}
    for value, shown in ((1.5, "1.5"), ("abc", "'abc'"), (True, "True"), (None, "None")):
        with pytest.raises(ValueError, match=f"option hidden must be an integer \\(its default is 8\\), got {shown}"):
            resolve_options(arch, {"hidden": value})
    with pytest.raises(ValueError, match="option scale must be a number"):
        resolve_options(arch, {"scale": "big"})
    mlp = get_architecture("mlp").architecture
    with pytest.raises(ValueError, match="option batch_norm must be true or false .* got 'maybe'"):
        resolve_options(mlp, {"batch_norm": "maybe"})
    with pytest.raises(ValueError, match="option g_activation must be a string"):
        resolve_options(mlp, {"g_activation": 3})


def test_options_a_plugin_cannot_build_are_a_parameter_error():
    from gancore.errors import ParamsError
    from gancore.modelio import build_pair

    with pytest.raises(ParamsError, match="model.options: architecture 'mlp' cannot build .*hidden >= 1"):
        build_pair("mlp", (2,), 2, {"hidden": -3})


def test_get_architecture_unknown_lists_installed():
    with pytest.raises(KeyError, match="unknown architecture 'nope'; installed: dcgan, mlp, pacgan, resnet_sn"):
        registry.get_architecture("nope")


# -- gan plugins list / check ------------------------------------------------------------------


def test_plugins_list_shows_builtins_with_source_and_options(capsys):
    assert main(["plugins", "list"]) == 0
    out = capsys.readouterr().out
    assert f"mlp  [image, vector]  from mlp (gancore {gancore.__version__})" in out
    assert f"dcgan  [image]  from dcgan (gancore {gancore.__version__})" in out
    assert f"resnet_sn  [image]  from resnet_sn (gancore {gancore.__version__})" in out
    assert "options: width=64, d_batch_norm=True, spectral_norm=False" in out
    assert "options: width=128" in out
    assert "options: hidden=128, depth=3, g_activation='relu', d_activation='leaky_relu', batch_norm=False, spectral_norm=False" in out
    assert "shapes: (1, 28, 28), (3, 28, 28), (1, 32, 32), (3, 32, 32), (1, 64, 64), (3, 64, 64)" in out
    assert out.count("checkpoints from before an option resume under:") == 1 and "resume under: init='torch'" in out


@pytest.mark.parametrize("name", BUILTINS)
def test_plugins_check_passes_every_builtin(name, capsys):
    assert main(["plugins", "check", name]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"conformance check of {name!r} from {name} (gancore")
    assert lines[-1].startswith("OK: ") and " FAIL " not in out
    assert out.count("same seed, same output") == len(check_shapes(registry.architectures()[name].architecture))


def _unbounded_images(shape, latent_dim):
    g = nn.Sequential(nn.Linear(latent_dim, math.prod(shape)), nn.Unflatten(1, tuple(shape)))
    with torch.no_grad():
        g[0].weight.mul_(50)  # no tanh: images far outside [-1, 1]
    d = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), 1))
    return g, d


def test_plugins_check_fails_a_broken_plugin_and_names_the_check(monkeypatch, capsys, fresh_registry):
    broken = _module("broken", lambda: [Architecture(name="unbounded", kinds={"image"}, build=_unbounded_images, shapes=((1, 28, 28),))])
    real = list(registry._entry_points())
    monkeypatch.setattr(registry, "_entry_points", lambda: [*real, _ep("broken", lambda: broken, dist="broken-dist")])
    assert main(["plugins", "check", "unbounded"]) == 1
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "image range [-1, 1]" in line)
    assert row.split()[:5] == ["(1,", "28,", "28)", "image", "range"] and " FAIL " in row
    assert "outside [-1, 1]" in next(line for line in out.splitlines() if "eval mode" in line)  # why it failed
    # Out of range in training mode and again in eval mode; nothing else is wrong with it.
    assert (
        out.strip()
        .splitlines()[-1]
        .startswith("FAILED: 2 of 16 checks failed (image range [-1, 1] at (1, 28, 28); eval mode at (1, 28, 28))")
    )


def test_plugins_check_unknown_name_or_device_exits_2_and_a_missing_cuda_1(capsys):
    assert main(["plugins", "check", "nope"]) == 2  # a usage error, as every other
    assert "'nope' is not an installed architecture; installed: dcgan, mlp, pacgan, resnet_sn" in capsys.readouterr().err
    for name in ("nonsense", "meta", "mps"):  # meta ended in a traceback, mps in a page of dispatcher text
        assert main(["plugins", "check", "mlp", "--device", name]) == 2
        assert f"--device: {name!r} is not a device the check runs on; pass cpu, cuda or cuda:N" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["plugins", "check", "mlp", "--device", "cuda"]) == 1
        err = capsys.readouterr().err
        assert "device 'cuda' is not usable here" in err and len(err.strip().splitlines()) == 1


class _DropsACoordinate(nn.Module):
    def __init__(self, latent_dim: int):
        super().__init__()
        self.net = nn.Linear(latent_dim, 1)

    def forward(self, z):
        return self.net(z)


def _wrong_shape(shape, latent_dim, hidden: int = 8, scale: float = 1.0):
    return _DropsACoordinate(latent_dim), _build(shape, latent_dim)[1]


class _OnMeta(nn.Module):
    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, z):
        return self.inner(z).to("meta")


def _wrong_device(shape, latent_dim, hidden: int = 8, scale: float = 1.0):
    g, d = _build(shape, latent_dim)
    return _OnMeta(g), d


def _wrong_dtype(shape, latent_dim, hidden: int = 8, scale: float = 1.0):
    g, d = _build(shape, latent_dim)
    return g.double(), d


@pytest.mark.parametrize(
    "build, message",
    [
        (
            _wrong_shape,
            r"generator returned \(2, 1\) torch.float32 on cpu for 2 latent vectors \(torch.float32 on cpu\); expected \(2, 2\) torch.float32 on cpu",
        ),
        # the discriminator took the blame ("Tensor on device cpu is not on the expected device meta")
        (
            _wrong_device,
            r"generator returned \(2, 2\) torch.float32 on meta for 2 latent vectors \(torch.float32 on cpu\); expected \(2, 2\) torch.float32 on cpu",
        ),
        (_wrong_dtype, r"generator fails on a batch of latent vectors \(2, \d+\): RuntimeError: mat1 and mat2 must have the same dtype"),
    ],
)
def test_train_names_a_plugin_that_breaks_the_output_contract_in_one_line(monkeypatch, capsys, fresh_registry, tmp_path, build, message):
    """A plugin whose networks do not fit together failed several calls deep in the training loop
    with a bare matmul error (found by a review): training checks one batch of two first, exits 1
    naming the architecture and `gan plugins check`, and writes no model."""
    from helpers import PARAMS, make_layout

    make_layout(tmp_path)  # prepared ring points
    plugin = _module("odd", lambda: [Architecture(name="odd", kinds={"vector"}, build=build, defaults={"hidden": 8, "scale": 1.0})])
    real = list(registry._entry_points())
    monkeypatch.setattr(registry, "_entry_points", lambda: [*real, _ep("odd", lambda: plugin, dist="odd-dist")])
    args = ["train", "--params", str(PARAMS), "--out", str(tmp_path), "-S", "model.arch=odd", "-S", "mixture.enabled=false"]
    import re

    # train.devices=2: said once, before torchrun starts (each rank said it, then torchrun's traceback)
    for devices in ("1", "2"):
        assert main([*args, "-S", "tracking.enabled=false", "-S", f"train.devices={devices}"]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert re.search(r"architecture 'odd' " + message, err), err
        assert "`gan plugins check odd`" in err
        assert not (tmp_path / "models" / "generator.pt").exists()


def _generator_only(shape, latent_dim, hidden: int = 8, scale: float = 1.0):
    return _build(shape, latent_dim)[0]


def _needs_a_library(shape, latent_dim, hidden: int = 8, scale: float = 1.0):
    raise RuntimeError("CUDA kernel library missing")


def _takes_width(shape, latent_dim, width: int = 8):
    return _build(shape, latent_dim)


@pytest.mark.parametrize(
    "build, message",
    [
        # was "model.options: architecture 'odd' cannot build {...}: cannot unpack non-iterable ..."
        (_generator_only, r"architecture 'odd': build returned Sequential, expected \(generator, discriminator\) torch modules"),
        # was a traceback, and under Prefect two retries of a failure that repeats
        (_needs_a_library, r"architecture 'odd' failed to build its networks: RuntimeError: CUDA kernel library missing"),
        # was blamed on model.options the user never set: "got an unexpected keyword argument 'hidden'"
        (
            _takes_width,
            r"architecture 'odd': its build does not take its own options \{'hidden': 8, 'scale': 1.0\} \(got an unexpected keyword argument 'hidden'\)",
        ),
    ],
)
def test_a_broken_plugin_is_refused_under_model_arch_before_anything_runs(monkeypatch, capsys, fresh_registry, tmp_path, build, message):
    """Validation builds the pair once: a plugin that breaks its contract there is refused as
    model.arch (exit 2, nothing written, no run opened) naming what broke and `gan plugins check`;
    a user's option values stay model.options. The real build says the same (exit 1)."""
    import re

    from gancore.errors import PluginError
    from gancore.modelio import build_pair
    from helpers import PARAMS

    plugin = _module("odd", lambda: [Architecture(name="odd", kinds={"vector"}, build=build, defaults={"hidden": 8, "scale": 1.0})])
    real = list(registry._entry_points())
    monkeypatch.setattr(registry, "_entry_points", lambda: [*real, _ep("odd", lambda: plugin, dist="odd-dist")])
    out = tmp_path / "run"
    args = ["prepare", "--params", str(PARAMS), "--out", str(out), "-S", "model.arch=odd", "-S", "mixture.enabled=false"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert re.search(r"  model.arch: " + message, err), err
    assert "`gan plugins check odd`" in err and "model.options" not in err
    assert not out.exists()
    with pytest.raises(PluginError, match=message):
        build_pair("odd", (2,), 4, {})
