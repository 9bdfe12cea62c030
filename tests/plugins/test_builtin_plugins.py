"""Built-in architectures, the conformance check, and the example third-party plugin."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import tomllib
import torch
from torch import nn
from torch.nn.utils import parametrize

from gancore import Architecture, registry
from gancore.conformance import Report, check_architecture, check_shapes, light_options
from gancore.errors import GanCoreError
from gancore.registry import architectures, options_of
from gancore_plugins import dcgan, mlp, resnet_sn

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gancore-example-plugin"


def _spatial_sizes(module: nn.Module, cls: type, x: torch.Tensor) -> list[int]:
    """Side length of the input of every ``cls`` layer during one forward."""
    sizes: list[int] = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(i[0].shape[-1])) for m in module.modules() if isinstance(m, cls)]
    with torch.no_grad():
        module(x)
    for h in hooks:
        h.remove()
    return sizes


def _spectral_norms(module: nn.Module) -> list[float]:
    return [
        torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2).item()
        for m in module.modules()
        if parametrize.is_parametrized(m, "weight")
    ]


# -- mlp ---------------------------------------------------------------------------------------


def test_mlp_parameter_count_matches_its_layout():
    g, d = mlp.build((2,), 8)  # defaults: 3 hidden layers of 128
    h = architectures()["mlp"].architecture.defaults["hidden"]
    assert sum(p.numel() for p in g.parameters()) == (8 * h + h) + 2 * (h * h + h) + (h * 2 + 2)
    assert sum(p.numel() for p in d.parameters()) == (2 * h + h) + 2 * (h * h + h) + (h + 1)


def test_mlp_vectors_are_unbounded_images_are_tanh_bounded():
    torch.manual_seed(0)
    z = torch.randn(64, 8)
    for shape in ((2,), (1, 28, 28)):
        g, _ = mlp.build(shape, 8, hidden=32, depth=2)
        last = [m for m in g.modules() if isinstance(m, nn.Linear)][-1]
        with torch.no_grad():
            last.weight.mul_(1000)  # pre-activations far beyond +-4
            x = g(z)
        assert x.shape == (64, *shape)
        if len(shape) == 1:
            assert x.abs().max() > 10  # the grid25 modes sit at +-4: a bounded output could not reach them
        else:
            assert x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize("act", ["relu", "leaky_relu"])
def test_mlp_generator_starts_spread_over_every_direction(act):
    """He initialisation keeps the latent's variance through each layer (a ReLU halves it, the
    weights' 2 / fan_in doubles it back): a 10-D generator's first samples spread over all ten
    directions at about unit scale. PyTorch's default init (1 / (3 fan_in)) left every variance
    below 0.003 (a spread of 0.05), and the first steps grew it along one line."""
    torch.manual_seed(0)
    g, _ = mlp.build((10,), 16, g_activation=act)
    with torch.no_grad():
        variances = torch.linalg.eigvalsh(torch.cov(g(torch.randn(4000, 16)).T))
    # measured 0.21 to 1.8 (relu); from 4,000 samples each is within a few percent
    assert variances.min() > 0.1 and variances.max() < 5, variances
    linears = [m for m in g.modules() if isinstance(m, nn.Linear)]
    assert all(float(m.bias.abs().max()) == 0 for m in linears)
    # init=torch reproduces the runs from before the option: every first sample near one spot
    torch.manual_seed(0)
    old, _ = mlp.build((10,), 16, g_activation=act, init="torch")
    with torch.no_grad():
        assert torch.linalg.eigvalsh(torch.cov(old(torch.randn(4000, 16)).T)).max() < 0.01
    with pytest.raises(ValueError, match="init='xavier'; allowed: he, torch"):
        mlp.build((10,), 16, init="xavier")


def test_checkpoints_from_before_the_init_option_resume_with_init_torch():
    """Their identity holds the options resolved then, without ``init``: PyTorch's start is the
    same run, He's (the default now) another one, named."""
    from gancore.checkpoint import describe_mismatch, run_identity
    from gancore.config import validate

    params = validate({"device": "cpu", "model": {"arch": "mlp"}})
    arch = architectures()["mlp"].architecture
    defaults, legacy = arch.defaults, arch.legacy
    assert legacy == {"init": "torch"}
    before = run_identity(params, "hash", {k: v for k, v in defaults.items() if k != "init"}, legacy_options=legacy)
    assert run_identity(params, "hash", {**defaults, "init": "torch"}, legacy_options=legacy) == before
    message = describe_mismatch(before, run_identity(params, "hash", {**defaults, "init": "he"}, legacy_options=legacy))
    assert message == "model (model.options.init: '(absent)' in the checkpoint, 'he' now)"


def test_mlp_batch_norm_and_spectral_norm_options():
    g, d = mlp.build((2,), 8, hidden=32, depth=3, batch_norm=True, spectral_norm=True, g_activation="leaky_relu")
    bns = [m for m in g.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(bns) == 3
    linears = [m for m in g.modules() if isinstance(m, nn.Linear)]
    assert [m.bias is None for m in linears] == [True, True, True, False]  # no bias that batch norm would cancel
    assert any(isinstance(m, nn.LeakyReLU) for m in g.modules())
    assert all(parametrize.is_parametrized(m, "weight") for m in d.modules() if isinstance(m, nn.Linear))
    with pytest.raises(ValueError, match="allowed: relu, leaky_relu"):
        mlp.build((2,), 8, d_activation="tanh")


# -- dcgan -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size, g_sizes, d_kernel",
    [(28, [7, 14], 7), (32, [4, 8, 16], 4), (64, [4, 8, 16, 32], 4)],
)
def test_dcgan_layouts_double_from_a_clean_start(size, g_sizes, d_kernel):
    g, d = dcgan.build((1, size, size), 8, width=8)
    g.eval()
    # Inputs of the stride-2 transposed convolutions: 7 -> 14 -> 28 for MNIST, no cropping.
    assert _spatial_sizes(g, nn.ConvTranspose2d, torch.randn(2, 8))[1:] == g_sizes
    assert g(torch.randn(2, 8)).shape == (2, 1, size, size)
    assert [m for m in d.modules() if isinstance(m, nn.Conv2d)][-1].kernel_size == (d_kernel, d_kernel)


def test_dcgan_init_follows_radford():
    torch.manual_seed(0)
    g, d = dcgan.build((3, 64, 64), 100)
    w = torch.cat([m.weight.detach().flatten() for m in g.modules() if isinstance(m, nn.ConvTranspose2d)])
    # n is in the millions: the sample std of N(0, 0.02) has standard error 0.02/sqrt(2n), under
    # 0.04% of 0.02, so 1% is a wide margin; the mean's standard error is 0.02/sqrt(n).
    assert w.numel() > 3_000_000
    assert abs(w.std().item() - 0.02) < 0.02 * 0.01
    assert abs(w.mean().item()) < 5 * 0.02 / math.sqrt(w.numel())
    gammas = torch.cat([m.weight.detach() for m in d.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(gammas.mean().item() - 1) < 5 * 0.02 / math.sqrt(gammas.numel())


def test_dcgan_discriminator_normalisation_options():
    torch.manual_seed(0)

    def bn_count(net):
        return sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())

    _, d = dcgan.build((3, 32, 32), 8, width=8)
    assert bn_count(d) == 2  # all but the first layer
    _, d = dcgan.build((3, 32, 32), 8, width=8, d_batch_norm=False)
    assert bn_count(d) == 0
    _, d = dcgan.build((3, 32, 32), 8, width=8, spectral_norm=True)  # d_batch_norm stays at its default True
    assert bn_count(d) == 0
    assert all(parametrize.is_parametrized(m, "weight") for m in d.modules() if isinstance(m, nn.Conv2d))
    d.train()
    x = torch.randn(4, 3, 32, 32)
    for _ in range(150):
        d(x)
    # u^T W v never exceeds the top singular value, so W / estimate has norm >= 1; 150 power
    # iterations bring it within a couple of percent of 1 (50 left 1 init in 150 of resnet_sn at 1.021).
    assert all(1 - 1e-4 <= s <= 1.02 for s in _spectral_norms(d))


@pytest.mark.parametrize("shape", [(3, 48, 48), (3, 32, 16), (32, 32), (3, 28)])
def test_dcgan_rejects_unsupported_shapes(shape):
    with pytest.raises(ValueError, match="28, 32, 64"):
        dcgan.build(shape, 8)


# -- resnet_sn ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size, blocks", [(32, 3), (64, 4)])
def test_resnet_sn_structure(size, blocks):
    torch.manual_seed(size)  # the same initial weights and power-iteration start on every run
    g, d = resnet_sn.build((3, size, size), 8, width=8)
    assert len(g.blocks) == blocks  # 4x4 start doubled `blocks` times
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in d.modules())
    weighted = [m for m in d.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert weighted and all(parametrize.is_parametrized(m, "weight") for m in weighted)
    d.train()
    x = torch.rand(4, 3, size, size) * 2 - 1
    # Power iteration converges as (s2/s1)^k: 50 steps left one init in 150 at 1.021 (measured);
    # 150 steps bring the worst of those within 0.3 % of 1.
    for _ in range(150):
        d(x)
    assert all(1 - 1e-4 <= s <= 1.02 for s in _spectral_norms(d))
    # No batch norm, and spectral norm's power iteration is frozen in eval mode: an image's logit
    # does not depend on the rest of the batch.
    d.eval()
    with torch.no_grad():
        assert torch.allclose(d(x)[:1], d(x[:1]), atol=1e-5)
    with pytest.raises(ValueError, match="32, 64"):
        resnet_sn.build((3, 28, 28), 8)


def test_builtin_shapes_and_light_options():
    archs = {name: registry.architectures()[name].architecture for name in ("mlp", "dcgan", "resnet_sn")}
    assert check_shapes(archs["mlp"]) == [(2,), (1, 28, 28), (3, 32, 32)]
    assert check_shapes(archs["dcgan"]) == [(c, s, s) for s in (28, 32, 64) for c in (1, 3)]
    assert light_options(archs["resnet_sn"]) == {"width": 16}
    assert light_options(archs["mlp"])["hidden"] == 32
    assert light_options(archs["dcgan"]) == {**options_of(dcgan.build), "width": 16}


# -- the conformance check catches what it promises to catch ----------------------------------


class _ToyG(nn.Module):
    def __init__(self, shape, latent_dim, flaw):
        super().__init__()
        self.shape, self.flaw = tuple(shape), flaw
        out = math.prod(shape) + (1 if flaw == "wrong_shape" else 0)
        # Batch norm without a bias before it; the "bias_before_bn" flaw adds one it cancels.
        first = nn.Linear(latent_dim, 16, bias=flaw == "bias_before_bn")
        self.net = nn.Sequential(first, nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, out))
        if flaw == "unused_param":
            self.unused = nn.Linear(3, 3)
        self.shift = torch.zeros(())  # a plain attribute, invisible to state_dict

    def forward(self, z):
        x = self.net(z)
        if self.flaw == "hidden_state":
            if self.training:
                self.shift = self.shift + 1.0
            x = x + self.shift
        if self.flaw == "wrong_shape":
            return x
        x = x.view(z.shape[0], *self.shape)
        if len(self.shape) == 3 and self.flaw != "no_tanh":
            x = torch.tanh(x)
        return x * (100 if self.flaw == "no_tanh" else 1)


class _ToyD(nn.Module):
    def __init__(self, shape, flaw):
        super().__init__()
        self.flaw = flaw
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(shape), 16), nn.LeakyReLU(0.2), nn.Linear(16, 2 if flaw == "two_logits" else 1)
        )
        self.nan_param = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        if self.flaw == "views_batch":  # fails on a channels_last batch of several channels
            x = x.view(x.shape[0], -1)
        elif self.flaw == "memory_order" and x.dim() == 4:  # reads the batch in memory order, as a C extension might
            x = x.as_strided((x.shape[0], x[0].numel()), (x[0].numel(), 1))
        out = self.net(x)
        # |p|^0.5 at p = 0 is 0 going forward but its gradient is 0 * inf = NaN.
        bump = self.nan_param.abs().sqrt() if self.flaw == "nan_grad" else self.nan_param * 0.1
        return out.squeeze(1) + bump if self.flaw != "two_logits" else out


def _toy(flaw: str = "", kinds=("vector", "image"), shapes=()) -> Architecture:
    def build(shape, latent_dim, hidden: int = 16, depth: int = 1):
        if flaw == "build_raises":
            raise RuntimeError("cannot build this")
        if flaw == "unseeded":
            torch.manual_seed(int.from_bytes(os.urandom(4), "little"))
        return _ToyG(shape, latent_dim, flaw), _ToyD(shape, flaw)

    defaults = {"hidden": 16, "depth": 1, "extra": 1} if flaw == "unknown_option" else {"hidden": 16, "depth": 1}
    if flaw == "unlisted_option":
        defaults = {"depth": 1}  # given, but incomplete
    elif flaw == "derived":
        defaults = {}  # none given: read from build's signature
    return Architecture(name=f"toy_{flaw or 'ok'}", kinds=set(kinds), build=build, defaults=defaults, shapes=shapes)


def test_options_default_to_builds_signature_when_the_plugin_gives_none():
    arch = _toy("derived")
    assert arch.defaults == {"hidden": 16, "depth": 1}
    assert check_architecture("toy_derived", architecture=arch).ok


def test_conformance_passes_a_correct_architecture():
    report = check_architecture("toy_ok", architecture=_toy())
    assert report.ok, report.render()
    names = {c.name for c in report.checks}
    assert {
        "build",
        "generator output shape",
        "image range [-1, 1]",
        "discriminator output shape",
        "gradients (GAN loss)",
        "batch size 1 (eval)",
        "eval mode",
        "same seed, same output",
        "state_dict round trip",
        "channels_last images",
    } <= names
    assert sorted({c.shape for c in report.checks}) == ["(1, 28, 28)", "(2,)", "(3, 32, 32)", "-"]
    assert report.render().splitlines()[-1].startswith(f"OK: {len(report.checks)} checks passed")


@pytest.mark.parametrize(
    "flaw, failing, detail",
    [
        ("wrong_shape", "generator output shape", "expected (2, 2)"),
        ("no_tanh", "image range [-1, 1]", "output range"),
        ("two_logits", "discriminator output shape", "(2, 2)"),
        ("nan_grad", "gradients (GAN loss)", "D nan_param: non-finite gradient"),
        ("unused_param", "gradients (GAN loss)", "G unused.weight: no gradient (unused)"),
        ("bias_before_bn", "gradients (GAN loss)", "G net.0.bias: vanishing gradient"),
        ("unseeded", "same seed, same output", "max |diff|"),
        ("hidden_state", "state_dict round trip", "outputs differ"),
        ("build_raises", "build", "RuntimeError: cannot build this"),
        ("views_batch", "channels_last images", "instead of view; or train with train.channels_last: false"),
        ("memory_order", "channels_last images", "more than rounding: set train.channels_last: false"),
        ("unknown_option", "options match build", "defaults lists extra but build does not accept it"),
        ("unlisted_option", "options match build", "build takes hidden but defaults does not list it"),
    ],
)
def test_conformance_names_the_broken_promise(flaw, failing, detail):
    report = check_architecture(f"toy_{flaw}", architecture=_toy(flaw))
    assert not report.ok
    hits = [c for c in report.failures if c.name == failing]
    assert hits, report.render()
    assert any(detail in c.detail for c in hits), report.render()
    assert f"{failing} at " in report.render().splitlines()[-1]


def test_conformance_flags_a_declared_shape_outside_the_kinds():
    report = check_architecture("toy", architecture=_toy(kinds=("image",), shapes=((2,), (1, 28, 28))))
    assert [c.shape for c in report.failures if c.name == "supported shape"] == ["(2,)"]


def test_conformance_leaves_the_callers_random_state_and_threads_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        check_architecture("toy_ok", architecture=_toy(kinds=("vector",)))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_architecture_is_a_gancore_error_listing_installed():
    with pytest.raises(GanCoreError, match=r"unknown architecture 'nope'; installed: .*dcgan, mlp, pacgan, resnet_sn"):
        check_architecture("nope")


def test_report_without_checks_is_not_ok():
    assert not Report("empty").ok


# -- the example third-party plugin -----------------------------------------------------------


def _example_project() -> dict:
    return tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]


def test_example_plugin_is_found_through_its_entry_point_alone(tmp_path, monkeypatch):
    """What `pip install` would write (a dist-info with entry_points.txt) is all gancore needs."""
    project = _example_project()
    version = "0.0.0+test"  # distinct from any real install, to prove this dist-info was the one read
    dist_info = tmp_path / f"{project['name'].replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {version}\n")
    entry_points = "".join(f"{k} = {v}\n" for k, v in project["entry-points"]["gancore"].items())
    (dist_info / "entry_points.txt").write_text("[gancore]\n" + entry_points)
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.syspath_prepend(str(tmp_path))

    found = registry.discover()
    assert {"mlp", "dcgan", "resnet_sn", "tiny_mlp"} <= set(found)
    reg = found["tiny_mlp"]
    assert (reg.plugin, reg.distribution, reg.version) == ("tiny_mlp", "gancore-example-plugin", version)
    assert reg.architecture.kinds == {"vector"}
    report = check_architecture("tiny_mlp", architecture=reg.architecture)
    assert report.ok, report.render()
