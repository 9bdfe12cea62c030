"""Meehan et al.'s data-copying test searches every training point: a generator that copies its
training set is found however large the set, and an exact copy is at distance 0 in any dimension."""

from __future__ import annotations

import torch

from gancore.diagnostics.diversity import _nn_distances, data_copying


def _gaussian(n: int, dims: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dims, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_copies_of_a_large_training_set_are_found_and_fresh_samples_are_not():
    """128,000 training points, 5,000 generated ones copied from all of them: C_T far below -3 and
    every copy exact. Searched among 10,000 of them only (what the images' test did), the same
    copies read as fresh samples (C_T above the -3 cut): the case that showed the defect. A fresh
    sample of the same distribution sits at chance (|C_T| under 3: the Z scores are standard
    normal under no copying, and C_T a weighted mean of them)."""
    train, held_out = _gaussian(128_000, 2, 0), _gaussian(5_000, 2, 1)
    copies = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(2))[:5_000]]
    found = data_copying(copies, train, held_out, 0.05, seed=0)
    assert found["copy_c_t"] < -15 and found["copy_rate"] == 1.0 and found["copy_exact_share"] == 1.0
    assert found["copy_train_points"] == 128_000 and found["copy_train_share"] == 1.0
    partial = data_copying(copies, train[:10_000], held_out, 0.05, seed=0, train_total=len(train))
    assert partial["copy_c_t"] > -3 and partial["copy_train_share"] == 10_000 / 128_000
    fresh = data_copying(_gaussian(5_000, 2, 3), train, held_out, 0.05, seed=0)
    assert abs(fresh["copy_c_t"]) < 3 and fresh["copy_exact_share"] == 0.0


def test_an_exact_copy_is_at_distance_zero_in_many_dimensions():
    """Above 16 dimensions neighbours come from a matrix product, whose float32 rounding left an
    exact copy up to 1e-2 away in 784 dimensions (and 59 % of exact copies counted exact); the
    distance to the neighbour it finds is taken directly."""
    train = _gaussian(3_000, 784, 4).float()
    copies = train[:500]
    d = _nn_distances(copies, train, exclude_self=False)
    assert torch.equal(d, torch.zeros(500))
    others = _gaussian(200, 784, 5).float()
    exact = torch.cdist(others.double(), train.double(), compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
    assert torch.allclose(_nn_distances(others, train, exclude_self=False).double(), exact, rtol=1e-6)
    found = data_copying(copies, train, _gaussian(500, 784, 6).float(), 0.05, seed=0)
    assert found["copy_exact_share"] == 1.0
    # Leave-one-out (near duplicates): a point's own row is excluded, its exact duplicate is not.
    doubled = torch.cat([train[:100], train[:100]])
    assert torch.equal(_nn_distances(doubled, doubled, exclude_self=True), torch.zeros(200))


def test_the_near_duplicate_halves_do_not_follow_the_file_s_order():
    """With 2n real points the calibration and control halves were the file's first and second
    half: a file sorted by cluster (a tight one, sigma 0.1, then a wide one) set the threshold on
    the tight cluster and measured chance on the wide one (real rate 0.1 %, a faithful generator
    1.2 %, z +4.3). Shuffled into seeded halves, both sit near the 5 % quantile: within 4 standard
    deviations of a proportion at n = 2,000 (sd 0.5 %)."""
    from gancore.diagnostics.diversity import near_duplicates

    def two_clusters(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        label = torch.randint(0, 2, (n,), generator=gen)
        noise = torch.randn(n, 2, generator=gen, dtype=torch.float64)
        return torch.where(label[:, None] == 0, 0.1 * noise, 5 + noise), label

    real, label = two_clusters(4_000, 0)
    generated, _ = two_clusters(2_500, 1)
    by_cluster = real[torch.argsort(label, stable=True)]
    found = near_duplicates(generated, by_cluster, 0.05, seed=0, max_points=2_000)
    sd = (0.05 * 0.95 / 2_000) ** 0.5
    assert abs(found["real_duplicate_rate"] - 0.05) < 4 * sd and abs(found["duplicate_rate"] - 0.05) < 4 * sd
    assert abs(found["duplicate_z"]) < 3


def _rounded_blobs(n: int, seed: int, decimals: int = 1, sigma: float = 1.0) -> torch.Tensor:
    """Three 2-D Gaussians rounded to ``decimals``: about 70 % of 2,000 points have an exact twin."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]], dtype=torch.float64)
    x = centres[torch.randint(0, 3, (n,), generator=gen)] + sigma * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return torch.round(x, decimals=decimals)


def test_near_duplicates_on_data_with_exact_ties():
    """Rounded data: most real points have an exact twin, so the nearest-neighbour threshold was 0
    and nothing could be closer: a generator repeating five points scored 0 % near duplicates,
    like faithful data. The k-th neighbour (the smallest k with a positive threshold) and the tie
    weight put faithful rounded data at chance (within 4 sd of a proportion at n = 2,000) and the
    repeated points at 100 %; continuous data keep the nearest neighbour (k = 1)."""
    from gancore.diagnostics.diversity import near_duplicates
    from gancore.diagnostics.findings import above_chance

    real = _rounded_blobs(8_000, 0)
    sd = (0.05 * 0.95 / 2_000) ** 0.5
    faithful = near_duplicates(_rounded_blobs(4_000, 1), real, 0.05, seed=0, max_points=2_000)
    assert faithful["duplicate_neighbour"] > 1
    assert abs(faithful["duplicate_rate"] - 0.05) < 4 * sd and abs(faithful["real_duplicate_rate"] - 0.05) < 4 * sd
    assert not above_chance(faithful["duplicate_rate"], 0.05, 2_000)

    five = real[:5].repeat(400, 1)
    repeated = near_duplicates(five, real, 0.05, seed=0, max_points=2_000)
    assert repeated["duplicate_rate"] == 1.0
    assert above_chance(repeated["duplicate_rate"], 0.05, 2_000)

    # Collapsed inside each mode on the same grid: a quarter of the spread, still rounded.
    tight = near_duplicates(_rounded_blobs(4_000, 2, sigma=0.25), real, 0.05, seed=0, max_points=2_000)
    assert tight["duplicate_rate"] > 0.5

    continuous = near_duplicates(_rounded_blobs(4_000, 1, decimals=12), _rounded_blobs(8_000, 0, decimals=12), 0.05, 0, 2_000)
    assert continuous["duplicate_neighbour"] == 1 and continuous["duplicate_tie_weight"] == 0.0


def test_near_duplicates_in_high_dimensions_with_ties():
    """The same rule through the cdist path (above 16 dimensions): binary 20-D vectors of 3 active
    bits repeat exactly (1,140 patterns for 2,000 points); faithful ones sit at chance, a generator
    of 10 patterns does not."""
    from gancore.diagnostics.diversity import near_duplicates

    def bits(n: int, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        on = torch.rand(n, 20, generator=gen).argsort(dim=1)[:, :3]
        return torch.zeros(n, 20).scatter_(1, on, 1.0)

    real = bits(8_000, 0)
    sd = (0.05 * 0.95 / 2_000) ** 0.5
    faithful = near_duplicates(bits(4_000, 1), real, 0.05, seed=0, max_points=2_000)
    assert faithful["duplicate_neighbour"] > 1
    assert abs(faithful["duplicate_rate"] - 0.05) < 4 * sd
    ten = near_duplicates(bits(10, 2).repeat(200, 1), real, 0.05, seed=0, max_points=2_000)
    assert ten["duplicate_rate"] == 1.0


def test_copy_rate_with_held_out_points_on_training_points():
    """Zero-inflated 2-D data (10 % of points exactly at the origin): 10 % of held-out points sit on
    a training point, the copy threshold was 0, and 2,500 verbatim training points scored a copy
    rate of 0 beside C_T -15. With ties weighted, fresh draws sit at the 5 % quantile (4 sd of a
    proportion at n = 2,500) and the copies far above it."""
    from gancore.diagnostics.diversity import data_copying
    from gancore.diagnostics.findings import above_chance

    def draw(n: int, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 2, generator=gen, dtype=torch.float64)
        return torch.where(torch.rand(n, 1, generator=gen, dtype=torch.float64) < 0.1, 0.0, x)

    train, held_out = draw(20_000, 0), draw(5_000, 1)
    fresh = data_copying(draw(2_500, 2), train, held_out, 0.05, seed=0)
    assert abs(fresh["copy_rate"] - 0.05) < 4 * (0.05 * 0.95 / 2_500) ** 0.5
    copies = data_copying(train[:2_500], train, held_out, 0.05, seed=0)
    assert copies["copy_c_t"] < -3 and copies["copy_rate"] > 0.4
    assert above_chance(copies["copy_rate"], 0.05, 2_500)
