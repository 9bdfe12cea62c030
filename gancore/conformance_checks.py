"""The individual conformance checks, split from :mod:`gancore.conformance` (the report and the driver that runs them per shape)."""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from gancore.registry import Architecture, build_networks

if TYPE_CHECKING:  # pragma: no cover
    from gancore.conformance import Report

LATENT_DIM = 8
BATCH = 4  # training-path checks: small, but several examples per batch-norm statistic
FORWARD_BATCH = 2  # the forward at the default (full) widths
LIGHT = {"width": 16, "hidden": 32}  # layer-width options lowered for the training-path checks
VANISHING = 1e-6  # relative gradient norm below which a parameter is not learning (see _gradients)
SEED = 1234
PACK = 2


def light_options(arch: Architecture) -> dict[str, Any]:
    """Defaults with layer widths cut down, for the checks that run backward passes.

    Integer options named like a layer width (see ``LIGHT``) are lowered; the structure of the
    networks does not change, their cost drops by about the square of the factor.
    """
    options = dict(arch.defaults)
    for key, small in LIGHT.items():
        value = options.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > small:
            options[key] = small
    return options


def _check_options(arch: Architecture, report: Report) -> None:
    """``defaults`` must name exactly the options ``build`` takes, with plain (YAML/JSON) values."""
    problems = []
    try:
        json.dumps(arch.defaults)
    except (TypeError, ValueError) as exc:
        problems.append(f"defaults are not plain values (they go into params.yaml and model files): {exc}")
    try:
        params = list(inspect.signature(arch.build).parameters.values())
    except (TypeError, ValueError):
        params = None
    if params is not None:
        named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)][2:]
        takes_any = any(p.kind == p.VAR_KEYWORD for p in params)
        unlisted = [p.name for p in named if p.name not in arch.defaults]
        unknown = [k for k in arch.defaults if not takes_any and k not in {p.name for p in named}]
        if unlisted:
            problems.append(f"build takes {', '.join(unlisted)} but defaults does not list it (users could not set it)")
        if unknown:
            problems.append(f"defaults lists {', '.join(unknown)} but build does not accept it")
    detail = "; ".join(problems) or (", ".join(f"{k}={v!r}" for k, v in arch.defaults.items()) or "(no options)")
    report.add("options match build", None, not problems, detail)


def _attempt(report: Report, name: str, shape: tuple[int, ...], fn: Callable[[], tuple[bool, str]]) -> bool:
    try:
        passed, detail = fn()
    except Exception as exc:  # the check reports a plugin's exception instead of dying on it
        passed, detail = False, f"raised {type(exc).__name__}: {exc}"
    return report.add(name, shape, passed, detail)


def _build(arch: Architecture, shape: tuple[int, ...], options: dict[str, Any], seed: int, dev) -> tuple[Any, Any]:
    torch.manual_seed(seed)
    g, d = build_networks(arch, shape, LATENT_DIM, options)
    return g.to(dev).train(), d.to(dev).train()


def _logit_shape_ok(logits, batch: int) -> bool:
    return tuple(logits.shape) in ((batch,), (batch, 1))


def _range(x) -> str:
    return f"[{x.min().item():.4g}, {x.max().item():.4g}]"


def _check_shape(arch: Architecture, shape: tuple[int, ...], dev, report: Report) -> None:
    image = len(shape) == 3
    report.add(
        "supported shape",
        shape,
        arch.supports(shape),
        f"kinds {sorted(arch.kinds)}" + (f", shapes {list(arch.shapes)}" if arch.shapes else ""),
    )
    cpu = torch.Generator().manual_seed(SEED)
    z = torch.randn(BATCH, LATENT_DIM, generator=cpu).to(dev)
    real = (torch.rand(BATCH, *shape, generator=cpu) * 2 - 1 if image else torch.randn(BATCH, *shape, generator=cpu) * 2).to(dev)

    # At the defaults (what users train): build, size, and one forward at a small batch.
    nets = _checked_build(arch, shape, arch.defaults, dev, report, "build")
    if nets is None:
        return
    g, d = nets
    n_g = sum(p.numel() for p in g.parameters() if p.requires_grad)
    n_d = sum(p.numel() for p in d.parameters() if p.requires_grad)
    report.add("parameters", shape, n_g > 0 and n_d > 0, f"G {n_g:,} / D {n_d:,} trainable")
    if not _forward_checks(g, d, z[:FORWARD_BATCH], real[:FORWARD_BATCH], shape, report):
        return

    # The training path (backward passes, rebuilds) at light widths, so the check stays fast.
    options = light_options(arch)
    if options != arch.defaults:
        changed = ", ".join(f"{k}={v!r}" for k, v in options.items() if arch.defaults[k] != v)
        nets = _checked_build(arch, shape, options, dev, report, f"build ({changed})")
        if nets is None:
            return
        g, d = nets
    _attempt(report, "gradients (GAN loss)", shape, lambda: _gradients(g, d, z, real))
    _attempt(report, "gradient penalty (double backward)", shape, lambda: _gradient_penalty(g, d, z, real))
    _attempt(report, "batch size 1 (eval)", shape, lambda: _batch_one(g, d, z, shape))
    _attempt(report, "eval mode", shape, lambda: _eval_mode(g, d, z, image))
    _attempt(report, "same seed, same output", shape, lambda: _same_seed(arch, shape, options, dev, z, real))
    _attempt(report, "state_dict round trip", shape, lambda: _round_trip(arch, shape, options, dev, g, d, z))
    _attempt(report, f"packed discriminator (model.pack={PACK})", shape, lambda: _packed(arch, shape, options, dev, real))
    if image:
        _attempt(report, "channels_last images", shape, lambda: _channels_last(arch, shape, options, dev, z, real))


def _checked_build(arch, shape, options, dev, report: Report, label: str):
    nets: list[Any] = []

    def build():
        nets.extend(_build(arch, shape, options, SEED, dev))
        return True, f"{type(nets[0]).__name__} / {type(nets[1]).__name__}"

    return nets if _attempt(report, label, shape, build) else None


def _forward_checks(g, d, z, real, shape, report: Report) -> bool:
    """Output contract of one training-mode forward; False when later checks would be moot."""
    batch = z.shape[0]
    out: dict[str, Any] = {}

    def g_shape():
        with torch.no_grad():
            out["fake"] = fake = g(z)
        expected = (batch, *shape)
        ok = tuple(fake.shape) == expected and fake.is_floating_point() and fake.device.type == z.device.type
        return ok, f"{tuple(fake.shape)} {fake.dtype} on {fake.device.type}" + (
            "" if ok else f"; expected {expected} floating on {z.device.type}"
        )

    if not _attempt(report, "generator output shape", shape, g_shape):
        return False
    fake = out["fake"]
    n_bad = int((~torch.isfinite(fake)).sum())
    report.add("generator output finite", shape, n_bad == 0, f"{n_bad} non-finite of {fake.numel()}")
    if len(shape) == 3:
        inside = bool(((fake >= -1) & (fake <= 1)).all())
        report.add("image range [-1, 1]", shape, inside, f"output range {_range(fake)}")

    def d_shape():
        with torch.no_grad():
            logits = d(real)
        ok = _logit_shape_ok(logits, batch) and bool(torch.isfinite(logits).all())
        return ok, f"{tuple(logits.shape)} range {_range(logits)}" + ("" if ok else f"; expected ({batch},) or ({batch}, 1), finite")

    return _attempt(report, "discriminator output shape", shape, d_shape)


def _gradients(g, d, z, real) -> tuple[bool, str]:
    """One discriminator and one generator loss (non-saturating); every parameter must learn.

    A gradient counts as vanishing below ``VANISHING`` times the largest one in its network: a
    parameter whose effect is cancelled (a bias right before batch norm) gets pure round-off,
    around 1e-8 of the largest, while the smallest live gradients of the built-in architectures
    at initialisation are above 1e-3 of it.
    """
    g.train(), d.train()
    fake = g(z)
    loss_d = F.softplus(-d(real)).mean() + F.softplus(d(fake.detach())).mean()
    loss_g = F.softplus(-d(fake)).mean()
    problems, summary = [], []
    for tag, net, loss in (("G", g, loss_g), ("D", d, loss_d)):
        named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        norms: list[tuple[float, str]] = []
        for (pname, _), grad in zip(named, grads):
            if grad is None:
                problems.append(f"{tag} {pname}: no gradient (unused)")
            elif not bool(torch.isfinite(grad).all()):
                problems.append(f"{tag} {pname}: non-finite gradient")
            else:
                norms.append((grad.norm().item(), pname))
        largest = max((n for n, _ in norms), default=0.0)
        for norm, pname in norms:
            if norm == 0.0 or norm < VANISHING * largest:
                problems.append(
                    f"{tag} {pname}: {'zero' if norm == 0.0 else 'vanishing'} gradient (|grad| {norm:.2e}, largest in {tag} {largest:.2e})"
                )
        if norms:
            low, low_name = min(norms)
            summary.append(f"{tag} {len(named)} tensors, smallest |grad| {low:.2e} ({low_name}) vs largest {largest:.2e}")
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        return False, "; ".join(problems[:5]) + more
    return True, "; ".join(summary)


def _gradient_penalty(g, d, z, real) -> tuple[bool, str]:
    """WGAN-GP needs the gradient of a gradient through the discriminator."""
    g.train(), d.train()
    with torch.no_grad():
        fake = g(z)
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device)
    x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    (grad_x,) = torch.autograd.grad(d(x_hat).sum(), x_hat, create_graph=True)
    penalty = ((grad_x.flatten(1).norm(dim=1) - 1) ** 2).mean()
    params = [p for p in d.parameters() if p.requires_grad]
    grads = [gr for gr in torch.autograd.grad(penalty, params, allow_unused=True) if gr is not None]
    finite = bool(torch.isfinite(penalty)) and all(bool(torch.isfinite(gr).all()) for gr in grads)
    moving = sum(bool(gr.any()) for gr in grads)
    return finite and moving > 0, f"penalty {penalty.item():.4g}; {moving}/{len(params)} D tensors get a finite non-zero gradient" + (
        "" if finite else "; non-finite values"
    )


def _batch_one(g, d, z, shape) -> tuple[bool, str]:
    g.eval(), d.eval()
    with torch.no_grad():
        x = g(z[:1])
        logits = d(x)
    finite = bool(torch.isfinite(x).all() and torch.isfinite(logits).all())
    ok = tuple(x.shape) == (1, *shape) and _logit_shape_ok(logits, 1) and finite
    return ok, f"G {tuple(x.shape)}, D {tuple(logits.shape)}, finite {finite}"


def _state(*nets) -> list[Any]:
    return [t.detach().clone() for net in nets for t in net.state_dict().values()]


def _eval_mode(g, d, z, image: bool) -> tuple[bool, str]:
    """In eval mode a forward must be a pure function: same output twice, no state changed."""
    g.eval(), d.eval()
    before = _state(g, d)
    with torch.no_grad():
        a, b = g(z), g(z)
        la, lb = d(a), d(a)
    after = _state(g, d)
    repeat = torch.equal(a, b) and torch.equal(la, lb)
    unchanged = len(before) == len(after) and all(torch.equal(x, y) for x, y in zip(before, after))
    finite = bool(torch.isfinite(a).all() and torch.isfinite(la).all())
    inside = not image or bool(((a >= -1) & (a <= 1)).all())
    ok = repeat and unchanged and finite and inside
    outside = "" if inside else " outside [-1, 1]"
    return ok, f"repeatable {repeat}, state unchanged {unchanged}, finite {finite}, G range {_range(a)}{outside}"


def _same_seed(arch, shape, options, dev, z, real) -> tuple[bool, str]:
    """Two builds under one seed, each followed by the same seeded training-mode forward."""
    runs = []
    for _ in range(2):
        g, d = _build(arch, shape, options, SEED, dev)
        torch.manual_seed(SEED + 1)  # for architectures that draw noise in their forward
        fake = g(z)
        runs.append((fake, d(real), d(fake)))
    (a, b) = runs
    if all(torch.equal(x, y) for x, y in zip(a, b)):
        return True, "rebuilt with the same seed: G(z), D(x) and D(G(z)) bit-identical"
    diffs = [(x - y).abs().max().item() if x.shape == y.shape else float("nan") for x, y in zip(a, b)]
    return False, "rebuilt with the same seed: max |diff| G(z) {:.3g}, D(x) {:.3g}, D(G(z)) {:.3g}".format(*diffs)


def _packed(arch, shape, options, dev, real) -> tuple[bool, str]:
    """PacGAN: the same plugin builds the discriminator for PACK samples concatenated along the
    first axis; it must take the packed batch and give one logit per group, with gradients."""
    from gancore.modelio import packed_shape

    packed = packed_shape(shape, PACK)
    torch.manual_seed(SEED)
    built = arch.build(packed, LATENT_DIM, **options)
    d = built[1].to(dev).train()
    x = real.reshape(real.shape[0] // PACK, *packed).clone().requires_grad_(True)
    logits = d(x)
    (grad,) = torch.autograd.grad(logits.float().sum(), x)
    ok = _logit_shape_ok(logits, x.shape[0]) and bool(torch.isfinite(logits).all()) and bool(grad.abs().sum() > 0)
    return (
        ok,
        f"built at {packed}: {tuple(x.shape)} -> logits {tuple(logits.shape)}, input gradient {'non-zero' if grad.abs().sum() > 0 else 'zero'}",
    )


def _channels_last(arch, shape, options, dev, z, real) -> tuple[bool, str]:
    """The trainer lays image batches and both networks out channels_last
    (``train.channels_last: auto``): the same seeded training-mode forward and G's gradient must
    come out as with contiguous memory, up to float32 rounding (another summation order in the
    convolutions: relative differences near 1e-6; 1e-3 of the output's scale leaves room for a
    batch norm's division). A ``view`` of a batch fails here."""

    def run(last: bool) -> list[torch.Tensor]:
        g, d = _build(arch, shape, options, SEED, dev)
        x = real
        if last:
            g, d = g.to(memory_format=torch.channels_last), d.to(memory_format=torch.channels_last)
            x = real.contiguous(memory_format=torch.channels_last)
        torch.manual_seed(SEED + 1)  # for architectures that draw noise in their forward
        fake = g(z)
        logits_fake = d(fake)
        grads = torch.autograd.grad(F.softplus(-logits_fake).mean(), [p for p in g.parameters() if p.requires_grad], allow_unused=True)
        return [fake, d(x), logits_fake, *(gr for gr in grads if gr is not None)]

    plain = run(False)
    try:
        last = run(True)
    except RuntimeError as exc:
        return False, f"raised RuntimeError: {exc} (reshape or flatten a batch instead of view; or train with train.channels_last: false)"
    if len(plain) != len(last):
        return False, "G's gradient reaches other parameters with channels_last memory"
    worst = max(((a - b).abs().max() / (1 + a.abs().max())).item() for a, b in zip(plain, last))
    ok = worst <= 1e-3
    return ok, f"channels_last against contiguous: largest difference {worst:.2g} of the output's scale" + (
        "" if ok else " (more than rounding: set train.channels_last: false for this architecture)"
    )


def _round_trip(arch, shape, options, dev, g, d, z) -> tuple[bool, str]:
    """A model saved as a state_dict and rebuilt through the registry must behave identically."""
    g2, d2 = _build(arch, shape, options, SEED + 2, dev)
    g2.load_state_dict(g.state_dict())
    d2.load_state_dict(d.state_dict())
    for net in (g, d, g2, d2):
        net.eval()
    with torch.no_grad():
        x, x2 = g(z), g2(z)
        same = torch.equal(x, x2) and torch.equal(d(x), d2(x))
    return same, "rebuilt with another seed + load_state_dict: " + (
        "eval outputs bit-identical" if same else f"outputs differ (max |diff| G {(x - x2).abs().max().item():.3g})"
    )
