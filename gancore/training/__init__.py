"""The training stage: alternating discriminator/generator updates, resumable exactly.

Every random draw during training comes from a seeded stream whose state is checkpointed: the
batch order (a CPU ``torch.Generator`` shuffling epochs), the latent vectors and gradient-penalty
interpolates (a generator on the training device), and torch's global RNG (used by the models
themselves, e.g. dropout). A run interrupted and resumed therefore takes the same steps as an
uninterrupted one; on the CPU the weights come out bit-identical.

On CUDA the step runs in bf16 autocast (no loss scaling needed: bf16 has fp32's exponent range),
image batches and models use channels_last, Adam is fused, and prepared data small enough is kept
resident on the GPU (uint8 images are a quarter of the float size) so that a batch is one gather
on the device. The host synchronises only on log and checkpoint steps: non-finite losses are
tracked on the device and reported with the exact step at the next synchronisation, before any
checkpoint could record bad state.

The collapse monitor (:mod:`.monitor`) runs every ``train.monitor_every`` steps; its figures go
into the training log (``monitor/*`` columns) with a picture under ``plots/progress/``. It can keep
the best generator (``train.keep_best``) and stop or roll back on collapse (``train.on_collapse``):
a rollback restores the last checkpoint the monitor judged healthy, moves the latent stream on and
continues. Step numbers keep counting up through a rollback, so ``train.steps`` is the number of
updates made, discarded ones included.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from gancore import faults, progress, seeds, trainlog
from gancore.checkpoint import (
    check_resumable,
    file_sha256,
    identity_digest,
    load_checkpoint,
    run_identity,
    save_checkpoint,
)
from gancore.config import MONITOR_FIGURES, Params, ParamsError
from gancore.data.prepared import PreparedData, load_prepared
from gancore.device import pin_small_model_threads, resolve_device
from gancore.errors import TrainingError
from gancore.io import write_json
from gancore.layout import Layout, PartLayout
from gancore.losses import get_loss
from gancore.modelio import build_pair, resolve_architecture, save_model
from gancore.training import distributed
from gancore.training.batches import BatchStream, use_resident
from gancore.training.monitor import PREFIX, CollapseMonitor, log_columns
from gancore.training.trainer import Trainer

__all__ = ["BatchStream", "Trainer", "train"]

BATCH_STREAM = "train/batches"
# Steps timed before the time estimate is printed: past the first steps' warm-up (allocation,
# kernel selection), early enough to be useful.
ESTIMATE_STEPS = 20
BEST_FILE = "best.json"


def lr_factor(step: int, steps: int, decay: float) -> float:
    """``train.lr_decay``: 1 until the last ``decay`` share of the steps, then falling linearly to
    ``1 / (decay * steps)`` at the last step (a function of the step alone: resumable)."""
    start = steps - round(decay * steps)
    return 1.0 if step <= start else (steps - step + 1) / (steps - start + 1)


def use_compile(setting: bool | str, device: torch.device) -> bool:
    """``train.compile``: ``auto`` compiles on CUDA, where fusing the small kernels of a GAN step
    pays; on a CPU torch.compile measured no faster than eager for the built-in models (and costs
    a minute of compilation), so auto leaves it off there."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


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


class _Best:
    """The best monitored value of ``train.keep_best`` so far, and the step it was reached at."""

    def __init__(self, figure: str | None, state: dict[str, Any] | None = None):
        self.figure = figure
        self.higher = MONITOR_FIGURES.get(figure or "", True)
        self.value: float | None = (state or {}).get("value")
        self.step: int | None = (state or {}).get("step")

    def improves(self, figures: dict[str, Any]) -> bool:
        value = figures.get(self.figure or "")
        if value is None:
            return False
        return self.value is None or (value > self.value if self.higher else value < self.value)

    def state(self) -> dict[str, Any]:
        return {"value": self.value, "step": self.step}


def train(params: Params, layout: Layout, restart: bool = False, label: str = "train", later_steps: int | None = None) -> dict[str, Any]:
    """Train (or resume) the GAN described by ``params``; write models/, checkpoints/ and the log.

    ``label`` names the run in progress lines (``train part 3/8``); ``later_steps``, the steps
    that follow this run in the same job (a mixture's later parts), go into the time estimate
    printed after the first :data:`ESTIMATE_STEPS` steps.

    Under torchrun every rank runs this function (:mod:`.distributed`); with ``train.devices > 1``
    outside torchrun it launches torchrun and returns rank 0's summary.
    """
    world = distributed.from_env()
    if params.train.devices > 1 and not world.distributed:
        return distributed.launch(params, layout, restart)
    threads = torch.get_num_threads()
    try:
        return _train(params, layout, restart, world, label, later_steps)
    finally:
        torch.set_num_threads(threads)  # _train may pin a small model to one thread
        if world.distributed:
            distributed.teardown()


def _estimate(label: str, done: int, seconds: float, left: int, later_steps: int | None) -> str:
    per_step = seconds / done
    text = f"{label}: {1000 * per_step:.1f} ms per step over the first {done} steps: about {progress.duration(per_step * left)} for its {left} steps left"
    if later_steps:
        text += f", and about {progress.duration(per_step * later_steps)} for the {later_steps} steps of the parts after it"
    return text


def _train(
    params: Params, layout: Layout, restart: bool, world: distributed.World, label: str = "train", later_steps: int | None = None
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
    identity = run_identity(params, file_sha256(layout.prepared_data), options, world_size=world.size)
    digest = identity_digest(identity)

    ckpt = layout.checkpoint
    if main:
        layout.mixture.unlink(missing_ok=True)  # a mixture trained here before is replaced
        if restart:
            ckpt.unlink(missing_ok=True)
            layout.healthy_checkpoint.unlink(missing_ok=True)
    if world.distributed:
        distributed.barrier()
    state = load_checkpoint(ckpt) if ckpt.exists() else None
    if state is not None:
        check_resumable(ckpt, state, identity, tp.steps)
        if state["device"] != device.type:
            raise TrainingError(
                f"checkpoint {ckpt} was written on {state['device']} and cannot continue exactly on "
                f"{device.type}; set device={state['device']} or run `gan train --restart`"
            )

    torch.manual_seed(params.seed)  # weight initialisation
    generator, discriminator = build_pair(params.model.arch, shape, params.model.latent_dim, options, params.model.pack)
    pin_small_model_threads(device, generator, discriminator)
    image = len(shape) == 3
    batches = BatchStream(
        data.train,
        tp.batch_size * params.model.pack,  # PacGAN: D judges batch_size packed examples of m samples
        seeds.derive(params.seed, BATCH_STREAM),
        device,
        resident=use_resident(tp.resident_data, data.train.nbytes, tp.resident_max_gb),
        channels_last=image and device.type == "cuda",
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
        seed=params.seed,
        pack=params.model.pack,
        world=world,
        compile=use_compile(tp.compile, device),
    )

    rows: list[dict[str, Any]] = []
    start, elapsed_before = 0, 0.0
    watch: dict[str, Any] = {"best": None, "healthy_step": None, "stopped": None, "rollbacks": []}
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        rows, start, elapsed_before = list(state["log"]), int(state["step"]), float(state["seconds"])
        watch.update(state.get("monitor") or {})
    best = _Best(tp.keep_best, watch["best"])
    saved_step = start if state is not None else None
    if main:
        trainlog.write(layout.train_log, rows)
        layout.progress.mkdir(parents=True, exist_ok=True)  # a DVC output, also when the monitor is off
    common: dict[str, Any] = dict(
        arch=params.model.arch,
        options=options,
        latent_dim=params.model.latent_dim,
        shape=shape,
        kind=params.data_kind,
        params_digest=digest,
    )

    def raise_if_nonfinite() -> None:
        bad = trainer.first_nonfinite()
        if world.distributed:  # every rank stops at the first bad step of any rank
            bad = distributed.first_bad(bad)
        if bad is None:
            return
        if main:
            trainlog.write(layout.train_log, rows)
        kept = (
            f"the last good checkpoint {ckpt} (step {saved_step}) was kept"
            if saved_step is not None
            else "no checkpoint had been written yet"
        )
        raise TrainingError(
            f"non-finite loss_d={bad[1]:.6g} loss_g={bad[2]:.6g} at step {bad[0]}; {kept}. Lower "
            "train.lr_d/train.lr_g, try another loss (e.g. loss.name=hinge) or check the data for NaN"
        )

    def checkpoint_state(step: int) -> dict[str, Any]:
        watch["best"] = best.state()
        return {
            "step": step,
            "identity": identity,
            "digest": digest,
            "device": device.type,
            "seconds": elapsed_before + time.perf_counter() - loop_start,
            "log": rows,
            "trainer": trainer.state_dict(),
            "monitor": dict(watch),
        }

    def judge(step: int, row: dict[str, Any]) -> dict[str, Any]:
        """Rank 0: the monitor's figures at ``step`` (into ``row``) and what to do about them."""
        assert monitor is not None
        figures, x = monitor.measure(trainer.sampling_generator)
        verdict = monitor.judge({**figures, "step": step})
        monitor.picture(x, layout.progress / f"step_{step:06d}.png")
        if isinstance(layout, PartLayout):  # the mixture judges its parts' samples together
            monitor.keep(x, layout.progress / f"step_{step:06d}.pt")
        row.update(log_columns(figures, verdict))
        if tp.keep_best and best.improves(figures):
            best.value, best.step = figures[tp.keep_best], step
            save_model(layout.best_models / "generator.pt", trainer.sampling_generator, ema=trainer.ema is not None, step=step, **common)
            write_json(layout.best_models / BEST_FILE, {"figure": tp.keep_best, "value": best.value, "step": step})
        if not row[PREFIX + "collapse"]:
            if tp.on_collapse == "rollback":
                watch["healthy_step"] = step
                save_checkpoint(layout.healthy_checkpoint, checkpoint_state(step))
            return {"act": None, "healthy_step": watch["healthy_step"]}
        if tp.on_collapse == "stop":
            return {"act": "stop", "verdict": verdict}
        if tp.on_collapse == "rollback" and watch["healthy_step"] is not None and len(watch["rollbacks"]) < tp.max_rollbacks:
            return {"act": "rollback", "verdict": verdict}
        return {"act": None, "healthy_step": watch["healthy_step"]}

    def check(step: int, row: dict[str, Any]) -> bool:
        """Run the monitor at ``step`` and act on it on every rank; False to stop training."""
        decision = judge(step, row) if main else None
        if world.distributed:
            decision = distributed.broadcast(decision, world)
        assert decision is not None
        if decision["act"] == "stop":
            watch["stopped"] = step
            row[PREFIX + "stop"] = step
            return False
        if decision["act"] == "rollback":
            healthy = load_checkpoint(layout.healthy_checkpoint)
            trainer.load_state_dict(healthy["trainer"])
            trainer.reroll_noise()
            watch["rollbacks"] = [*watch["rollbacks"], {"step": step, "to": healthy["step"], "verdict": decision["verdict"]}]
            row[PREFIX + "rollback"] = healthy["step"]
        else:
            watch["healthy_step"] = decision["healthy_step"]
        return True

    loop_start = time.perf_counter()
    step = start
    bar = progress.bar(tp.steps, label, "step", initial=start, show=main)
    try:
        while step < tp.steps and watch["stopped"] is None:
            step += 1
            last = step == tp.steps
            # Multiples of monitor_every only (not also the last step): train.steps must not change
            # the log of the steps before it, or a longer run would not continue a shorter one.
            monitor_now = monitored and step % (tp.monitor_every or 1) == 0
            log_now = step % tp.log_every == 0 or last or monitor_now
            if tp.lr_decay > 0:
                trainer.set_lr_factor(lr_factor(step, tp.steps, tp.lr_decay))
            stats = trainer.step(step, stats=log_now)
            faults.hit("train.step", index=step)
            if stats is not None:
                stacked = torch.stack([stats[c] for c in trainlog.STEP_STATS])
                if world.distributed:
                    stacked = distributed.mean(stacked)  # figures of the whole batch
                values = dict(zip(trainlog.STEP_STATS, stacked.tolist()))
                elapsed = elapsed_before + time.perf_counter() - loop_start
                row = {"step": step, **values, "bn_drift_g": trainer.bn_drift(), "seconds": round(elapsed, 3)}
                rows.append(row)
                raise_if_nonfinite()  # after the row: the log shows the failing values
                bar.set_postfix(loss_d=f"{values['loss_d']:.4f}", loss_g=f"{values['loss_g']:.4f}", refresh=False)
                if monitor_now and not check(step, row):
                    last = True
            if step % tp.checkpoint_every == 0 or last:
                raise_if_nonfinite()
                if world.distributed:
                    distributed.check_agreement(trainer.G, trainer.D)
                if main:
                    save_checkpoint(ckpt, checkpoint_state(step))
                    trainlog.write(layout.train_log, rows)
                saved_step = step
            bar.update(1)
            if main and step == start + ESTIMATE_STEPS and step < tp.steps:
                progress.say(_estimate(label, ESTIMATE_STEPS, time.perf_counter() - loop_start, tp.steps - step, later_steps))
    finally:
        bar.close()
    loop_seconds = time.perf_counter() - loop_start

    if main:
        save_model(layout.generator, trainer.sampling_generator, ema=trainer.ema is not None, step=step, **common)
        save_model(layout.discriminator, trainer.D, ema=False, step=step, pack=params.model.pack, **common)
        trainlog.write(layout.train_log, rows)
    if world.distributed:
        distributed.barrier()  # the files are complete before any rank returns

    trained = step - start
    summary: dict[str, Any] = {
        "steps": step,
        "loss_d": rows[-1]["loss_d"] if rows else None,
        "loss_g": rows[-1]["loss_g"] if rows else None,
        "samples_per_second": round(trained * tp.batch_size * params.model.pack / loop_seconds, 1) if trained else None,
        "threads": torch.get_num_threads(),  # intra-op threads of the loop (see pin_small_model_threads)
        "device": str(device),
        "resumed_from": start if state is not None else None,
        "seconds": round(time.perf_counter() - started, 3),
    }
    if world.distributed:
        summary["processes"] = world.size
    if monitored:
        summary.update(rollbacks=len(watch["rollbacks"]), stopped_at=watch["stopped"], best_step=best.step, best_value=best.value)
    if main and world.distributed:
        distributed.write_summary(summary)
    return summary
