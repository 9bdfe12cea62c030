"""A discriminator that memorises its training data is told from one that generalises, on held-out
real data of the same distribution (gancore.diagnostics.memorisation)."""

from __future__ import annotations

import torch
from torch import nn

from gancore.diagnostics.memorisation import GAP, counts, summarise
from helpers import ring_data


class LookUp(nn.Module):
    """Calls real exactly the points it has seen (a perfect memoriser), fake everything else."""

    def __init__(self, seen: torch.Tensor):
        super().__init__()
        self.seen = seen.float()

    def forward(self, x):
        near = torch.cdist(x.float(), self.seen, compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values < 1e-6
        return torch.where(near, 4.0, -4.0)


class Smooth(nn.Module):
    """Calls real whatever lies near the ring (radius 1): the same for seen and unseen points."""

    def forward(self, x):
        return 1.0 - (x.norm(dim=1) - 1).abs() * 10


def test_a_memorising_discriminator_is_flagged_and_a_generalising_one_is_not():
    data = ring_data(n_train=2000, n_test=2000)
    memo = summarise([counts(LookUp(data.train), data, pack=1, seed=0)])
    assert memo["called_real_train"] == 1.0 and memo["called_real_heldout"] == 0.0
    assert memo["gap"] == 1.0 and memo["r_t_train"] == 1.0 and memo["flag"] is True
    fair = summarise([counts(Smooth(), data, pack=1, seed=0)])
    # Same distribution on both sides: a gap of binomial noise only (sd ~0.016 at n = 2000).
    assert abs(fair["gap"]) < GAP / 2 and fair["flag"] is False


def test_a_packing_discriminator_is_asked_about_packed_groups():
    data = ring_data(n_train=400, n_test=400)
    seen = data.train.reshape(200, 4)  # pairs of consecutive training points, as D was trained on
    memo = summarise([counts(LookUp(seen), data, pack=2, seed=0)])
    assert memo["n"] == 200 and memo["flag"] is True


def test_parts_are_pooled():
    a = {"n_train": 100, "n_test": 100, "real_train": 90, "real_test": 50, "sign_train": 80, "sign_test": 0}
    b = {"n_train": 300, "n_test": 300, "real_train": 150, "real_test": 150, "sign_train": 0, "sign_test": 0}
    pooled = summarise([a, b])
    assert pooled["called_real_train"] == 240 / 400 and pooled["called_real_heldout"] == 200 / 400
    assert pooled["r_t_train"] == 80 / 400
