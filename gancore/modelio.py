"""Trained models on disk: ``models/generator.pt`` and ``models/discriminator.pt``.

Each file is a plain dict (``state_dict``, ``arch``, ``options``, ``latent_dim``, ``shape``,
``kind``, ``ema``, ``step``, ``params_digest``, ``pack``) readable with ``torch.load(weights_only=True)``:
no pickled classes, so loading a model never runs code from the file. The network is rebuilt
through the architecture registry from the stored name and options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gancore.errors import GanCoreError, ParamsError
from gancore.io import torch_load, torch_save
from gancore.layout import DISCRIMINATOR_FILE, GENERATOR_FILE

__all__ = [
    "DISCRIMINATOR_FILE",
    "GENERATOR_FILE",
    "build_pair",
    "load_discriminator",
    "load_generator",
    "module_from_record",
    "output_problem",
    "read_model_file",
    "resolve_architecture",
    "save_model",
]


def save_model(
    path: str | Path,
    module: nn.Module,
    *,
    arch: str,
    options: dict[str, Any],
    latent_dim: int,
    shape: tuple[int, ...] | list[int],
    kind: str,
    ema: bool,
    step: int,
    params_digest: str,
    pack: int = 1,
) -> None:
    # CPU, standard layout: the file loads the same on any machine.
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    torch_save(
        {
            "state_dict": state,
            "arch": arch,
            "options": dict(options),
            "latent_dim": int(latent_dim),
            "shape": [int(s) for s in shape],
            "kind": kind,
            "ema": bool(ema),
            "step": int(step),
            "params_digest": params_digest,
            "pack": int(pack),
        },
        path,
    )


def read_model_file(path: str | Path) -> dict[str, Any]:
    """The stored dict, checked for the contract's keys."""
    path = Path(path)
    if not path.exists():
        raise GanCoreError(f"{path} is missing: run `gan train` first")
    record = torch_load(path, GanCoreError, "run `gan train` again")
    missing = {"state_dict", "arch", "options", "latent_dim", "shape"} - set(record)
    if missing:
        raise GanCoreError(f"{path} lacks {', '.join(sorted(missing))}; it was not written by gancore: run `gan train` again")
    return record


def resolve_architecture(arch_name: str, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The registered :class:`~gancore.registry.Architecture` and its options over its defaults."""
    from gancore.registry import get_architecture, resolve_options

    try:
        arch = get_architecture(arch_name).architecture
        return arch, resolve_options(arch, options)
    except (KeyError, ValueError) as exc:
        raise GanCoreError(str(exc.args[0]) if exc.args else str(exc)) from None


def packed_shape(shape: tuple[int, ...], pack: int) -> tuple[int, ...]:
    """The shape a packing discriminator sees: ``pack`` samples concatenated along the first axis,
    ``(m*d,)`` for vectors and ``(m*C, H, W)`` for images."""
    return (pack * int(shape[0]), *(int(s) for s in shape[1:]))


def build_pair(
    arch_name: str, shape: tuple[int, ...], latent_dim: int, options: dict[str, Any], pack: int = 1
) -> tuple[nn.Module, nn.Module]:
    """(generator, discriminator) of a registered architecture, options checked against its defaults.

    With ``pack > 1`` the discriminator comes from a second build at :func:`packed_shape`: any
    plugin packs without knowing about it (the generator is the one of the first build).
    """
    from gancore.registry import build_networks, cannot_build

    arch, resolved = resolve_architecture(arch_name, options)
    try:
        generator, discriminator = build_networks(arch, tuple(shape), latent_dim, resolved)
    except (ValueError, TypeError) as exc:
        # A plugin refuses options it cannot build (a width below 1, an unknown activation).
        raise ParamsError([("model.options", cannot_build(arch_name, resolved, exc))]) from None
    if pack > 1:
        try:
            _, discriminator = build_networks(arch, packed_shape(tuple(shape), pack), latent_dim, resolved)
        except (ValueError, TypeError) as exc:
            raise GanCoreError(
                f"architecture {arch_name!r} cannot build a discriminator for model.pack={pack} "
                f"(shape {packed_shape(tuple(shape), pack)}): {exc}"
            ) from None
    return generator, discriminator


def output_problem(generator: nn.Module, discriminator: nn.Module, shape: tuple[int, ...], latent_dim: int, pack: int) -> str | None:
    """Why two freshly built networks break the plugin contract on a batch of two (G: (2, *shape)
    float32 on the latent vectors' device; D on G's packed output: (2,) or (2, 1)), or None. Training checks it first,
    where such a network failed several calls deep in the loop with a bare shape or dtype error.

    Evaluation mode, no gradients, and the global random state restored: nothing the run does
    afterwards can differ (no batch statistics move, a plugin's noise draws are given back)."""
    modes = (generator.training, discriminator.training)
    generator.eval(), discriminator.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            z = torch.randn(2 * pack, latent_dim, generator=torch.Generator().manual_seed(0))
            try:
                fake = generator(z)
            except Exception as exc:
                return f"generator fails on a batch of latent vectors ({2 * pack}, {latent_dim}): {type(exc).__name__}: {exc}"
            expected = (2 * pack, *shape)
            if not isinstance(fake, torch.Tensor) or tuple(fake.shape) != expected or fake.dtype != z.dtype or fake.device != z.device:
                got = f"{tuple(fake.shape)} {fake.dtype} on {fake.device}" if isinstance(fake, torch.Tensor) else type(fake).__name__
                return (
                    f"generator returned {got} for {2 * pack} latent vectors ({z.dtype} on {z.device}); expected {expected} "
                    f"{z.dtype} on {z.device}, where the real data are (build the networks in torch's default dtype, on the CPU)"
                )
            packed = fake.reshape(2, *packed_shape(shape, pack))
            try:
                logits = discriminator(packed)
            except Exception as exc:
                return f"discriminator fails on the generator's output {tuple(packed.shape)} {fake.dtype}: {type(exc).__name__}: {exc}"
            if not isinstance(logits, torch.Tensor) or tuple(logits.shape) not in ((2,), (2, 1)):
                returned = str(tuple(logits.shape)) if isinstance(logits, torch.Tensor) else type(logits).__name__
                return f"discriminator returned {returned} for a batch of 2; expected (2,) or (2, 1) logits"
    finally:
        generator.train(modes[0]), discriminator.train(modes[1])
    return None


def module_from_record(record: dict[str, Any], which: str, device: str | torch.device = "cpu", source: Any = "the model file") -> nn.Module:
    """Rebuild the ``"generator"`` or ``"discriminator"`` a :func:`read_model_file` record describes (eval mode)."""
    pack = int(record.get("pack", 1)) if which == "discriminator" else 1
    pair = build_pair(record["arch"], tuple(record["shape"]), record["latent_dim"], record["options"], pack)
    module = pair[("generator", "discriminator").index(which)]
    try:
        module.load_state_dict(record["state_dict"])
    except RuntimeError as exc:
        raise GanCoreError(
            f"{source} does not fit architecture {record['arch']!r} as installed now ({exc}); "
            "the plugin changed since training: run `gan train --restart`"
        ) from None
    return module.to(device).eval()


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    return module_from_record(read_model_file(path), "generator", device, path)


def load_discriminator(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    return module_from_record(read_model_file(path), "discriminator", device, path)
