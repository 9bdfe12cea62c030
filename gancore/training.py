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
"""

from __future__ import annotations

import contextlib
import copy
import csv
import hashlib
import io
import os
import sys
import time
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from tqdm import tqdm

from gancore.checkpoint import (
    check_resumable,
    checkpoint_path,
    file_sha256,
    identity_digest,
    load_checkpoint,
    run_identity,
    save_checkpoint,
)
from gancore.config import Params
from gancore.data.prepared import DATA_FILE, PreparedData, load_prepared, to_model_range
from gancore.device import resolve_device
from gancore.errors import TrainingError
from gancore.io import write_text
from gancore.layout import Layout
from gancore.losses import GanLoss, flat_logits, get_loss, gradient_penalty, minimax_value
from gancore.modelio import DISCRIMINATOR_FILE, GENERATOR_FILE, resolve_architecture, save_model

LOG_COLUMNS = (
    "step", "loss_d", "loss_g", "d_real", "d_fake", "logit_real", "logit_fake", "value",
    "grad_norm_g", "grad_norm_d", "bn_drift_g", "seconds",
)
_STAT_COLUMNS = LOG_COLUMNS[1:10]
PROGRESS_ENV = "GANCORE_PROGRESS"


def derive_seed(seed: int, stream: str) -> int:
    """An independent seed per random stream, so that no two streams share a sequence."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{stream}".encode()).digest()[:8], "little") >> 1


def use_resident(mode: str, nbytes: int, max_gb: float) -> bool:
    return mode == "always" or (mode == "auto" and nbytes <= max_gb * 1e9)


# -- data ---------------------------------------------------------------------------------------
class _Rows(torch.utils.data.Dataset):
    """Rows of an in-memory tensor, fetched a whole batch of indices at a time."""

    def __init__(self, data: Tensor):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: Tensor) -> Tensor:
        return self.data.index_select(0, index)


class _IndexBatches(torch.utils.data.Sampler):
    def __init__(self, stream: "BatchStream"):
        self.stream = stream

    def __iter__(self) -> Iterator[Tensor]:
        while True:
            start, stop = self.stream._advance()
            yield self.stream.perm[start:stop]


class BatchStream:
    """Endless batches in model range: a fresh seeded permutation each epoch, last partial batch dropped.

    The order depends only on the seed (a CPU generator in every mode), so keeping the data
    resident on the device or streaming it from the CPU gives the same batches. The CPU path is a
    ``DataLoader`` with ``num_workers=0``: it fetches only when asked, so the checkpointed
    position is exactly the number of batches consumed, and gathering rows of an in-memory tensor
    is cheaper than shipping them from worker processes.
    """

    def __init__(self, data: Tensor, batch_size: int, seed: int, device: torch.device | str, resident: bool, channels_last: bool = False):
        if batch_size > len(data):
            raise TrainingError(f"train.batch_size={batch_size} is larger than the {len(data)} training examples; lower it or prepare more data (data.n_train)")
        self.n = len(data)
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.resident = resident
        self.channels_last = channels_last
        self.generator = torch.Generator().manual_seed(seed)
        self.perm = torch.empty(0, dtype=torch.long)
        self.pos = 0
        self._perm_on_device: Tensor | None = None
        if resident:
            self._data = data.to(self.device)
            self._loader: Iterator[Tensor] | None = None
        else:
            loader = torch.utils.data.DataLoader(
                _Rows(data), sampler=_IndexBatches(self), batch_size=None, num_workers=0,
                pin_memory=self.device.type == "cuda",
            )
            self._loader = iter(loader)

    def _advance(self) -> tuple[int, int]:
        if self.pos + self.batch_size > len(self.perm):
            self.perm = torch.randperm(self.n, generator=self.generator)
            self.pos = 0
            self._perm_on_device = None
        start = self.pos
        self.pos += self.batch_size
        return start, self.pos

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> Tensor:
        if self._loader is None:
            start, stop = self._advance()
            if self._perm_on_device is None:
                self._perm_on_device = self.perm.to(self.device)
            x = self._data.index_select(0, self._perm_on_device[start:stop])
        else:
            x = next(self._loader).to(self.device, non_blocking=True)
        x = to_model_range(x)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": self.perm.clone(), "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.perm = state["perm"].clone()
        self.pos = int(state["pos"])
        self._perm_on_device = None


# -- the step -----------------------------------------------------------------------------------
def _grad_norm(module: nn.Module, device: torch.device) -> Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads).float() if grads else torch.zeros((), device=device)


class Trainer:
    """G, D, their optimisers and the EMA of G; :meth:`step` is one generator update.

    One step is ``n_critic`` discriminator updates, each on a fresh real batch and fresh latent
    vectors, then one generator update on fresh latent vectors, then the EMA update.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        loss: GanLoss,
        batches: BatchStream,
        *,
        latent_dim: int,
        lr_g: float,
        lr_d: float,
        betas: tuple[float, float],
        n_critic: int = 1,
        ema_decay: float | None = None,
        seed: int = 0,
    ):
        self.device = batches.device
        cuda = self.device.type == "cuda"
        self.amp = cuda
        memory = {"memory_format": torch.channels_last} if batches.channels_last else {}
        self.G = generator.to(self.device, **memory).train()
        self.D = discriminator.to(self.device, **memory).train()
        self.loss = loss
        self.batches = batches
        self.latent_dim = latent_dim
        self.batch_size = batches.batch_size
        self.n_critic = n_critic
        fused = {"fused": True} if cuda else {}
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr_g, betas=betas, **fused)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=betas, **fused)
        self.ema_decay = ema_decay
        self.ema = copy.deepcopy(self.G).requires_grad_(False) if ema_decay else None
        self.noise = torch.Generator(device=self.device).manual_seed(derive_seed(seed, "noise"))
        self.bn_layers = [m for m in self.G.modules() if isinstance(m, _BatchNorm) and m.running_mean is not None]
        self.bn_prev: list[Tensor] | None = None
        self._bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self._bad_losses = torch.zeros(2, device=self.device)
        if cuda:
            torch.backends.cudnn.benchmark = True

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()

    def _z(self) -> Tensor:
        return torch.randn(self.batch_size, self.latent_dim, generator=self.noise, device=self.device)

    def step(self, step: int, stats: bool = False) -> dict[str, Tensor] | None:
        """One generator update (``step`` numbers it for error reports); with ``stats``, the log values as tensors."""
        G, D = self.G, self.D
        losses_d = []
        for _ in range(self.n_critic):
            real = next(self.batches)
            with torch.no_grad(), self._autocast():
                fake = G(self._z())
            with self._autocast():
                l_real = flat_logits(D(real)).float()
                l_fake = flat_logits(D(fake)).float()
                loss_d = self.loss.d(l_real, l_fake)
                if self.loss.gp_weight:
                    loss_d = loss_d + self.loss.gp_weight * gradient_penalty(D, real, fake, generator=self.noise)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            losses_d.append(loss_d.detach())
        grad_norm_d = _grad_norm(D, self.device) if stats else None

        D.requires_grad_(False)  # G's update needs gradients through D, not for D's weights
        with self._autocast():
            loss_g = self.loss.g(flat_logits(D(G(self._z()))).float())
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        D.requires_grad_(True)
        if self.ema is not None:
            self._update_ema()
        self._track_finite(step, losses_d, loss_g.detach())
        if not stats:
            return None
        l_real, l_fake = l_real.detach(), l_fake.detach()
        return {
            "loss_d": losses_d[-1],
            "loss_g": loss_g.detach(),
            "d_real": torch.sigmoid(l_real).mean(),
            "d_fake": torch.sigmoid(l_fake).mean(),
            "logit_real": l_real.mean(),
            "logit_fake": l_fake.mean(),
            "value": minimax_value(l_real, l_fake),
            "grad_norm_g": _grad_norm(G, self.device),
            "grad_norm_d": grad_norm_d,
        }

    @torch.no_grad()
    def _update_ema(self) -> None:
        ema_params = list(self.ema.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in self.G.parameters()], 1.0 - self.ema_decay)
        # Batch-norm statistics are not averaged: the EMA generator uses G's current ones.
        for e, b in zip(self.ema.buffers(), self.G.buffers()):
            e.copy_(b)

    def _track_finite(self, step: int, losses_d: list[Tensor], loss_g: Tensor) -> None:
        # Stays on the device (no host sync per step); read by first_nonfinite().
        finite = torch.isfinite(torch.stack(losses_d + [loss_g])).all()
        first = ~finite & (self._bad_step < 0)
        self._bad_step = torch.where(first, step, self._bad_step)
        self._bad_losses = torch.where(first, torch.stack([losses_d[-1], loss_g]), self._bad_losses)

    def first_nonfinite(self) -> tuple[int, float, float] | None:
        """(step, loss_d, loss_g) of the first step whose losses were not finite, if any."""
        step = int(self._bad_step)
        if step < 0:
            return None
        loss_d, loss_g = self._bad_losses.tolist()
        return step, loss_d, loss_g

    def bn_drift(self) -> float | None:
        """Mean relative change of G's batch-norm running means since the previous call."""
        if not self.bn_layers:
            return None
        current = [m.running_mean.detach().float().clone() for m in self.bn_layers]
        previous, self.bn_prev = self.bn_prev, current
        if previous is None:
            return None
        rel = [(c - p).norm() / (p.norm() + 1e-8) for c, p in zip(current, previous)]
        return torch.stack(rel).mean().item()

    @property
    def sampling_generator(self) -> nn.Module:
        """The generator to save: the EMA weights when EMA is on."""
        return self.ema if self.ema is not None else self.G

    def state_dict(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        return {
            "generator": self.G.state_dict(),
            "discriminator": self.D.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "noise_rng": self.noise.get_state(),
            "batches": self.batches.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if cuda else None,
            "bn_prev": [t.cpu() for t in self.bn_prev] if self.bn_prev is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["discriminator"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.noise.set_state(state["noise_rng"])
        self.batches.load_state_dict(state["batches"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        bn_prev = state["bn_prev"]
        self.bn_prev = [t.to(self.device) for t in bn_prev] if bn_prev is not None else None


# -- the log ------------------------------------------------------------------------------------
def write_train_log(path: Any, rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(LOG_COLUMNS)
    for row in rows:
        # repr-exact floats: a resumed run's rows compare equal to an uninterrupted run's.
        writer.writerow(["" if row[c] is None else row[c] for c in LOG_COLUMNS])
    write_text(path, buf.getvalue())


def read_train_log(path: Any) -> list[dict[str, float | int | None]]:
    """Rows of ``metrics/train_log.csv``; empty cells (e.g. bn_drift_g without batch norm) as None."""
    with open(path, newline="") as fh:
        return [
            {k: (int(v) if k == "step" else float(v)) if v != "" else None for k, v in row.items()}
            for row in csv.DictReader(fh)
        ]


def _progress_enabled() -> bool:
    return os.environ.get(PROGRESS_ENV, "1") != "0" and sys.stderr.isatty()


# -- the stage ----------------------------------------------------------------------------------
def _check_data(params: Params, layout: Layout, data: PreparedData) -> tuple[int, ...]:
    shape = tuple(data.meta["shape"])
    name = data.meta.get("name", params.data.name)
    if shape != params.data_shape or name != params.data.name or tuple(data.train.shape[1:]) != shape:
        raise TrainingError(
            f"prepared data in {layout.prepared} is {name!r} with shape {list(shape)} "
            f"(train tensor {list(data.train.shape)}), but the parameters ask for {params.data.name!r} "
            f"with shape {list(params.data_shape)}: run `gan prepare` with these parameters"
        )
    return shape


def train(params: Params, layout: Layout, restart: bool = False) -> dict[str, Any]:
    """Train (or resume) the GAN described by ``params``; write models/, checkpoints/ and the log."""
    started = time.perf_counter()
    tp = params.train
    device = resolve_device(params.device)
    data = load_prepared(layout.prepared)
    shape = _check_data(params, layout, data)
    arch, options = resolve_architecture(params.model.arch, params.model.options)
    identity = run_identity(params, file_sha256(layout.prepared / DATA_FILE), options)
    digest = identity_digest(identity)

    ckpt = checkpoint_path(layout)
    if restart:
        ckpt.unlink(missing_ok=True)
    state = load_checkpoint(ckpt) if ckpt.exists() else None
    if state is not None:
        check_resumable(ckpt, state, identity, tp.steps)
        if state["device"] != device.type:
            raise TrainingError(
                f"checkpoint {ckpt} was written on {state['device']} and cannot continue exactly on "
                f"{device.type}; set device={state['device']} or run `gan train --restart`"
            )

    torch.manual_seed(params.seed)  # weight initialisation
    generator, discriminator = arch.build(shape, params.model.latent_dim, **options)
    image = len(shape) == 3
    batches = BatchStream(
        data.train, tp.batch_size, derive_seed(params.seed, "batches"), device,
        resident=use_resident(tp.resident_data, data.train.nbytes, tp.resident_max_gb),
        channels_last=image and device.type == "cuda",
    )
    del data
    trainer = Trainer(
        generator, discriminator, get_loss(params.loss.name, params.loss.gp_weight), batches,
        latent_dim=params.model.latent_dim, lr_g=tp.lr_g, lr_d=tp.lr_d, betas=(tp.beta1, tp.beta2),
        n_critic=tp.n_critic, ema_decay=tp.ema_decay, seed=params.seed,
    )

    rows: list[dict[str, Any]] = []
    start, elapsed_before = 0, 0.0
    if state is not None:
        trainer.load_state_dict(state["trainer"])
        rows, start, elapsed_before = list(state["log"]), int(state["step"]), float(state["seconds"])
    saved_step = start if state is not None else None
    write_train_log(layout.train_log, rows)

    def raise_if_nonfinite() -> None:
        bad = trainer.first_nonfinite()
        if bad is None:
            return
        write_train_log(layout.train_log, rows)
        kept = f"the last good checkpoint {ckpt} (step {saved_step}) was kept" if saved_step is not None else "no checkpoint had been written yet"
        raise TrainingError(
            f"non-finite loss_d={bad[1]:.6g} loss_g={bad[2]:.6g} at step {bad[0]}; {kept}. Lower "
            "train.lr_d/train.lr_g, try another loss (e.g. loss.name=hinge) or check the data for NaN"
        )

    loop_start = time.perf_counter()
    step = start
    bar = tqdm(total=tp.steps, initial=start, desc="train", unit="step", disable=not _progress_enabled(), dynamic_ncols=True)
    try:
        while step < tp.steps:
            step += 1
            last = step == tp.steps
            log_now = step % tp.log_every == 0 or last
            stats = trainer.step(step, stats=log_now)
            if log_now:
                values = dict(zip(_STAT_COLUMNS, torch.stack([stats[c] for c in _STAT_COLUMNS]).tolist()))
                elapsed = elapsed_before + time.perf_counter() - loop_start
                rows.append({"step": step, **values, "bn_drift_g": trainer.bn_drift(), "seconds": round(elapsed, 3)})
                raise_if_nonfinite()  # after the row: the log shows the failing values
                bar.set_postfix(loss_d=f"{values['loss_d']:.4f}", loss_g=f"{values['loss_g']:.4f}", refresh=False)
            if step % tp.checkpoint_every == 0 or last:
                raise_if_nonfinite()
                save_checkpoint(ckpt, {
                    "step": step, "identity": identity, "digest": digest, "device": device.type,
                    "seconds": elapsed_before + time.perf_counter() - loop_start,
                    "log": rows, "trainer": trainer.state_dict(),
                })
                saved_step = step
                write_train_log(layout.train_log, rows)
            bar.update(1)
    finally:
        bar.close()
    loop_seconds = time.perf_counter() - loop_start

    common = dict(arch=params.model.arch, options=options, latent_dim=params.model.latent_dim,
                  shape=shape, kind=params.data_kind, step=step, params_digest=digest)
    save_model(layout.models / GENERATOR_FILE, trainer.sampling_generator, ema=trainer.ema is not None, **common)
    save_model(layout.models / DISCRIMINATOR_FILE, trainer.D, ema=False, **common)
    write_train_log(layout.train_log, rows)

    trained = step - start
    return {
        "steps": step,
        "loss_d": rows[-1]["loss_d"],
        "loss_g": rows[-1]["loss_g"],
        "samples_per_second": round(trained * tp.batch_size / loop_seconds, 1) if trained else None,
        "device": str(device),
        "resumed_from": start if state is not None else None,
        "seconds": round(time.perf_counter() - started, 3),
    }
