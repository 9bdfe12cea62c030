"""Augmentation the discriminator sees on real and generated samples alike: the design notes'
second remedy, "train on more diverse data", in its practical form.

* **DiffAugment** (Zhao et al. 2020, mit-han-lab/data-efficient-gans, ``DiffAugment_pytorch.py``):
  differentiable transforms T applied to every input of D, real and generated, in D's step and in
  G's, so that G's gradient flows through T. Images: ``color`` (brightness +-0.5, saturation x0..2,
  which leaves grey images alone as DiffAugment's does, contrast x0.5..1.5), ``translation`` (up to 1/8 of the side, zero padding), ``cutout`` (a square
  of half the side). ``geometric``, ``blit`` and ``ada_color``: ADA's geometric, pixel-blitting
  and colour groups (:mod:`.augment_ada`).
  Vectors: ``jitter`` (Gaussian noise of ``augment.jitter`` times each coordinate's spread within
  the data's modes, :func:`jitter_scale`: a small blur in the modes' own units).
* **Adaptive** (ADA, Karras et al. 2020, NVlabs/stylegan2-ada-pytorch): each transform is applied
  to each sample with probability p. Every ``augment.interval`` steps p moves by
  ``sign(r_t - augment.target) * (samples seen) / (augment.kimg * 1000)``, with
  ``r_t = E[sign(D(x_real) - b)]`` over those steps, b D's decision boundary under the loss (0; 0.5
  for least squares, whose targets are 0 and 1; :func:`gancore.losses.boundary`; a Wasserstein
  critic has none, so it takes fixed augmentation only). p stays in [0, 1] (ADA floors it at 0
  only; past 1 nothing changes but how long p takes to come back down). p can go from 0 to 1 in ``augment.kimg``
  thousand real samples (ADA's 500k images, the default; the data-limited benchmark's tables up to
  commit c899dd5 ran at 100k, which gained as much by 10,000-20,000 CPU steps with either signal
  and, with r_t, cost more at 1,000). A D that
  is sure of the training data (r_t high) gets more augmentation. p, the r_t accumulators and the
  transforms' random stream are checkpointed, so a resume continues exactly (stylegan2-ada issue
  106: p reset to 0 on resume). Without ``adaptive`` p is 1: every transform on every sample.
* **Held-out signal** (``augment.signal: held_out``): r_t cannot tell a discriminator that
  memorises from one that merely wins. A DCGAN's D calls real data real early in training on any
  amount of data (r_t 0.6-1.0 over the first thousand steps on all of Fashion-MNIST, where D
  called training and held-out examples real equally often), so ADA's rule raised p to 0.47-0.48 there
  and cost FID. This signal measures memorisation itself, as ADA's r_v and our diagnosis do: each
  D step also scores a batch of held-out examples (every other example of the test split,
  :mod:`gancore.heldout`; augmented alike, no gradient),
  and ADA's rule runs on the gap instead of r_t: p rises while D calls more than
  :data:`gancore.heldout.MEMORISATION_GAP` (a tenth) more of the training examples real than of
  the held-out ones over the interval, and falls while it calls fewer, so that D's gap is held at
  the level the diagnosis starts to call memorisation. Where D does not memorise p stays at 0.
  (A first version raised p while the gap was statistically significant: over one interval of
  batch 64 that held D's gap near the test's noise floor, a gap of about 0.07, lower at a larger
  batch; read over 10,000 samples, where the floor is about 0.01, the same test drove p to
  0.8-1.0 on 10 % of MNIST and raised FID by 13 and 10 % on two seeds at 20,000 steps
  (against the same seeds unaugmented). What D may keep is a
  tolerance, as ADA's target is, not a significance level.) Only this scalar comparison reaches
  training from held-out data.

Everything stays on the device (no host synchronisation per step); the random draws come from a
seeded generator of their own, so augmentation changes no other stream of training. In
distributed training every rank draws the whole batch's transforms and keeps its share
(:class:`Draws`), so two processes augment as one does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from gancore import seeds
from gancore.gaussian_mixture import mixture_from_modes
from gancore.heldout import MEMORISATION_GAP
from gancore.names import AUGMENTATIONS, parse_policy
from gancore.training.augment_ada import GROUPS as ADA_GROUPS
from gancore.training.augment_ada import gather_pixels

__all__ = ["SIGNALS", "Augment", "parse_policy"]
STREAM = "train/augment"
SIGNALS = ("r_t", "held_out")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


class Draws:
    """The transforms' random draws for a batch, one row per sample. In distributed training
    every rank draws the whole batch from the same stream and keeps its own rows, so a
    multi-process run augments exactly as one process does and every rank's stream stays in step
    (one state to checkpoint). Factors are drawn in float32 whatever the samples' precision:
    generated samples in bf16 autocast get the same transforms as real ones."""

    def __init__(self, generator: torch.Generator, device: torch.device, share: tuple[int, int] = (0, 1)):
        self.generator, self.device = generator, device
        self.rank, self.world = share

    def _rows(self, full: Tensor, b: int) -> Tensor:
        return full[self.rank * b : (self.rank + 1) * b] if self.world > 1 else full

    def rand(self, b: int, *tail: int) -> Tensor:
        return self._rows(torch.rand(b * self.world, *tail, generator=self.generator, device=self.device), b)

    def randn(self, b: int, *tail: int) -> Tensor:
        return self._rows(torch.randn(b * self.world, *tail, generator=self.generator, device=self.device), b)

    def randint(self, low: int, high: int, b: int, *tail: int) -> Tensor:
        return self._rows(torch.randint(low, high, (b * self.world, *tail), generator=self.generator, device=self.device), b)

    def chosen(self, b: int, p: Tensor | None) -> Tensor:
        """Which of b samples a transform acts on: each with probability ``p``; None: all of them
        (nothing drawn)."""
        if p is None:
            return torch.ones(b, dtype=torch.bool, device=self.device)
        return self.rand(b) < p


def _brightness(x: Tensor, draw: Draws) -> Tensor:
    return x + (draw.rand(x.shape[0], 1, 1, 1) - 0.5)


def _saturation(x: Tensor, draw: Draws) -> Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * (draw.rand(x.shape[0], 1, 1, 1) * 2) + mean


def _contrast(x: Tensor, draw: Draws) -> Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (draw.rand(x.shape[0], 1, 1, 1) + 0.5) + mean


def _translation(x: Tensor, draw: Draws) -> Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    dy = draw.randint(-sh, sh + 1, b, 1, 1)
    dx = draw.randint(-sw, sw + 1, b, 1, 1)
    gy, gx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    ys = torch.clamp(gy[None] + dy + 1, 0, h + 1)
    xs = torch.clamp(gx[None] + dx + 1, 0, w + 1)
    return gather_pixels(torch.nn.functional.pad(x, [1, 1, 1, 1]), ys * (w + 2) + xs)


def _cutout(x: Tensor, draw: Draws) -> Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    oy = draw.randint(0, h + (1 - ch % 2), b, 1, 1)
    ox = draw.randint(0, w + (1 - cw % 2), b, 1, 1)
    gy, gx = torch.meshgrid(torch.arange(ch, device=x.device), torch.arange(cw, device=x.device), indexing="ij")
    ys = torch.clamp(gy[None] + oy - ch // 2, 0, h - 1)
    xs = torch.clamp(gx[None] + ox - cw // 2, 0, w - 1)
    mask = torch.ones(b, h, w, device=x.device, dtype=x.dtype)
    mask[torch.arange(b, device=x.device)[:, None, None], ys, xs] = 0
    return x * mask[:, None]


def in_layout_of(x: Tensor, out: Tensor) -> Tensor:
    """``out`` in ``x``'s memory layout (no copy where it is already). The trainer's image
    batches are channels_last (``train.channels_last``), on which D's convolutions run fastest,
    while grid_sample returns a contiguous batch and a gather a channels_last one; under
    ``false`` they are contiguous, as a plugin that views its batch needs."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def jitter_scale(data: Any) -> Tensor:
    """Each coordinate's spread that ``jitter`` is a share of: within the data's modes when they
    are known (a generating mixture's sigma; a fitted mixture's variances, pooled by weight), else
    the whole training data's standard deviation, as for a mixture part (one cluster, so the two
    agree). The whole data's spread is the modes' layout: on ring8 the default share blurred each
    mode by 3.6 of its sigmas, for a single GAN."""
    modes = data.meta.get("modes") or {}
    d = data.train.shape[1]
    if not data.meta.get("part"):
        if modes.get("centers") and modes.get("sigma"):
            return torch.full((d,), float(modes["sigma"]))
        mixture = mixture_from_modes(modes)
        if mixture is not None:
            weights = mixture.weights / mixture.weights.sum()  # the clusters', without the background's share
            return (weights[:, None] * mixture.variances).sum(0).sqrt().float()
    return data.train.float().std(dim=0)


class Augment:
    """The transforms of ``policy`` with their application probability p (see the module doc)."""

    def __init__(
        self,
        policy: list[str],
        device: torch.device,
        seed: int,
        adaptive: bool = False,
        target: float = 0.6,
        kimg: float = 500.0,
        interval: int = 4,
        jitter_scale: Tensor | None = None,
        stream: str = STREAM,
        reduce: Callable[[Tensor], Tensor] | None = None,
        signal: str = "r_t",
        share: tuple[int, int] = (0, 1),
        boundary: float | None = 0.0,
    ):
        unknown = [p for p in policy if p not in AUGMENTATIONS]
        if unknown:
            raise ValueError(f"unknown augmentation {', '.join(unknown)}; allowed: {', '.join(AUGMENTATIONS)}")
        self.policy, self.device, self.adaptive = list(policy), device, adaptive
        if signal not in SIGNALS:
            raise ValueError(f"unknown augmentation signal {signal!r}; allowed: {', '.join(SIGNALS)}")
        if adaptive and boundary is None:
            raise ValueError("adaptive augmentation reads D's decision boundary, and this loss has none; use a fixed policy")
        self.target, self.kimg, self.interval, self.signal = target, kimg, interval, signal
        self.boundary = boundary
        self.generator = seeds.generator(seed, stream, device)
        self.draw = Draws(self.generator, device, share)
        self.p = torch.zeros((), device=device) if adaptive else torch.ones((), device=device)
        self._signs = torch.zeros((), device=device)  # sum of sign(D(x_real)) since the last adjustment
        self._count = torch.zeros((), device=device)
        self._held_signs = torch.zeros((), device=device)  # the same of held-out examples (signal held_out)
        self._held_count = torch.zeros((), device=device)
        self.last_rt = torch.zeros((), device=device)
        self.last_gap = torch.zeros((), device=device)
        self.jitter_scale = jitter_scale.to(device) if jitter_scale is not None else None
        # Distributed training: the sum over every rank's signs, so that all ranks keep one p.
        self.reduce = reduce
        self._accumulators = ("_signs", "_count", "_held_signs", "_held_count")

    @property
    def active(self) -> bool:
        return bool(self.policy)

    def _apply(self, x: Tensor, op: Any) -> Tensor:
        if not self.adaptive:
            return op(x, self.draw)
        mask = self.draw.chosen(x.shape[0], self.p)
        return torch.where(mask.view(-1, *([1] * (x.dim() - 1))), op(x, self.draw), x)

    def __call__(self, x: Tensor) -> Tensor:
        given = x
        for name in self.policy:
            if name == "color":
                for op in (_brightness, _saturation, _contrast):
                    x = self._apply(x, op)
            elif name == "translation":
                x = self._apply(x, _translation)
            elif name == "cutout":
                x = self._apply(x, _cutout)
            elif name in ADA_GROUPS:  # their transforms chosen one by one, as ADA's are
                x = ADA_GROUPS[name](x, self.draw, self.p if self.adaptive else None)
            elif name == "jitter":
                scale = self.jitter_scale

                def jitter(v: Tensor, draw: Draws, scale: Tensor | None = scale) -> Tensor:
                    return v + draw.randn(*v.shape) * (scale if scale is not None else 1.0)

                x = self._apply(x, jitter)
        return in_layout_of(given, x) if x.dim() == 4 else x

    # -- the adaptive probability ----------------------------------------------------------------
    @property
    def held_out(self) -> bool:
        """Whether p follows D's calls on held-out examples (the trainer then shows it some)."""
        return self.adaptive and self.signal == "held_out"

    def observe(self, logits_real: Tensor, logits_held: Tensor | None = None) -> None:
        """Accumulate sign(D(x) - boundary) of one discriminator step's training examples, and of as
        many held-out ones (signal held_out), augmented alike (no host sync). Nothing without a
        boundary: r_t is then undefined."""
        if self.boundary is None:
            return
        self._signs = self._signs + torch.sign(logits_real.detach().float() - self.boundary).sum()
        self._count = self._count + logits_real.numel()
        if logits_held is not None:
            self._held_signs = self._held_signs + torch.sign(logits_held.detach().float() - self.boundary).sum()
            self._held_count = self._held_count + logits_held.numel()

    def _held_out_direction(self, rt: Tensor) -> Tensor:
        """+1 while D called more than ``MEMORISATION_GAP`` more of this interval's training
        examples real than of its held-out ones, -1 while fewer (0 without held-out calls).
        ``rt``: the training side's sign mean, already over the ranks. The gap is a share of
        examples, as the diagnosis reports it: half the difference of the sign means."""
        held = self.reduce(self._held_signs) if self.reduce is not None else self._held_signs
        n_held = self.reduce(self._held_count) if self.reduce is not None else self._held_count
        self.last_gap = (rt - held / n_held.clamp_min(1)) / 2
        return torch.where(n_held > 0, torch.sign(self.last_gap - MEMORISATION_GAP), 0.0)

    def adjust(self, step: int, samples_per_step: int) -> None:
        """Every ``interval`` steps: r_t from the accumulated signs, and p moved towards target.
        ``samples_per_step``: real samples D saw in one generator step (all critic steps, all ranks)."""
        if step % self.interval:
            return
        signs, count = self._signs, self._count
        if self.reduce is not None:
            signs, count = self.reduce(signs), self.reduce(count)
        rt = signs / count.clamp_min(1)
        self.last_rt = rt
        if self.adaptive:
            direction = self._held_out_direction(rt) if self.held_out else torch.sign(rt - self.target)
            delta = direction * (samples_per_step * self.interval) / (self.kimg * 1000.0)
            self.p = (self.p + delta).clamp(0.0, 1.0)
        for name in self._accumulators:
            setattr(self, name, torch.zeros_like(getattr(self, name)))

    def gather(self) -> None:
        """Distributed training, every rank at once, before rank 0 writes a checkpoint: the
        accumulated signs summed onto rank 0 (the others' zeroed). The sums over the ranks, all
        that the next adjustment reads, are unchanged, and rank 0's state is the whole state."""
        if self.reduce is None:
            return
        for name in self._accumulators:
            total = self.reduce(getattr(self, name))
            setattr(self, name, total if self.draw.rank == 0 else torch.zeros_like(total))

    def stats(self) -> dict[str, Tensor]:
        stats = {"augment_p": self.p.detach().clone()}
        if self.boundary is not None:
            stats["r_t"] = self.last_rt.detach().clone()
        if self.held_out:
            stats["augment_gap"] = self.last_gap.detach().clone()
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {
            "p": self.p.detach().cpu(),
            "signs": self._signs.detach().cpu(),
            "count": self._count.detach().cpu(),
            "last_rt": self.last_rt.detach().cpu(),
            "held_signs": self._held_signs.detach().cpu(),
            "held_count": self._held_count.detach().cpu(),
            "last_gap": self.last_gap.detach().cpu(),
            "rng": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p = state["p"].to(self.device)
        self.last_rt = state["last_rt"].to(self.device)
        zero = torch.zeros(())  # checkpoints from before the held-out signal
        self.last_gap = state.get("last_gap", zero).to(self.device)
        # Rank 0 saved the sums over every rank (gather); the other ranks continue from zero.
        for name, key in zip(self._accumulators, ("signs", "count", "held_signs", "held_count")):
            setattr(self, name, (state.get(key, zero) if self.draw.rank == 0 else zero).to(self.device))
        self.generator.set_state(state["rng"])
