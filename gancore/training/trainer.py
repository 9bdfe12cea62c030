"""One GAN training step: n_critic discriminator updates, one generator update, the EMA of G."""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from gancore import seeds
from gancore.losses import GanLoss
from gancore.objectives import flat_logits, gradient_penalty, minimax_value
from gancore.training.augment import Augment
from gancore.training.batches import BatchStream
from gancore.training.distributed import SINGLE, World

NOISE_STREAM = "train/noise"
# The EMA generator's batch-norm statistics are measured again from its own weights (BigGAN's
# "standing statistics") on this many batches of its stream before it is saved or monitored.
EMA_BN_STREAM = "train/ema-batch-norm"
EMA_BN_BATCHES = 20


def _grad_norm(module: nn.Module, device: torch.device) -> Tensor:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads).float() if grads else torch.zeros((), device=device)


class Trainer:
    """G, D, their optimisers and the EMA of G; :meth:`step` is one generator update.

    One step is ``n_critic`` discriminator updates, each on a fresh real batch and fresh latent
    vectors, then one generator update on fresh latent vectors, then the EMA update.

    Packing (PacGAN, Lin et al. 2018): with ``pack = m`` the discriminator judges m samples
    jointly. Real and generated batches of ``batch_size`` samples are cut into ``batch_size / m``
    groups of m consecutive samples, concatenated along the first data axis (``[m*d]`` vectors,
    ``[m*C, H, W]`` images): ``discriminator`` must have been built for that packed shape. The
    gradient penalty interpolates packed real and fake inputs.
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
        pack: int = 1,
        world: World = SINGLE,
        compile: bool = False,
        augment: Augment | None = None,
        held_out: BatchStream | None = None,
    ):
        self.device = batches.device
        cuda = self.device.type == "cuda"
        self.amp = cuda
        self.G = generator.to(self.device).train()
        self.D = discriminator.to(self.device).train()
        if batches.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.loss = loss
        self.batches = batches
        self.latent_dim = latent_dim
        self.batch_size = batches.batch_size
        self.local = batches.local  # this rank's share of a batch (all of it in one process)
        if pack < 1 or self.local % pack:
            raise ValueError(f"batch size {self.local} (per process) is not a multiple of pack={pack}")
        self.pack = pack
        self.n_critic = n_critic
        # Fused Adam: one kernel over all of a model's tensors (CPU: 4x faster than the default
        # per-tensor loop for the ring8 MLP, 10x for DCGAN; benchmarks/train_throughput.py).
        # A checkpoint saved unfused resumes unfused: load_state_dict restores the group's flag.
        fused = {"fused": True} if self.device.type in ("cuda", "cpu") else {}
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=lr_g, betas=betas, **fused)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=betas, **fused)
        # What G's step switches off and back on: a layer the plugin froze stays frozen.
        self.d_trainable = [p for p in self.D.parameters() if p.requires_grad]
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group.setdefault("initial_lr", group["lr"])
        self.ema_decay = ema_decay
        self.ema = copy.deepcopy(self.G).requires_grad_(False) if ema_decay else None
        self._steps, self._ema_calibrated = 0, -1  # updates in this process; when the EMA's statistics were measured
        self.seed = seed
        self.noise = seeds.generator(seed, NOISE_STREAM, self.device)
        self.rollbacks = 0
        self.bn_layers = [m for m in self.G.modules() if isinstance(m, _BatchNorm) and m.running_mean is not None]
        self.bn_prev: list[Tensor] | None = None
        self._bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        self._bad_losses = torch.zeros(2, device=self.device)
        if cuda:
            torch.backends.cudnn.benchmark = True
        # The modules training calls: DistributedDataParallel replicas on several ranks (G's update
        # runs through the plain D, whose weights it must not touch, so D's replica sees no
        # gradient-less forward).
        self.world = world
        self.G_train: nn.Module = self.G
        self.D_train: nn.Module = self.D
        self.D_plain: nn.Module = self.D
        if world.distributed:
            from gancore.training.distributed import wrap

            self.G_train, self.D_train = wrap(self.G, self.device), wrap(self.D, self.device)
        # Augmentation D sees on every input, real and generated, in both steps (DiffAugment).
        self.augment = augment if augment is not None and augment.active else None
        # Held-out examples D scores (no gradient) when they steer the augmentation (signal held_out).
        if self.augment is not None and self.augment.held_out and held_out is None:
            raise ValueError("augmentation steered by held-out examples (signal held_out) needs the held_out batch stream")
        self.held_out = held_out if self.augment is not None and self.augment.held_out else None
        self.compiled = compile
        # The gradient penalty differentiates D's gradient, which a compiled D cannot (AOTAutograd
        # has no double backward): it runs through the eager module.
        self.D_penalty: nn.Module = self.D_train
        if compile:
            # Graphs of the forwards (and, through AOTAutograd, their backwards); the weights,
            # optimisers and checkpoints stay the plain modules'.
            self.G_train, self.D_train, self.D_plain = (torch.compile(m) for m in (self.G_train, self.D_train, self.D))  # type: ignore[assignment]

    def set_lr_factor(self, factor: float) -> None:
        """Scale both learning rates to ``factor`` times their configured values."""
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * factor

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()

    def _z(self) -> Tensor:
        # The whole batch's latent vectors, this rank's share of them: every rank's stream stays
        # in step with a single process's.
        z = torch.randn(self.batch_size, self.latent_dim, generator=self.noise, device=self.device)
        return z[self.batches.offset : self.batches.offset + self.local] if self.world.distributed else z

    def _packed(self, x: Tensor) -> Tensor:
        """[B, d] -> [B/m, m*d]; [B, C, H, W] -> [B/m, m*C, H, W] (m consecutive samples a group)."""
        if self.pack == 1:
            return x
        return x.reshape(x.shape[0] // self.pack, self.pack * x.shape[1], *x.shape[2:])

    def d_input(self, x: Tensor) -> Tensor:
        """What D sees of a batch: augmented (each sample on its own), then packed."""
        return self._packed(self.augment(x) if self.augment is not None else x)

    def discriminate(self, x: Tensor, module: nn.Module | None = None) -> Tensor:
        """D's logits for a batch of samples, augmented and packed as D was built (``[B / pack]``)."""
        # Not ``module or self.D``: a compiled module refuses ``bool()`` (it has no ``len``).
        return flat_logits((self.D if module is None else module)(self.d_input(x)))

    def reroll_noise(self, rollbacks: int) -> None:
        """A fresh latent stream after the run's ``rollbacks``-th rollback, so that training does
        not replay the same steps into the same collapse (deterministic: the n-th rollback's stream
        is fixed). The count is the loop's: the healthy state just restored holds the count of its
        own time, and a second rollback to it would otherwise replay the first one exactly."""
        self.rollbacks = rollbacks
        self.noise = seeds.generator(self.seed, f"{NOISE_STREAM}/rollback{self.rollbacks}", self.device)

    def step(self, step: int, stats: bool = False) -> dict[str, Tensor] | None:
        """One generator update (``step`` numbers it for error reports); with ``stats``, the log values as tensors."""
        G, D, D_train = self.G, self.D, self.D_train
        self._steps += 1
        losses_d = []
        for _ in range(self.n_critic):
            real = next(self.batches)
            # Before the step's own forwards, whose autograd graph must not see D's buffers restored.
            l_held = self._held_out_logits() if self.held_out is not None else None
            with torch.no_grad(), self._autocast():
                fake = G(self._z())
            with self._autocast():
                real_in, fake_in = self.d_input(real), self.d_input(fake)
                l_real = flat_logits(D_train(real_in)).float()
                l_fake = flat_logits(D_train(fake_in)).float()
                loss_d = self.loss.d(l_real, l_fake)
                if self.loss.gp_weight:
                    share = (self.batch_size // self.pack, self.batches.offset // self.pack) if self.world.distributed else None
                    penalty = gradient_penalty(self.D_penalty, real_in, fake_in, generator=self.noise, share=share)
                    loss_d = loss_d + self.loss.gp_weight * penalty
            if self.augment is not None:
                self.augment.observe(l_real, l_held)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            losses_d.append(loss_d.detach())
        grad_norm_d = _grad_norm(D, self.device) if stats else None

        _set_requires_grad(self.d_trainable, False)  # G's update needs gradients through D, not for D's weights
        with self._autocast():
            loss_g = self.loss.g(self.discriminate(self.G_train(self._z()), self.D_plain).float())
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        _set_requires_grad(self.d_trainable, True)
        if self.ema is not None:
            self._update_ema()
        if self.augment is not None:
            # ADA's speed is in real samples D has seen: every critic step's batch, on every rank.
            self.augment.adjust(step, self.local * self.n_critic * self.world.size)
        self._track_finite(step, losses_d, loss_g.detach())
        if not stats:
            return None
        l_real, l_fake = l_real.detach(), l_fake.detach()
        assert grad_norm_d is not None
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
    def _held_out_logits(self) -> Tensor:
        """D's logits for a batch of held-out examples, augmented as the training batch was, in
        training mode like the training batch's; D's buffers (batch-norm statistics, spectral
        norm's vectors) are put back, so that the held-out examples leave no trace in D."""
        assert self.held_out is not None
        saved = [b.clone() for b in self.D.buffers()]
        # A plugin's D may draw from torch's global generator (dropout): fork it, so that the
        # held-out pass changes no stream of the step either.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), self._autocast():
            logits = flat_logits(self.D_plain(self.d_input(next(self.held_out)))).float()
        for buffer, value in zip(self.D.buffers(), saved):
            buffer.copy_(value)
        return logits

    @torch.no_grad()
    def _update_ema(self) -> None:
        assert self.ema is not None and self.ema_decay is not None
        ema_params: list[Tensor] = list(self.ema.parameters())
        torch._foreach_lerp_(ema_params, [p.detach() for p in self.G.parameters()], 1.0 - self.ema_decay)
        # Buffers (batch-norm statistics) are copied, not averaged, as StyleGAN2-ADA's training loop does.
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

    def bn_drift(self, update: bool = True) -> float | None:
        """Mean relative change of G's batch-norm running means since the previous call that
        ``update``d the reference (a row off the log's grid, the last step's, must not: a longer
        run has no row there, and the next row's drift would differ)."""
        if not self.bn_layers:
            return None
        current = [m.running_mean.detach().float().clone() for m in self.bn_layers if m.running_mean is not None]
        previous = self.bn_prev
        if update:
            self.bn_prev = current
        if previous is None:
            return None
        rel = [(c - p).norm() / (p.norm() + 1e-8) for c, p in zip(current, previous)]
        return torch.stack(rel).mean().item()

    @property
    def sampling_generator(self) -> nn.Module:
        """The generator to save: the EMA weights when EMA is on, with batch-norm statistics of
        its own. G's statistics, which the EMA copies every step, belong to G's current weights:
        in eval mode they normalised the averaged weights' activations with another layer's mean
        and spread (a PacGAN G on ring8: 17 % of samples within 3 sigma of a centre against 61 %
        with its own statistics)."""
        if self.ema is None:
            return self.G
        if self._ema_calibrated != self._steps:
            self._calibrate_ema_batch_norm()
            self._ema_calibrated = self._steps
        return self.ema

    def _calibrate_ema_batch_norm(self) -> None:
        assert self.ema is not None
        layers = [m for m in self.ema.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        if not layers:
            return
        momenta = [m.momentum for m in layers]
        for m in layers:
            m.reset_running_stats()
            m.momentum = None  # a plain average over the batches below
        training = self.ema.training
        stream = seeds.generator(self.seed, EMA_BN_STREAM, self.device)
        # Dropout in train mode would draw from the global generator: the training's own.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), torch.no_grad():
            self.ema.train()
            for _ in range(EMA_BN_BATCHES):
                self.ema(torch.randn(self.local, self.latent_dim, generator=stream, device=self.device))
        self.ema.train(training)
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum

    def state_dict(self) -> dict[str, Any]:
        cuda = self.device.type == "cuda"
        return {
            "generator": self.G.state_dict(),
            "discriminator": self.D.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "noise_rng": self.noise.get_state(),
            "rollbacks": self.rollbacks,
            "batches": self.batches.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if cuda else None,
            "bn_prev": [t.cpu() for t in self.bn_prev] if self.bn_prev is not None else None,
            "augment": self.augment.state_dict() if self.augment is not None else None,
            "held_out_batches": self.held_out.state_dict() if self.held_out is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["generator"])
        self.D.load_state_dict(state["discriminator"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
            self._ema_calibrated = -1
        for opt, key in ((self.opt_g, "opt_g"), (self.opt_d, "opt_d")):
            opt.load_state_dict(state[key])
            _lay_out_like_params(opt)
        self.rollbacks = int(state.get("rollbacks", 0))
        if self.rollbacks:
            self.noise = seeds.generator(self.seed, f"{NOISE_STREAM}/rollback{self.rollbacks}", self.device)
        self.noise.set_state(state["noise_rng"])
        self.batches.load_state_dict(state["batches"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        bn_prev = state["bn_prev"]
        self.bn_prev = [t.to(self.device) for t in bn_prev] if bn_prev is not None else None
        if self.augment is not None and state.get("augment") is not None:
            self.augment.load_state_dict(state["augment"])
        if self.held_out is not None and state.get("held_out_batches") is not None:
            self.held_out.load_state_dict(state["held_out_batches"])


def _set_requires_grad(parameters: list[nn.Parameter], value: bool) -> None:
    for p in parameters:
        p.requires_grad_(value)


def _lay_out_like_params(opt: torch.optim.Optimizer) -> None:
    """Give each loaded moment its parameter's memory layout. Fused Adam walks a parameter, its
    gradient and its moments as flat memory; a checkpoint saved contiguous and resumed
    channels_last (``train.channels_last`` is no part of a run's identity), or the other way
    round, paired each moment with other weights, silently. Values are unchanged."""
    for group in opt.param_groups:
        for p in group["params"]:
            state = opt.state.get(p, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    state[key] = torch.empty_like(p).copy_(value)
