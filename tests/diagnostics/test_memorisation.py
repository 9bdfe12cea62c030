"""A discriminator that memorises its training data is told from one that generalises, on held-out
real data of the same distribution (gancore.diagnostics.memorisation)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gancore.diagnostics.memorisation import GAP, counts, ranked_pairs, summarise
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


class Ranks(nn.Module):
    """Calls every point real (logit above 0), seen points more confidently: the share gap's blind spot."""

    def __init__(self, seen: torch.Tensor):
        super().__init__()
        self.lookup = LookUp(seen)

    def forward(self, x):
        return self.lookup(x) + 8.0  # 12 for seen points, 4 for the rest


def test_the_auc_reads_memorisation_the_share_gap_misses():
    """A D that calls all real data real has no share gap at its threshold, however well it ranks
    its own examples first; the AUC of its logits sees it. A fair D's AUC is 0.5 within noise
    (its s.d. under no difference is sqrt((n1 + n2 + 1) / (12 n1 n2)) = 0.009 at n = 2000: 0.04 is 4 s.d.)."""
    data = ring_data(n_train=2000, n_test=2000)
    blind = summarise([counts(Ranks(data.train), data, pack=1, seed=0)])
    assert blind["called_real_train"] == blind["called_real_heldout"] == 1.0 and blind["gap"] == 0.0
    assert blind["auc"] == 1.0 and blind["flag"] is True and blind["flagged_by"] == "auc"
    seen = summarise([counts(LookUp(data.train), data, pack=1, seed=0)])
    assert seen["auc"] == 1.0 and seen["flagged_by"] == "gap"
    fair = summarise([counts(Smooth(), data, pack=1, seed=0)])
    assert abs(fair["auc"] - 0.5) < 0.04 and fair["flag"] is False and fair["flagged_by"] is None


def _pairs(n1: int, n2: int, auc: float) -> dict:
    return {
        "n_train": n1,
        "n_test": n2,
        "real_train": n1,
        "real_test": n2,
        "sign_train": n1,
        "sign_test": n2,
        "ranked_pairs": auc * n1 * n2,
    }


def test_the_auc_flags_at_the_gap_s_tolerance_and_only_when_significant():
    """AUC - 1/2 cannot exceed the share gap at D's best threshold, so 1/2 + GAP is the gap's
    tolerance; the Mann-Whitney z (s.d. of U without a difference: sqrt(n1 n2 (n1 + n2 + 1) / 12))
    keeps a small sample's chance ranking from being a finding."""
    assert GAP == 0.1
    below = summarise([_pairs(2000, 2000, 0.58)])  # z = 8.8: real, but under the tolerance
    assert below["z_auc"] == pytest.approx(0.08 * 4e6 / math.sqrt(4e6 * 4001 / 12)) and below["flag"] is False
    assert summarise([_pairs(2000, 2000, 0.61)])["flagged_by"] == "auc"
    small = summarise([_pairs(20, 20, 0.65)])  # z = 0.15 * 400 / 37.0 = 1.6
    assert small["z_auc"] == pytest.approx(60 / math.sqrt(400 * 41 / 12)) and small["flag"] is False
    # Parts pool U, its mean and its variance (each D ranks only its own part's examples).
    pooled = summarise([_pairs(100, 100, 0.9), _pairs(300, 300, 0.5)])
    u, mean, var = 0.9 * 1e4 + 0.5 * 9e4, 0.5 * 1e5, 1e4 * 201 / 12 + 9e4 * 601 / 12
    assert pooled["auc"] == pytest.approx(u / 1e5) and pooled["z_auc"] == pytest.approx((u - mean) / math.sqrt(var))
    # At the tolerance itself (0.6 - 0.5 is a hair under 0.1 in floating point): flagged.
    assert summarise([_pairs(5000, 5000, 0.6)])["flagged_by"] == "auc"
    # A diverged D ranks nothing: alone its NaN is the AUC; in a mixture the other parts still count.
    diverged = summarise([_pairs(10, 10, float("nan"))])
    assert math.isnan(diverged["auc"]) and diverged["flag"] is False and diverged["auc_parts_left_out"] == 1
    mixed = summarise([_pairs(10, 10, float("nan")), _pairs(2000, 2000, 0.7)])
    assert mixed["auc"] == pytest.approx(0.7) and mixed["flagged_by"] == "auc" and mixed["auc_parts_left_out"] == 1


def test_the_auc_above_a_half_never_exceeds_the_best_threshold_s_share_gap():
    """Why 1/2 + GAP: AUC - 1/2 averages the share gaps at thresholds placed at the training
    logits, so some threshold shows at least that gap. Checked on logits of every shape: shifted,
    wider, bimodal, tied."""
    gen = torch.Generator().manual_seed(5)
    for train, held in (
        (torch.randn(700, generator=gen) + 0.4, torch.randn(500, generator=gen)),
        (torch.randn(600, generator=gen) * 3, torch.randn(600, generator=gen)),
        (torch.cat([torch.randn(300, generator=gen) - 3, torch.randn(300, generator=gen) + 3]), torch.randn(400, generator=gen)),
        (torch.randint(0, 4, (500,), generator=gen).float(), torch.randint(0, 3, (500,), generator=gen).float()),
    ):
        auc = ranked_pairs(train, held) / (len(train) * len(held))

        def mid_cdf(x: torch.Tensor, t: float) -> float:  # ties counted half
            return float((x < t).double().mean() + 0.5 * (x == t).double().mean())

        # The identity, exactly: the mean over training logits of the (tie-halved) share gap there.
        assert auc - 0.5 == pytest.approx(sum(mid_cdf(held, t) - mid_cdf(train, t) for t in train.tolist()) / len(train), abs=1e-12)
        thresholds = torch.cat([train, held, torch.tensor([-1e9])])
        best = max(float((train > t).double().mean() - (held > t).double().mean()) for t in thresholds)
        assert auc - 0.5 <= best + 1e-12


def test_ranked_pairs_match_scikit_learns_auc_with_ties():
    """The reference: sklearn's roc_auc_score with training examples as positives (ties half)."""
    from sklearn.metrics import roc_auc_score

    gen = torch.Generator().manual_seed(3)
    for n1, n2 in ((500, 700), (64, 64)):
        a = torch.randint(-20, 20, (n1,), generator=gen).float() / 4 + 0.5  # many ties, within and across
        b = torch.randint(-20, 20, (n2,), generator=gen).float() / 4
        expected = roc_auc_score([1] * n1 + [0] * n2, torch.cat([a, b]).numpy())
        assert ranked_pairs(a, b) / (n1 * n2) == pytest.approx(expected, abs=1e-12)
    # A diverged D's NaN logits rank nothing (sorted, a NaN would sit above every number).
    assert math.isnan(ranked_pairs(torch.tensor([float("nan"), 1.0]), torch.tensor([0.0, 2.0])))


def test_parts_pool_their_pairs_and_old_counts_have_no_auc():
    a = {"n_train": 100, "n_test": 100, "real_train": 90, "real_test": 50, "sign_train": 80, "sign_test": 0, "ranked_pairs": 9000.0}
    b = {"n_train": 300, "n_test": 300, "real_train": 150, "real_test": 150, "sign_train": 0, "sign_test": 0, "ranked_pairs": 45000.0}
    assert summarise([a, b])["auc"] == (9000 + 45000) / (100 * 100 + 300 * 300)
    assert summarise([{k: v for k, v in a.items() if k != "ranked_pairs"}])["auc"] is None


class Shifted(nn.Module):
    """A memoriser whose outputs sit at ``seen`` and ``unseen``, as a loss's targets put them."""

    def __init__(self, seen: torch.Tensor, on_seen: float, on_unseen: float):
        super().__init__()
        self.lookup, self.on_seen, self.on_unseen = LookUp(seen), on_seen, on_unseen

    def forward(self, x):
        return torch.where(self.lookup(x) > 0, self.on_seen, self.on_unseen)


def test_real_is_called_at_the_loss_s_decision_boundary():
    """A least-squares D that memorised its data outputs near its targets, 0.9 on training examples
    and 0.1 on held-out ones: at its boundary (0.5) a gap of 1 and r_t 1; read at a logistic D's 0,
    as before, it calls both real: no gap, r_t 1 on held-out data too, and only its AUC finds it."""
    data = ring_data(n_train=1000, n_test=1000)
    ls = Shifted(data.train, 0.9, 0.1)
    at_half = summarise([counts(ls, data, pack=1, seed=0, boundary=0.5)])
    assert at_half["gap"] == 1.0 and at_half["r_t_train"] == 1.0 and at_half["r_t_heldout"] == -1.0 and at_half["flagged_by"] == "gap"
    at_zero = summarise([counts(ls, data, pack=1, seed=0, boundary=0.0)])
    assert at_zero["gap"] == 0.0 and at_zero["r_t_heldout"] == 1.0 and at_zero["flagged_by"] == "auc"


def test_a_critic_without_a_boundary_is_read_by_its_auc_alone():
    """A Wasserstein critic is the same critic with any constant added: its figures must not move
    with it. No share is called real and there is no r_t; the AUC finds the memoriser."""
    data = ring_data(n_train=1000, n_test=1000)
    found = [summarise([counts(Shifted(data.train, 3.0 + c, 1.0 + c), data, pack=1, seed=0, boundary=None)]) for c in (0.0, -50.0)]
    assert found[0] == found[1]
    memo = found[0]
    assert memo["gap"] is None and memo["called_real_train"] is None and memo["r_t_train"] is None and memo["z"] is None
    assert memo["auc"] == 1.0 and memo["flag"] is True and memo["flagged_by"] == "auc"
    fair = summarise([counts(Smooth(), data, pack=1, seed=0, boundary=None)])
    assert fair["flag"] is False and abs(fair["auc"] - 0.5) < 0.05  # 0.05: 3.9 s.d. at n = 1000
