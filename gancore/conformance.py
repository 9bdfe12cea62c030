"""The conformance check behind ``gan plugins check NAME``.

It builds the architecture at every shape it claims to support, with its default options and a
small latent size, and checks what the rest of gancore relies on: the output shapes, images in
[-1, 1], usable gradients through a GAN loss (and through a gradient penalty), batch size 1 and
eval mode, seeded determinism, and that ``state_dict`` holds all the state (models are saved and
rebuilt through the registry). Every check becomes one named line with the measured value, so a
plugin author sees which promise is broken and by how much.

The checks themselves live in :mod:`gancore.conformance_checks`; this module keeps the report and
the driver that runs them at each shape (and re-exports the checks' public names).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from gancore import registry
from gancore.conformance_checks import (
    BATCH,
    FORWARD_BATCH,
    LATENT_DIM,
    LIGHT,
    PACK,
    SEED,
    VANISHING,
    _check_options,
    _check_shape,
    light_options,
)
from gancore.errors import GanCoreError
from gancore.registry import Architecture

__all__ = [
    "BATCH",
    "FORWARD_BATCH",
    "IMAGE_SHAPES",
    "LATENT_DIM",
    "LIGHT",
    "PACK",
    "SEED",
    "VANISHING",
    "VECTOR_SHAPE",
    "Check",
    "Report",
    "check_architecture",
    "check_shapes",
    "light_options",
]

VECTOR_SHAPE = (2,)
IMAGE_SHAPES = ((1, 28, 28), (3, 32, 32))


class Check(NamedTuple):
    name: str
    shape: str  # "(3, 32, 32)", or "-" for a check of the architecture as a whole
    passed: bool
    detail: str


@dataclass
class Report:
    name: str
    source: str = ""
    device: str = "cpu"
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def add(self, name: str, shape: tuple[int, ...] | None, passed: bool, detail: str) -> bool:
        self.checks.append(Check(name, "-" if shape is None else str(tuple(shape)), bool(passed), detail))
        return bool(passed)

    def render(self) -> str:
        head = ("shape", "check", "result", "detail")
        rows = [(c.shape, c.name, "pass" if c.passed else "FAIL", c.detail) for c in self.checks]
        w0, w1 = (max(len(r[i]) for r in [head, *rows]) for i in (0, 1))
        lines = [f"conformance check of {self.name!r}" + (f" from {self.source}" if self.source else "") + f" on {self.device}"]
        lines += [f"{a:<{w0}}  {b:<{w1}}  {c:<6}  {d}" for a, b, c, d in [head, *rows]]
        failed = self.failures
        if self.ok:
            lines.append(f"OK: {len(self.checks)} checks passed in {self.seconds:.1f} s")
        else:
            names = "; ".join(f"{c.name} at {c.shape}" for c in failed) or "no checks ran"
            lines.append(f"FAILED: {len(failed)} of {len(self.checks)} checks failed ({names}) in {self.seconds:.1f} s")
        return "\n".join(lines)


def check_shapes(arch: Architecture) -> list[tuple[int, ...]]:
    """The declared shapes, plus a representative shape for each kind none of them covers."""
    shapes = list(arch.shapes)
    if "vector" in arch.kinds and not any(len(s) == 1 for s in shapes):
        shapes.append(VECTOR_SHAPE)
    if "image" in arch.kinds and not any(len(s) == 3 for s in shapes):
        shapes.extend(IMAGE_SHAPES)
    return shapes


def check_architecture(name: str, device: str = "cpu", architecture: Architecture | None = None) -> Report:
    """Run every check on the installed architecture ``name`` (or on ``architecture`` if given)."""
    if architecture is None:
        installed = registry.architectures()
        if name not in installed:
            raise GanCoreError(
                f"unknown architecture {name!r}; installed: {', '.join(sorted(installed)) or '(none)'} (see `gan plugins list`)"
            )
        reg = installed[name]
        architecture, source = reg.architecture, f"{reg.plugin} ({reg.distribution} {reg.version})"
    else:
        source = "(given directly)"
    dev = _device(device)
    report = Report(name, source, str(dev))
    started = time.perf_counter()
    _check_options(architecture, report)
    # The check seeds the global generators itself; the caller's random state is left as it was.
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    # Its tensors are tiny, so extra CPU threads gain little, while on a busy machine their
    # spin-waiting made it 10x slower (measured on 2 shared cores: resnet_sn 66 s vs 5 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=cuda), torch.enable_grad():
            for shape in check_shapes(architecture):
                _check_shape(architecture, tuple(shape), dev, report)
    finally:
        torch.set_num_threads(threads)
    report.seconds = time.perf_counter() - started
    return report


def _device(device: str):
    """``device`` as torch's: a name that is no CPU or CUDA device is a usage error (exit 2), a
    CUDA device this machine lacks a failure (exit 1)."""
    from gancore.errors import ParamsError, first_line

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ParamsError([("--device", f"{device!r} is not a device the check runs on; pass cpu, cuda or cuda:N")], "--device")
    try:
        torch.zeros(1, device=dev)
    except (RuntimeError, AssertionError, ValueError) as exc:
        raise GanCoreError(f"device {device!r} is not usable here: {first_line(exc)}") from None
    return dev
