"""The training loop: steps, the training log, checkpoints, and the collapse monitor's judgement
(keep the best generator, stop or roll back on collapse), on every rank of a distributed run.

:class:`LoopState` is what the loop carries from step to step and across a resume (it is
checkpointed under ``"monitor"``); :class:`TrainingLoop` owns one concern per method:
:meth:`~TrainingLoop.step_once` (one update and its log row), :meth:`~TrainingLoop.check`
(the monitor and what to do about it), :meth:`~TrainingLoop.keep_best`,
:meth:`~TrainingLoop.roll_back`, :meth:`~TrainingLoop.save` (checkpoints) and
:meth:`~TrainingLoop.finish` (the models and the summary).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from gancore import failpoints, progress, trainlog
from gancore.checkpoint import load_checkpoint, save_checkpoint
from gancore.config import MONITOR_FIGURES, Params
from gancore.device import software
from gancore.errors import TrainingError
from gancore.io import write_json
from gancore.layout import Layout, PartLayout
from gancore.modelio import save_model
from gancore.training import distributed
from gancore.training.monitor import PREFIX, CollapseMonitor, log_columns
from gancore.training.trainer import Trainer

BEST_FILE = "best.json"
# Steps timed before the time estimate is printed: past the first steps' warm-up (allocation,
# kernel selection), early enough to be useful.
ESTIMATE_STEPS = 20


def lr_factor(step: int, steps: int, decay: float) -> float:
    """``train.lr_decay``: 1 until the last ``decay`` share of the steps, then falling linearly to
    ``1 / (decay * steps)`` at the last step (a function of the step alone: resumable)."""
    start = steps - round(decay * steps)
    return 1.0 if step <= start else (steps - step + 1) / (steps - start + 1)


def estimate(label: str, done: int, seconds: float, left: int, later_steps: int | None) -> str:
    per_step = seconds / done
    text = f"{label}: {1000 * per_step:.1f} ms per step over the first {done} steps: about {progress.duration(per_step * left)} for its {left} steps left"
    if later_steps:
        text += f", and about {progress.duration(per_step * later_steps)} for the {later_steps} steps of the parts after it"
    return text


@dataclass
class LoopState:
    """The loop's state beyond the trainer's: the best monitored value of ``train.keep_best`` and
    its step, the last step the monitor judged healthy, where training stopped, the rollbacks."""

    best_value: float | None = None
    best_step: int | None = None
    healthy_step: int | None = None
    stopped: int | None = None
    rollbacks: list[dict[str, Any]] = field(default_factory=list)
    best_figure: str | None = None  # which figure best_value is of (None: a checkpoint from before)
    best_key: list[float] | None = None  # what ranked it (see rank_key); None: a checkpoint from before
    best_since: int | None = None  # the step after which checks were compared for it (None: a checkpoint from before)

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any] | None) -> LoopState:
        saved = saved or {}
        best = saved.get("best") or {}
        rollbacks = list(saved.get("rollbacks") or [])
        return cls(
            best.get("value"),
            best.get("step"),
            saved.get("healthy_step"),
            saved.get("stopped"),
            rollbacks,
            best.get("figure"),
            best.get("key"),
            best.get("since"),
        )

    def to_checkpoint(self) -> dict[str, Any]:
        """The checkpoint's ``"monitor"`` entry (the format resumed runs read)."""
        best = {
            "value": self.best_value,
            "step": self.best_step,
            "figure": self.best_figure,
            "key": self.best_key,
            "since": self.best_since,
        }
        return {"best": best, "healthy_step": self.healthy_step, "stopped": self.stopped, "rollbacks": list(self.rollbacks)}

    def improves(self, figure: str, figures: dict[str, Any]) -> bool:
        key = rank_key(figure, figures)
        if key is None:
            return False
        if self.best_figure not in (None, figure):  # train.keep_best changed on a resume: a new figure starts afresh
            return True
        if self.best_value is None:
            return True
        higher = MONITOR_FIGURES.get(figure, True)
        best = self.best_key if self.best_key is not None else [self.best_value if higher else -self.best_value]
        return key > best


def rank_key(figure: str, figures: dict[str, Any]) -> list[float] | None:
    """``figure`` first (signed so that larger is better), then the other monitor figures to
    break its ties: modes_covered saturates early, and on a strict comparison the first step to
    cover every mode stayed the best however poor its samples (8 of 8 modes at 6 % high quality,
    where a later step had 76 %). None when the figure was not measured."""
    if figures.get(figure) is None:
        return None
    key = []
    for name in (figure, *(f for f in MONITOR_FIGURES if f != figure)):
        value = figures.get(name)
        sign = 1.0 if MONITOR_FIGURES[name] else -1.0
        key.append(-math.inf if value is None or math.isnan(float(value)) else sign * float(value))
    return key


class TrainingLoop:
    """Runs ``trainer`` to ``train.steps`` from a checkpoint (or the start), writing what
    :mod:`gancore.training` describes. ``model_record``: the facts every saved model carries."""

    def __init__(
        self,
        params: Params,
        layout: Layout,
        trainer: Trainer,
        monitor: CollapseMonitor | None,
        world: distributed.World,
        checkpoint: dict[str, Any] | None,
        run: dict[str, Any],
        model_record: dict[str, Any],
        label: str = "train",
        later_steps: int | None = None,
    ):
        self.params, self.tp, self.layout, self.trainer, self.monitor, self.world = params, params.train, layout, trainer, monitor, world
        self.main = world.main  # rank 0 writes every file; the other ranks only train
        self.run, self.model_record, self.label, self.later_steps = run, model_record, label, later_steps
        self.rows: list[dict[str, Any]] = []
        self.start, self.elapsed_before = 0, 0.0
        self.state = LoopState()
        if checkpoint is not None:
            trainer.load_state_dict(checkpoint["trainer"])
            self.rows, self.start = list(checkpoint["log"]), int(checkpoint["step"])
            self.elapsed_before = float(checkpoint["seconds"])
            self.state = LoopState.from_checkpoint(checkpoint.get("monitor"))
            if self.rows and self.rows[-1]["step"] == self.start < self.tp.steps and not self.on_grid(self.start):
                self.rows.pop()  # the shorter run's last step, logged because it was last: no row in a longer run
        # train.keep_best changed on a resume: the kept generator is the best of another figure,
        # and the new one's best is taken over the checks from here (LoopState.improves): said,
        # and written into best.json, rather than replacing models/best/ silently
        self.best_since = self.state.best_since or 0
        if self.tp.keep_best and self.state.best_figure not in (None, self.tp.keep_best):
            self.best_since = self.start
            if self.main:
                progress.say(
                    f"train.keep_best is {self.tp.keep_best} now, {self.state.best_figure} when {layout.best_models} kept its "
                    f"generator (step {self.state.best_step}): the best by {self.tp.keep_best} is taken over the checks after "
                    f"step {self.start} and replaces it at the first one not judged collapsed"
                )
        self.resumed = checkpoint is not None
        self.saved_step = self.start if self.resumed else None
        self.saved_healthy = self.state.healthy_step  # the healthy step the last checkpoint names
        self.step = self.start
        self.loop_start = time.perf_counter()

    # -- checkpoints ------------------------------------------------------------------------------
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            **self.run,
            "seconds": self.elapsed_before + time.perf_counter() - self.loop_start,
            "log": self.rows,
            "trainer": self.trainer.state_dict(),
            "monitor": self.state.to_checkpoint(),
        }

    def save(self) -> None:
        """A checkpoint at this step (rank 0), after every rank checked its losses and replicas."""
        self.raise_if_nonfinite()
        if self.world.distributed:
            distributed.check_agreement(self.trainer.G, self.trainer.D)
            self.gather_augment()
        if self.main:
            save_checkpoint(self.layout.checkpoint, self.checkpoint_state())
            trainlog.write(self.layout.train_log, self.rows)
            self.saved_healthy = self.state.healthy_step
            self.prune_healthy()
        self.saved_step = self.step

    def prune_healthy(self) -> None:
        """Keep the healthy checkpoints a rollback may still need: the current one, and the one the
        last saved checkpoint names (a resume after a crash rolls back to that one)."""
        keep = {self.layout.healthy_checkpoint(s) for s in (self.state.healthy_step, self.saved_healthy) if s is not None}
        for path in self.layout.healthy_checkpoints:
            if path not in keep:
                path.unlink(missing_ok=True)

    def gather_augment(self) -> None:
        """Every rank: the augmentation's r_t sums onto rank 0, whose checkpoint then holds them."""
        if self.trainer.augment is not None:
            self.trainer.augment.gather()

    def raise_if_nonfinite(self) -> None:
        bad = self.trainer.first_nonfinite()
        if self.world.distributed:  # every rank stops at the first bad step of any rank
            bad = distributed.first_bad(bad)
        if bad is None:
            return
        if self.main:
            trainlog.write(self.layout.train_log, self.rows)
        kept = (
            f"the last good checkpoint {self.layout.checkpoint} (step {self.saved_step}) was kept"
            if self.saved_step is not None
            else "no checkpoint had been written yet"
        )
        raise TrainingError(
            f"non-finite loss_d={bad[1]:.6g} loss_g={bad[2]:.6g} at step {bad[0]}; {kept}. Lower "
            "train.lr_d/train.lr_g, try another loss (e.g. loss.name=hinge) or check the data for NaN"
        )

    # -- the monitor's judgement ------------------------------------------------------------------
    def keep_best(self, figures: dict[str, Any]) -> None:
        """``train.keep_best``: save the generator when the chosen figure improved."""
        figure = self.tp.keep_best
        if not figure or not self.state.improves(figure, figures):
            return
        self.state.best_value, self.state.best_step, self.state.best_figure = figures[figure], self.step, figure
        self.state.best_key, self.state.best_since = rank_key(figure, figures), self.best_since
        best = self.layout.best_models
        save_model(
            best / "generator.pt", self.trainer.sampling_generator, ema=self.trainer.ema is not None, step=self.step, **self.model_record
        )
        write_json(best / BEST_FILE, {"figure": figure, "value": self.state.best_value, "step": self.step, "since_step": self.best_since})

    def judge(self, row: dict[str, Any]) -> dict[str, Any]:
        """Rank 0: the monitor's figures at this step (into ``row``) and what to do about them."""
        assert self.monitor is not None
        tp, step = self.tp, self.step
        figures, x = self.monitor.measure(self.trainer.sampling_generator)
        figures.update(self.monitor.discriminator_figures(self.trainer.D, self.trainer.pack))
        verdict = self.monitor.judge({**figures, "step": step})
        self.monitor.picture(x, self.layout.progress / f"step_{step:06d}.png")
        if isinstance(self.layout, PartLayout):  # the mixture judges its parts' samples together
            self.monitor.keep(x, self.layout.progress / f"step_{step:06d}.pt")
        row.update(log_columns(figures, verdict))
        if not row[PREFIX + "collapse"]:
            self.keep_best(figures)  # a generator judged collapsed is never the one kept
            if tp.on_collapse == "rollback":
                self.state.healthy_step = step
                save_checkpoint(self.layout.healthy_checkpoint(step), self.checkpoint_state())
                self.prune_healthy()
            return {"act": None, "healthy_step": self.state.healthy_step}
        if tp.on_collapse == "stop":
            return {"act": "stop", "verdict": verdict}
        if tp.on_collapse == "rollback" and self.state.healthy_step is not None and len(self.state.rollbacks) < tp.max_rollbacks:
            return {"act": "rollback", "verdict": verdict}
        return {"act": None, "healthy_step": self.state.healthy_step}

    def roll_back(self, row: dict[str, Any], verdict: str) -> None:
        """Back to the last healthy checkpoint, with a fresh noise stream (every rank)."""
        assert self.state.healthy_step is not None
        path = self.layout.healthy_checkpoint(self.state.healthy_step)
        if not path.exists() and (self.layout.checkpoints / "healthy.pt").exists():
            path = self.layout.checkpoints / "healthy.pt"  # a run from before the per-step files
        healthy = load_checkpoint(path)
        if int(healthy["step"]) != self.state.healthy_step:
            raise TrainingError(
                f"{path} holds step {healthy['step']}, not the healthy step {self.state.healthy_step} this run rolls "
                "back to; train again with --restart"
            )
        self.trainer.load_state_dict(healthy["trainer"])
        self.trainer.reroll_noise(len(self.state.rollbacks) + 1)
        self.state.rollbacks = [*self.state.rollbacks, {"step": self.step, "to": healthy["step"], "verdict": verdict}]
        row[PREFIX + "rollback"] = healthy["step"]

    def check(self, row: dict[str, Any]) -> bool:
        """Run the monitor at this step and act on it on every rank; False to stop training."""
        if self.world.distributed and self.tp.on_collapse == "rollback":
            self.gather_augment()  # rank 0 may write the healthy checkpoint
        decision = self.judge(row) if self.main else None
        if self.world.distributed:
            decision = distributed.broadcast(decision, self.world)
        assert decision is not None
        if decision["act"] == "stop":
            self.state.stopped = self.step
            row[PREFIX + "stop"] = self.step
            return False
        if decision["act"] == "rollback":
            self.roll_back(row, decision["verdict"])
        else:
            self.state.healthy_step = decision["healthy_step"]
        return True

    # -- steps ------------------------------------------------------------------------------------
    def monitors(self, step: int) -> bool:
        """Whether the monitor checks ``step`` (multiples of monitor_every only, not also the last
        step: train.steps must not change the log of the steps before it)."""
        return self.tp.monitor_every is not None and step % self.tp.monitor_every == 0

    def on_grid(self, step: int) -> bool:
        """Whether ``step`` has a log row whatever ``train.steps`` is (every log_every-th, and the
        monitor's steps); the last step has one too, off the grid."""
        return step % self.tp.log_every == 0 or self.monitors(step)

    def step_once(self, bar: Any) -> bool:
        """One generator update, its log row and its monitor check; True when training should end."""
        tp, trainer = self.tp, self.trainer
        self.step += 1
        step = self.step
        last = step == tp.steps
        monitor_now = self.monitors(step)
        on_grid = self.on_grid(step)
        log_now = on_grid or last
        if tp.lr_decay > 0:
            trainer.set_lr_factor(lr_factor(step, tp.steps, tp.lr_decay))
        stats = trainer.step(step, stats=log_now)
        failpoints.hit("train.step", index=step)
        if stats is not None:
            stacked = torch.stack([stats[c] for c in trainlog.STEP_STATS])
            if self.world.distributed:
                stacked = distributed.mean(stacked)  # figures of the whole batch
            values = dict(zip(trainlog.STEP_STATS, stacked.tolist()))
            elapsed = self.elapsed_before + time.perf_counter() - self.loop_start
            row = {"step": step, **values, "bn_drift_g": trainer.bn_drift(update=on_grid), "seconds": round(elapsed, 3)}
            if trainer.augment is not None:  # p and the r_t it was last steered by
                row.update({k: float(v) for k, v in trainer.augment.stats().items()})
            self.rows.append(row)
            self.raise_if_nonfinite()  # after the row: the log shows the failing values
            bar.set_postfix(loss_d=f"{values['loss_d']:.4f}", loss_g=f"{values['loss_g']:.4f}", refresh=False)
            if monitor_now and not self.check(row):
                last = True
        if step % tp.checkpoint_every == 0 or last:
            self.save()
        return last

    def run_steps(self) -> float:
        """Train to ``train.steps`` (or a stop); the loop's seconds."""
        tp = self.tp
        if self.main:
            trainlog.write(self.layout.train_log, self.rows)
            self.layout.progress.mkdir(parents=True, exist_ok=True)  # a DVC output, also when the monitor is off
        self.loop_start = time.perf_counter()
        bar = progress.bar(tp.steps, self.label, "step", initial=self.start, show=self.main)
        try:
            while self.step < tp.steps and self.state.stopped is None:
                self.step_once(bar)
                bar.update(1)
                if self.main and self.step == self.start + ESTIMATE_STEPS and self.step < tp.steps:
                    seconds = time.perf_counter() - self.loop_start
                    progress.say(estimate(self.label, ESTIMATE_STEPS, seconds, tp.steps - self.step, self.later_steps))
        finally:
            bar.close()
        return time.perf_counter() - self.loop_start

    def finish(self, loop_seconds: float, device: torch.device, started: float) -> dict[str, Any]:
        """Save the models (rank 0) and return the summary (``started``: when the stage began)."""
        params, tp, step = self.params, self.tp, self.step
        if self.main:
            save_model(
                self.layout.generator, self.trainer.sampling_generator, ema=self.trainer.ema is not None, step=step, **self.model_record
            )
            save_model(self.layout.discriminator, self.trainer.D, ema=False, step=step, pack=params.model.pack, **self.model_record)
            # A mixture trained here before is replaced only now that its successor exists: a run
            # refused or interrupted earlier leaves the model that was there.
            self.layout.mixture.unlink(missing_ok=True)
            if self.state.best_step is None and self.layout.best_models.exists():
                # Another run's best (before --restart, or other parameters): sample.generator=best
                # would have drawn from it beside this run's last generator.
                import shutil

                shutil.rmtree(self.layout.best_models)
            trainlog.write(self.layout.train_log, self.rows)
        if self.world.distributed:
            distributed.barrier()  # the files are complete before any rank returns
        trained = step - self.start
        summary: dict[str, Any] = {
            "steps": step,
            "loss_d": self.rows[-1]["loss_d"] if self.rows else None,
            "loss_g": self.rows[-1]["loss_g"] if self.rows else None,
            "samples_per_second": round(trained * tp.batch_size * params.model.pack / loop_seconds, 1) if trained else None,
            "threads": torch.get_num_threads(),  # intra-op threads of the loop (see pin_small_model_threads)
            "device": str(device),
            "software": software(device),  # what else decides the bits (gancore.device)
            "resumed_from": self.start if self.resumed else None,
            "seconds": round(time.perf_counter() - started, 3),
        }
        if self.world.distributed:
            summary["processes"] = self.world.size
        if tp.monitor_every is not None:
            s = self.state
            summary.update(rollbacks=len(s.rollbacks), stopped_at=s.stopped, best_step=s.best_step, best_value=s.best_value)
        return summary
