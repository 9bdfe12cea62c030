"""Adam is fused on the CPU too, and a checkpoint whose optimisers ran unfused resumes unfused.

Fused and unfused Adam round differently (in the last bit), so a run that an earlier release
checkpointed must go on in the kernel it started in: otherwise its resumed weights would differ
from what an uninterrupted run of that release gives.
"""

from __future__ import annotations

import copy

import torch

from gancore import training
from gancore.losses import get_loss


def _trainer(seed: int = 0) -> training.Trainer:
    torch.manual_seed(seed)
    g = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    d = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.LeakyReLU(0.2), torch.nn.Linear(16, 1))
    data = torch.randn(256, 2, generator=torch.Generator().manual_seed(1))
    batches = training.BatchStream(data, 32, seed=seed, device="cpu", resident=True)
    return training.Trainer(g, d, get_loss("non_saturating"), batches, latent_dim=3, lr_g=1e-3, lr_d=1e-3, betas=(0.5, 0.999))


def _unfused(trainer: training.Trainer) -> training.Trainer:
    """The trainer as releases before fused CPU Adam built it."""
    trainer.opt_g = torch.optim.Adam(trainer.G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    trainer.opt_d = torch.optim.Adam(trainer.D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    for opt in (trainer.opt_g, trainer.opt_d):
        opt.param_groups[0].setdefault("initial_lr", opt.param_groups[0]["lr"])  # as the Trainer records it
    return trainer


def _steps(trainer: training.Trainer, first: int, last: int) -> list[torch.Tensor]:
    for step in range(first, last + 1):
        trainer.step(step)
    return [p.detach().clone() for p in (*trainer.G.parameters(), *trainer.D.parameters())]


def test_adam_is_fused_on_the_cpu_and_a_fused_run_resumes_exactly():
    trainer = _trainer()
    assert all(opt.param_groups[0]["fused"] for opt in (trainer.opt_g, trainer.opt_d))
    _steps(trainer, 1, 5)
    saved = copy.deepcopy(trainer.state_dict())
    straight = _steps(trainer, 6, 10)
    resumed = _trainer()
    resumed.load_state_dict(saved)
    assert all(opt.param_groups[0]["fused"] for opt in (resumed.opt_g, resumed.opt_d))
    assert all(torch.equal(a, b) for a, b in zip(_steps(resumed, 6, 10), straight))


def test_an_unfused_checkpoint_resumes_unfused_and_exactly():
    old = _unfused(_trainer())
    _steps(old, 1, 5)
    saved = copy.deepcopy(old.state_dict())
    straight = _steps(old, 6, 10)

    resumed = _trainer()  # built fused, as now
    resumed.load_state_dict(saved)
    assert not any(opt.param_groups[0]["fused"] for opt in (resumed.opt_g, resumed.opt_d))
    assert all(torch.equal(a, b) for a, b in zip(_steps(resumed, 6, 10), straight))
    resumed.set_lr_factor(0.5)  # lr decay reads what the Trainer records beside the groups

    # the kernels do round apart: continued fused, the same checkpoint gives other bits
    fused = _trainer()
    fused.load_state_dict(saved)
    for opt in (fused.opt_g, fused.opt_d):
        opt.param_groups[0]["fused"] = True
    assert not all(torch.equal(a, b) for a, b in zip(_steps(fused, 6, 10), straight))
