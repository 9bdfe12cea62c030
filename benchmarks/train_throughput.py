"""Training throughput: gancore's training step against a plain PyTorch loop.

Both sides train the same models (identical initial weights), on the same batch size, with the same
loss and n_critic=1, on the current device; a "sample" is one example of a generator-step batch.

- ours: :class:`gancore.training.Trainer` over a :class:`~gancore.training.BatchStream` with the
  data resident on the device (uint8 images gathered and converted per batch there), bf16
  autocast on CUDA, fused Adam, channels_last images (``train.channels_last: auto``), host
  synchronisation only on log steps.
- baseline: what a first training script looks like: a CPU ``DataLoader`` over a float32
  ``TensorDataset``, each batch copied to the device, fp32, default (unfused) Adam.

Both read their losses back to the host every ``LOG_EVERY`` steps, as a logging loop would. The
two sides are timed alternately ``--repeats`` times, each after a warm-up, and each side's best is
kept (the least disturbed by other work on the machine).

    python benchmarks/train_throughput.py                    # dcgan 32/64 px and mlp 2D, defaults
    python benchmarks/train_throughput.py --tiny             # seconds, for CI
    python benchmarks/train_throughput.py --archs dcgan --sizes 64 --steps 200 --batch-size 128
    python benchmarks/train_throughput.py --augment             # our step with each augmentation against without
    python benchmarks/train_throughput.py --compile             # our step under torch.compile against eager
    python benchmarks/train_throughput.py --layout              # our step channels_last against contiguous

``--augment`` prices the design notes' second remedy: our step with DiffAugment's transforms on
every sample (``fixed``), with ADA's adaptive probability (``adaptive``, r_t), with the held-out
signal (``held_out``: one more no-gradient D pass per step) and, for images, with ADA's geometric
group added to the adaptive transforms (``geometric``: one affine resampling), its pixel
blitting (``blit``: flips, quarter turns and a gather) or its colour group (``ada_color``: one
4 x 4 colour map per sample), each against our step without. The
adaptive settings run at p 0.5.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Iterator
from typing import Any

import torch

from gancore.data.prepared import to_model_range
from gancore.device import resolve_device
from gancore.losses import get_loss
from gancore.modelio import build_pair
from gancore.names import DIFFAUGMENT, VECTOR_AUGMENTATIONS
from gancore.objectives import flat_logits
from gancore.training import BatchStream, Trainer, use_channels_last
from gancore.training.augment import Augment

LOG_EVERY = 10
LR, BETAS = 2e-4, (0.5, 0.999)
WIDTH_OPTION = {"dcgan": "width", "resnet_sn": "width", "mlp": "hidden"}  # the option --width sets
TINY_WIDTH = {"dcgan": 4, "resnet_sn": 4, "mlp": 16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_data(shape: tuple[int, ...], n: int, seed: int = 0) -> torch.Tensor:
    """Data in the prepared storage convention: uint8 images, float32 2D ring points."""
    gen = torch.Generator().manual_seed(seed)
    if len(shape) == 3:
        return torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=gen)
    angles = 2 * math.pi * torch.randint(8, (n,), generator=gen) / 8
    return torch.stack([angles.cos(), angles.sin()], 1) + 0.02 * torch.randn(n, 2, generator=gen)


# What --augment compares: name -> (adaptive, signal, image transforms); None: no augmentation.
# Vectors take jitter in place of DiffAugment's transforms; ADA's groups have no vector form.
AUGMENT_SETTINGS = {
    "none": None,
    "fixed": (False, "r_t", DIFFAUGMENT),
    "adaptive": (True, "r_t", DIFFAUGMENT),
    "held_out": (True, "held_out", DIFFAUGMENT),
    "geometric": (True, "r_t", (*DIFFAUGMENT, "geometric")),
    "blit": (True, "r_t", (*DIFFAUGMENT, "blit")),
    "ada_color": (True, "r_t", (*DIFFAUGMENT, "ada_color")),
}
IMAGES_ONLY = tuple(n for n, s in AUGMENT_SETTINGS.items() if s is not None and set(s[2]) - set(DIFFAUGMENT))


def _augmentation(setting: str, data: torch.Tensor, batch_size: int, device: torch.device) -> tuple[Augment | None, BatchStream | None]:
    """The trainer's augmentation for ``setting``, and the held-out stream it scores (held_out)."""
    if AUGMENT_SETTINGS[setting] is None:
        return None, None
    adaptive, signal, transforms = AUGMENT_SETTINGS[setting]
    policy = list(transforms if data.dim() == 4 else VECTOR_AUGMENTATIONS)
    augment = Augment(policy, device, seed=0, adaptive=adaptive, signal=signal)
    if adaptive:
        augment.p = torch.full((), 0.5, device=device)  # mid-way: half the samples transformed, as in a run
    held = make_data(tuple(data.shape[1:]), len(data), seed=1)
    stream = BatchStream(held, batch_size, seed=1, device=device, resident=True) if signal == "held_out" else None
    return augment, stream


def time_ours(
    G,
    D,
    data,
    latent_dim,
    batch_size,
    steps,
    warmup,
    loss_name,
    device,
    augment_setting: str = "none",
    compiled: bool = False,
    layout: bool | str = "auto",
) -> float:
    channels_last = use_channels_last(data.dim() == 4, compiled, layout)
    batches = BatchStream(data, batch_size, seed=0, device=device, resident=True, channels_last=channels_last)
    augment, held_out = _augmentation(augment_setting, data, batch_size, device)
    trainer = Trainer(
        G,
        D,
        get_loss(loss_name),
        batches,
        latent_dim=latent_dim,
        lr_g=LR,
        lr_d=LR,
        betas=BETAS,
        augment=augment,
        held_out=held_out,
        compile=compiled,
    )

    def run(n: int) -> None:
        for i in range(1, n + 1):
            stats = trainer.step(i, stats=i % LOG_EVERY == 0)
            if stats is not None:
                torch.stack([stats["loss_d"], stats["loss_g"]]).tolist()

    run(warmup)
    _sync(device)
    start = time.perf_counter()
    run(steps)
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def time_baseline(G, D, data, latent_dim, batch_size, steps, warmup, loss_name, device) -> float:
    G, D = G.to(device).train(), D.to(device).train()
    loss = get_loss(loss_name)
    opt_g = torch.optim.Adam(G.parameters(), lr=LR, betas=BETAS)
    opt_d = torch.optim.Adam(D.parameters(), lr=LR, betas=BETAS)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(to_model_range(data)), batch_size=batch_size, shuffle=True, drop_last=True
    )
    it = iter(loader)

    def run(n: int) -> None:
        nonlocal it
        for i in range(1, n + 1):
            try:
                (x,) = next(it)
            except StopIteration:
                it = iter(loader)
                (x,) = next(it)
            x = x.to(device)
            z = torch.randn(batch_size, latent_dim, device=device)
            with torch.no_grad():
                fake = G(z)
            loss_d = loss.d(flat_logits(D(x)), flat_logits(D(fake)))
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            z = torch.randn(batch_size, latent_dim, device=device)
            loss_g = loss.g(flat_logits(D(G(z))))
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            if i % LOG_EVERY == 0:
                loss_d.item(), loss_g.item()

    run(warmup)
    _sync(device)
    start = time.perf_counter()
    run(steps)
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def configs(archs: list[str], sizes: list[int]) -> list[tuple[str, tuple[int, ...]]]:
    out = []
    for arch in archs:
        if arch == "mlp":
            out.append(("mlp", (2,)))
        else:
            out.extend((arch, (3, s, s)) for s in sizes)
    return out


def setups(args: argparse.Namespace, device: torch.device, archs: list[str], sizes: list[int]) -> Iterator[tuple[Any, ...]]:
    """Per configuration: arch, shape, options, the initial G and D, and the timing arguments."""
    for arch, shape in configs(archs, sizes):
        width = TINY_WIDTH.get(arch) if args.tiny else args.width
        options = {WIDTH_OPTION[arch]: width} if width is not None and arch in WIDTH_OPTION else {}
        torch.manual_seed(0)
        G, D = build_pair(arch, shape, args.latent_dim, options)
        # Enough data for a few epochs; the baseline gets its own float32 copy, as it would.
        data = make_data(shape, max(16 * args.batch_size, 256))
        yield arch, shape, options, G, D, (data, args.latent_dim, args.batch_size, args.steps, args.warmup, args.loss, device)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=50, help="timed generator steps per repeat (default 50)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    ap.add_argument("--repeats", type=int, default=2, help="timings per side; the best is kept (default 2)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--sizes", default="32,64", help="image sides for image architectures (default 32,64)")
    ap.add_argument("--archs", default="dcgan,mlp", help="architectures; mlp runs on 2D data (default dcgan,mlp)")
    ap.add_argument("--latent-dim", type=int, default=100)
    ap.add_argument("--loss", default="non_saturating")
    ap.add_argument("--device", default="auto")
    ap.add_argument(
        "--width", type=int, default=None, help="dcgan/resnet_sn width, mlp hidden units (default: the architecture's own default)"
    )
    ap.add_argument("--tiny", action="store_true", help="a few steps, small widths and batches: a smoke run for CI")
    ap.add_argument("--augment", action="store_true", help="our step with each augmentation against without, instead of the baseline")
    ap.add_argument(
        "--compile", action="store_true", help="our step under torch.compile (train.compile: true) against eager, instead of the baseline"
    )
    ap.add_argument(
        "--layout",
        action="store_true",
        help="our step with channels_last images (train.channels_last: auto) against contiguous (false), instead of the baseline",
    )
    args = ap.parse_args(argv)
    if args.tiny:
        args.steps, args.warmup, args.repeats, args.batch_size, args.latent_dim = 3, 1, 1, 8, 8

    device = resolve_device(args.device)
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    print(
        f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
        f"batch {args.batch_size}, {args.steps} timed steps x {args.repeats}, loss {args.loss}"
    )
    if args.augment:
        return _augment_table(args, device, archs, sizes)
    if args.compile:
        return _compile_table(args, device, archs, sizes)
    if args.layout:
        return _layout_table(args, device, archs, sizes)
    header = f"{'arch':<8} {'shape':<10} {'options':<12} {'ours samples/s':>15} {'baseline samples/s':>19} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for arch, shape, options, G, D, common in setups(args, device, archs, sizes):
        ours = base = 0.0
        for _ in range(args.repeats):  # alternating, so that both sides see the same machine load
            ours = max(ours, time_ours(copy.deepcopy(G), copy.deepcopy(D), *common))
            base = max(base, time_baseline(copy.deepcopy(G), copy.deepcopy(D), *common))
        shown = ",".join(f"{k}={v}" for k, v in options.items()) or "defaults"
        print(f"{arch:<8} {'x'.join(map(str, shape)):<10} {shown:<12} {ours:>15.1f} {base:>19.1f} {ours / base:>7.2f}", flush=True)
    return 0


def _augment_table(args: argparse.Namespace, device: torch.device, archs: list[str], sizes: list[int]) -> int:
    """Samples/s of our step under each augmentation setting, and its cost against none."""
    names = list(AUGMENT_SETTINGS)
    print(f"{'arch':<8} {'shape':<10} " + " ".join(f"{n + ' samples/s':>20}" for n in names) + "   step time against none")
    for arch, shape, _, G, D, common in setups(args, device, archs, sizes):
        timed = [n for n in names if len(shape) == 3 or n not in IMAGES_ONLY]
        best = dict.fromkeys(timed, 0.0)
        for _ in range(args.repeats):  # alternating, so that every setting sees the same machine load
            for name in timed:
                best[name] = max(best[name], time_ours(copy.deepcopy(G), copy.deepcopy(D), *common, augment_setting=name))
        cost = ", ".join(f"{n} x{best['none'] / best[n]:.2f}" for n in timed[1:])
        speeds = " ".join(f"{best[n]:>20.1f}" if n in best else f"{'-':>20}" for n in names)
        print(f"{arch:<8} {'x'.join(map(str, shape)):<10} {speeds}   {cost}", flush=True)
    return 0


def _compile_table(args: argparse.Namespace, device: torch.device, archs: list[str], sizes: list[int]) -> int:
    """Samples/s of our step under torch.compile (``train.compile: true``) and eager (with
    channels_last, as ``auto`` trains). The first compiled warm-up pays the compilation;
    its seconds are printed apart. That compiling trains the same losses is a test's business."""
    print(f"{'arch':<8} {'shape':<10} {'eager samples/s':>16} {'compiled samples/s':>19} {'ratio':>7} {'compile s':>10}")
    for arch, shape, _, G, D, common in setups(args, device, archs, sizes):
        eager = compiled = first = 0.0
        for repeat in range(args.repeats):  # alternating, so that both sides see the same machine load
            eager = max(eager, time_ours(copy.deepcopy(G), copy.deepcopy(D), *common))
            begun = time.perf_counter()
            rate = time_ours(copy.deepcopy(G), copy.deepcopy(D), *common, compiled=True)
            if repeat == 0:  # everything but the timed steps: the warm-up, compiling included
                first = time.perf_counter() - begun - args.steps * args.batch_size / rate
            compiled = max(compiled, rate)
        shape_text = "x".join(map(str, shape))
        print(f"{arch:<8} {shape_text:<10} {eager:>16.1f} {compiled:>19.1f} {compiled / eager:>7.2f} {first:>10.1f}", flush=True)
    return 0


def _layout_table(args: argparse.Namespace, device: torch.device, archs: list[str], sizes: list[int]) -> int:
    """Samples/s of our step with image batches and models channels_last (``train.channels_last:
    auto``) and contiguous (``false``). Vector models have no layout to choose and are skipped."""
    print(f"{'arch':<8} {'shape':<10} {'contiguous samples/s':>21} {'channels_last samples/s':>24} {'ratio':>7}")
    for arch, shape, _, G, D, common in setups(args, device, archs, sizes):
        if len(shape) != 3:
            continue
        plain = last = 0.0
        for _ in range(args.repeats):  # alternating, so that both sides see the same machine load
            plain = max(plain, time_ours(copy.deepcopy(G), copy.deepcopy(D), *common, layout=False))
            last = max(last, time_ours(copy.deepcopy(G), copy.deepcopy(D), *common, layout="auto"))
        print(f"{arch:<8} {'x'.join(map(str, shape)):<10} {plain:>21.1f} {last:>24.1f} {last / plain:>7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
