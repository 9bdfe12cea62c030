"""The training stage: alternating discriminator/generator updates, resumable exactly.

Every random draw during training comes from a seeded stream whose state is checkpointed: the
batch order (a CPU ``torch.Generator`` shuffling epochs), the latent vectors and gradient-penalty
interpolates (a generator on the training device), and torch's global RNG (used by the models
themselves, e.g. dropout). A run interrupted and resumed therefore takes the same steps as an
uninterrupted one; on the CPU the weights come out bit-identical.

Image batches and models use channels_last on every device (:func:`use_channels_last`), and Adam
is fused (one kernel over a model's tensors; the CPU has one too). On CUDA the step runs in bf16
autocast (no loss scaling needed: bf16 has fp32's exponent range), and prepared data small enough
is kept resident on the GPU (uint8 images are a quarter of the float size) so that a batch is one
gather on the device. The host synchronises only on log
and checkpoint steps: non-finite losses are tracked on the device and reported with the exact
step at the next synchronisation, before any checkpoint could record bad state.

The collapse monitor (:mod:`.monitor`) runs every ``train.monitor_every`` steps; its figures go
into the training log (``monitor/*`` columns) with a picture under ``plots/progress/``. It can keep
the best generator (``train.keep_best``) and stop or roll back on collapse (``train.on_collapse``):
a rollback restores the last checkpoint the monitor judged healthy, moves the latent stream on and
continues. Step numbers keep counting up through a rollback, so ``train.steps`` is the number of
updates made, discarded ones included.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from gancore import seeds
from gancore.checkpoint import (
    check_resumable,
    identity_digest,
    load_checkpoint,
    run_identity,
)
from gancore.config import Params, ParamsError
from gancore.data.prepared import PreparedData, load_prepared
from gancore.device import pin_small_model_threads, resolve_device
from gancore.errors import TrainingError
from gancore.heldout import held_out_steers, steering_half, steering_problem
from gancore.io import file_digest
from gancore.layout import Layout
from gancore.losses import boundary, get_loss, penalty_problem
from gancore.modelio import build_pair, output_problem, resolve_architecture
from gancore.names import parse_policy
from gancore.registry import batch_normalised
from gancore.training import distributed
from gancore.training.augment import STREAM as AUGMENT_STREAM
from gancore.training.augment import Augment, jitter_scale
from gancore.training.batches import BatchStream, use_resident
from gancore.training.loop import BEST_FILE, ESTIMATE_STEPS, LoopState, TrainingLoop, lr_factor
from gancore.training.monitor import CollapseMonitor
from gancore.training.trainer import Trainer

__all__ = ["BEST_FILE", "ESTIMATE_STEPS", "BatchStream", "LoopState", "Trainer", "TrainingLoop", "lr_factor", "train"]

BATCH_STREAM = "train/batches"
HELD_OUT_STREAM = "train/augment-held-out"


def use_compile(setting: bool | str, device: torch.device) -> bool:
    """``train.compile``: ``auto`` is eager everywhere, because compiling has not paid. On a CPU
    torch.compile measured no faster than eager for the built-in models (and costs a minute of
    compilation); on an H200 (torch 2.11) a compiled DCGAN step, which trains as eager does,
    gave x0.75-0.78 eager's samples/s (``train_throughput.py --compile``), and with channels_last
    it failed in inductor's convolution backward (a stride assertion). ``true`` compiles (without
    channels_last: see :func:`use_channels_last`)."""
    return False if setting == "auto" else bool(setting)


def use_channels_last(image: bool, compiled: bool, setting: bool | str = "auto") -> bool:
    """``train.channels_last``: ``auto`` lays image batches and models out channels_last on every
    device, except under torch.compile, which picks its own layouts (and mixed with channels_last
    broke, above). cuDNN's and oneDNN's fast convolutions want it: on one CPU thread, batch 64,
    3x32x32, the step ran x1.21 the samples/s of contiguous memory for a DCGAN of width 32 (the
    examples'), x1.12 at width 64 (x1.09 at 64x64), x1.30 for resnet_sn
    (``train_throughput.py --layout``). It changes rounding only; ``false`` serves a plugin whose
    forward needs contiguous images (``x.view`` of a batch)."""
    if setting == "auto":
        return image and not compiled
    return image and bool(setting)


def _check_data(params: Params, layout: Layout, data: PreparedData) -> tuple[int, ...]:
    shape = tuple(data.meta["shape"])
    name = data.meta.get("name", params.data.name)
    if shape != params.data_shape or name != params.data.name or tuple(data.train.shape[1:]) != shape:
        raise TrainingError(
            f"prepared data in {layout.prepared} is {name!r} with shape {list(shape)} "
            f"(train tensor {list(data.train.shape)}), but the parameters ask for {params.data.name!r} "
            f"with shape {list(params.data_shape)}: run `gan prepare` with these parameters"
        )
    per_step = params.train.batch_size * params.model.pack
    if per_step > len(data.train):
        packed = f" x model.pack={params.model.pack}" if params.model.pack > 1 else ""
        most = len(data.train) // params.model.pack
        raise ParamsError(
            [
                (
                    "train.batch_size",
                    f"{params.train.batch_size}{packed} samples per step are more than the {len(data.train)} training "
                    f"examples in {layout.prepared}; use train.batch_size at most {most} or prepare more data (data.n_train)",
                )
            ]
        )
    return shape


def train(
    params: Params,
    layout: Layout,
    restart: bool = False,
    label: str = "train",
    later_steps: int | None = None,
    steps_setting: str = "train.steps",
    inputs_read: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train (or resume) the GAN described by ``params``; write models/, checkpoints/ and the log.

    ``label`` names the run in progress lines (``train part 3/8``); ``later_steps``, the steps
    that follow this run in the same job (a mixture's later parts), go into the time estimate
    printed after the first :data:`ESTIMATE_STEPS` steps. ``steps_setting``: the setting that
    decided ``train.steps`` (a mixture's part: ``mixture.steps``), named when a checkpoint is past it.
    ``inputs_read`` is called once the data, the checkpoint to resume and the networks have passed
    their checks, before the first step (:func:`gancore.stages.run_stage` opens the record there).

    Under torchrun every rank runs this function (:mod:`.distributed`); with ``train.devices > 1``
    outside torchrun it launches torchrun and returns rank 0's summary.
    """
    world = distributed.from_env()
    if params.train.devices > 1 and not world.distributed:
        # the data, the checkpoint and the plugin's contract checked once, here, before the record
        # opens, not by every rank torchrun starts (each said it, then torchrun's page of traceback
        # ended in "see its output above", and the stage's run was opened and failed)
        check_resume(params, layout, restart, steps_setting)
        with torch.random.fork_rng(devices=[]):
            pair = build_pair(params.model.arch, params.data_shape, params.model.latent_dim, params.model.options, params.model.pack)
            _check_contract(params, *pair, params.data_shape)
        if inputs_read is not None:
            inputs_read()
        return distributed.launch(params, layout, restart)
    threads = torch.get_num_threads()
    try:
        return _train(params, layout, restart, world, label, later_steps, steps_setting, inputs_read)
    finally:
        torch.set_num_threads(threads)  # _train may pin a small model to one thread
        if world.distributed:
            distributed.teardown()


def check_resume(params: Params, layout: Layout, restart: bool = False, steps_setting: str = "train.steps") -> None:
    """Refuse, before training starts, prepared data that are not the parameters' and a checkpoint
    in ``layout`` that this run cannot continue (with ``restart``, only the data): what the
    ranks torchrun starts, or a mixture's later parts, would find only when they get to it, after
    the stage's record opened (and after hours of the earlier parts)."""
    data = load_prepared(layout.prepared)
    _check_data(params, layout, data)
    if not restart:
        arch, options = resolve_architecture(params.model.arch, params.model.options)
        _resume_state(params, layout, data, arch, options, params.train.devices, resolve_device(params.device).type, steps_setting)


def _resume_state(
    params: Params, layout: Layout, data: PreparedData, arch: Any, options: dict[str, Any], world_size: int, device: str, steps_setting: str
) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
    """This run's identity and digest, and the checkpoint it resumes (None: it starts afresh),
    refused where the checkpoint is another run's, past ``train.steps`` or of another device type.
    A resumed run goes on as itself: the identity is the checkpoint's (the same run in other words
    for the same data, :func:`check_resumable`)."""
    identity = run_identity(
        params,
        file_digest(layout.prepared_data),
        options,
        world_size=world_size,
        outside_tested=_outside_tested(data),
        legacy_options=arch.legacy,
    )
    ckpt = layout.checkpoint
    state = load_checkpoint(ckpt) if ckpt.exists() else None
    if state is None:
        return identity, identity_digest(identity), None
    check_resumable(ckpt, state, identity, params.train.steps, steps_setting)
    if state["device"] != device:
        raise TrainingError(
            f"checkpoint {ckpt} was written on {state['device']} and cannot continue exactly on "
            f"{device}; set device={state['device']} or run `gan train --restart`"
        )
    return state["identity"], state["digest"], state


def _augment(params: Params, data: PreparedData, device: torch.device, world: distributed.World) -> Augment | None:
    """``augment.*`` as the trainer's augmentation, or None when the policy is empty."""
    a = params.augment
    policy = parse_policy(a.policy)
    if not policy:
        return None
    jitter = jitter_scale(data) * a.jitter if data.kind == "vector" and len(data.train) > 1 else None
    # A sum over the ranks that leaves its input alone (all_reduce works in place).
    reduce = (lambda t: distributed.mean(t.clone()) * world.size) if world.distributed else None
    return Augment(
        policy,
        device,
        params.training_seed,
        a.adaptive,
        a.target,
        a.kimg,
        a.interval,
        jitter,
        AUGMENT_STREAM,
        reduce,
        a.signal,
        (world.rank, world.size),
        boundary(params.loss.name),
    )


def _outside_tested(data: PreparedData) -> bool:
    from gancore.background import tested_background

    return data.kind == "vector" and tested_background(data.meta.get("modes") or {}) is not None


def _train(
    params: Params,
    layout: Layout,
    restart: bool,
    world: distributed.World,
    label: str = "train",
    later_steps: int | None = None,
    steps_setting: str = "train.steps",
    inputs_read: Callable[[], None] | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    tp = params.train
    main = world.main  # rank 0 writes every file; the other ranks only train
    device = resolve_device(params.device)
    if world.distributed:
        device = distributed.setup(world, device)
    data = load_prepared(layout.prepared)
    shape = _check_data(params, layout, data)
    arch, options = resolve_architecture(params.model.arch, params.model.options)
    ckpt = layout.checkpoint
    if main and restart:
        ckpt.unlink(missing_ok=True)
        for healthy in layout.healthy_checkpoints:
            healthy.unlink(missing_ok=True)
    if world.distributed:
        distributed.barrier()
    identity, digest, state = _resume_state(params, layout, data, arch, options, world.size, device.type, steps_setting)

    torch.manual_seed(params.training_seed)  # weight initialisation
    generator, discriminator = build_pair(params.model.arch, shape, params.model.latent_dim, options, params.model.pack)
    _check_contract(params, generator, discriminator, shape)
    penalty_problem = _penalty_problem(params, discriminator, options)
    if penalty_problem:
        raise ParamsError([("loss.name", penalty_problem)])
    if inputs_read is not None:
        inputs_read()
    pin_small_model_threads(device, generator, discriminator)
    image = len(shape) == 3
    compiled = use_compile(tp.compile, device)
    batches = BatchStream(
        data.train,
        tp.batch_size * params.model.pack,  # PacGAN: D judges batch_size packed examples of m samples
        seeds.derive(params.training_seed, BATCH_STREAM),
        device,
        resident=use_resident(tp.resident_data, data.train.nbytes, tp.resident_max_gb),
        channels_last=use_channels_last(image, compiled, tp.channels_last),
        share=(world.rank, world.size),
    )
    monitored = tp.monitor_every is not None
    monitor = None
    if monitored and main:
        monitor = CollapseMonitor(
            data,
            layout.prepared,
            params.model.latent_dim,
            params.seed,
            device,
            params.diagnose.confidence,
            params.diagnose.duplicate_fraction,
            held_out_steers(params),
            boundary(params.loss.name),
            params.diagnose.ndb_bins,
        )
    augment = _augment(params, data, device, world)
    held_out = None
    if augment is not None and augment.held_out:
        problem = steering_problem(data.meta, len(data.test), tp.batch_size * params.model.pack)
        if problem is not None:
            raise ParamsError([("augment.signal", problem)])
        steering = steering_half(data.test)
        held_out = BatchStream(
            steering,
            tp.batch_size * params.model.pack,
            seeds.derive(params.training_seed, HELD_OUT_STREAM),
            device,
            resident=use_resident(tp.resident_data, steering.nbytes, tp.resident_max_gb),
            channels_last=use_channels_last(image, compiled, tp.channels_last),
            share=(world.rank, world.size),
        )
    del data
    trainer = Trainer(
        generator,
        discriminator,
        get_loss(params.loss.name, params.loss.gp_weight),
        batches,
        latent_dim=params.model.latent_dim,
        lr_g=tp.lr_g,
        lr_d=tp.lr_d,
        betas=(tp.beta1, tp.beta2),
        n_critic=tp.n_critic,
        ema_decay=tp.ema_decay,
        seed=params.training_seed,
        pack=params.model.pack,
        world=world,
        compile=compiled,
        augment=augment,
        held_out=held_out,
    )

    model_record: dict[str, Any] = dict(
        arch=params.model.arch,
        options=options,
        latent_dim=params.model.latent_dim,
        shape=shape,
        kind=params.data_kind,
        params_digest=digest,
    )
    run = {"identity": identity, "digest": digest, "device": device.type}
    loop = TrainingLoop(params, layout, trainer, monitor, world, state, run, model_record, label, later_steps)
    summary = loop.finish(loop.run_steps(), device, started)
    if main and world.distributed:
        distributed.write_summary(summary)
    return summary


def _check_contract(params: Params, generator: torch.nn.Module, discriminator: torch.nn.Module, shape: tuple[int, ...]) -> None:
    broken = output_problem(generator, discriminator, shape, params.model.latent_dim, params.model.pack)
    if broken:
        raise TrainingError(f"architecture {params.model.arch!r} {broken}; `gan plugins check {params.model.arch}` checks it in full")


def _penalty_problem(params: Params, discriminator: torch.nn.Module, options: dict[str, Any]) -> str | None:
    """:func:`gancore.losses.penalty_problem` of the discriminator built (validation asks it of the
    plugin's networks already; this holds for a caller that did not validate)."""
    return penalty_problem(params.loss.name, params.model.arch, batch_normalised(discriminator), options)
