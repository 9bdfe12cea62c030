"""Diagnostics on constructed inputs whose answers are known analytically (no training).

Training dynamics and the `gan diagnose` stage: test_dynamics_and_stage.py.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from constructed_inputs import P_HQ, N, binomial_tol, diagnosis_2d, healthy_log, kl_bound, mixture, ring8
from gancore.clustering import kmeans
from gancore.diagnostics import figures_from
from gancore.diagnostics.coverage import expected_coverage
from gancore.diagnostics.diversity import collapse_measures
from gancore.diagnostics.findings import PAIRWISE_TINY
from gancore.diagnostics.image_modes import modes_labelled, modes_stacked
from gancore.diagnostics.modes import modes_2d
from gancore.diagnostics.ndb import false_positive_bound, ndb, two_proportion_z
from gancore.diagnostics.remedies import SEPARATE
from gancore.diagnostics.verdict import decide


def grid25() -> tuple[torch.Tensor, float]:
    ax = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
    xs, ys = torch.meshgrid(ax, ax, indexing="ij")
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], 1), 0.05


# -- 2D protocol --------------------------------------------------------------------------------
def test_perfect_ring_is_healthy(ring_data):
    centers, sigma, train, test, _ = ring_data
    gen, _ = mixture(centers, sigma, N, seed=3)
    report, figures, decision = diagnosis_2d(gen, centers, sigma, train, test, log=healthy_log())
    assert report["modes_covered"] == report["modes_total"] == 8
    assert report["high_quality_fraction"] == pytest.approx(P_HQ, abs=binomial_tol(P_HQ, N))
    # Against PacGAN's uniform reference histogram (no labels passed).
    assert 0.0 <= report["mode_kl"] <= kl_bound(8, report["n_counted"])
    assert report["n_counted"] == round(report["high_quality_fraction"] * N)
    assert sum(report["generated_counts"]) == report["n_counted"]  # histogram of high-quality points only
    assert figures["pairwise_distance_ratio"] == pytest.approx(1.0, abs=0.05)
    # Calibrated on real nearest-neighbour distances at equal n: a faithful generator sits at the
    # quantile (5 %), tight modes or not; sd of a mutual-neighbour proportion at n = 2000: ~0.007.
    assert figures["duplicate_rate"] == pytest.approx(0.05, abs=0.03) and abs(figures["duplicate_excess"]) < 0.03
    assert decision["verdict"] == "healthy", decision["explanation"]
    assert decision["remedies"] == []


def test_quality_radius_is_strict_three_sigma():
    centers, sigma = ring8()
    c0 = centers[0]
    pts = torch.stack(
        [c0 + torch.tensor([2.999 * sigma, 0.0], dtype=torch.float64), c0 + torch.tensor([0.0, 3.001 * sigma], dtype=torch.float64)]
    )
    r = modes_2d(pts, centers, sigma)
    assert r["generated_counts"][0] == 1 and r["high_quality_fraction"] == 0.5


def test_one_of_two_wide_clusters_with_its_full_spread_is_modes_missing_not_complete_collapse():
    """Two Gaussians (sigma 1) 20 apart, samples from one of them with its full spread: modes are
    missing, but the samples are not "nearly all the same" (reference.md): their pairwise
    distances are about 0.16 of the data's (1.77 against about 10.9), above PAIRWISE_TINY. It was
    called complete_collapse for covering one mode. One mode of ring8 stays complete (below)."""
    centers = torch.tensor([[-10.0, 0.0], [10.0, 0.0]], dtype=torch.float64)
    train, _ = mixture(centers, 1.0, 10_000, seed=20)
    test, test_labels = mixture(centers, 1.0, N, seed=21)
    one, _ = mixture(centers, 1.0, N, seed=22, modes=[0])
    report, figures, decision = diagnosis_2d(one, centers, 1.0, train, test, real_labels=test_labels)
    assert report["modes_covered"] == 1 and figures["pairwise_distance_ratio"] > PAIRWISE_TINY
    assert decision["verdict"] == "partial_collapse", decision["explanation"]
    both, _ = mixture(centers, 1.0, N, seed=23)
    assert diagnosis_2d(both, centers, 1.0, train, test, real_labels=test_labels)[2]["verdict"] == "healthy"


def test_ring_collapsed_to_one_mode(ring_data):
    centers, sigma, train, test, _ = ring_data
    gen, _ = mixture(centers, sigma, N, seed=4, modes=[3])
    report, figures, decision = diagnosis_2d(gen, centers, sigma, train, test)
    assert report["modes_covered"] == 1
    # One mode against uniform over 8: KL = log 8 exactly.
    assert report["mode_kl"] == pytest.approx(math.log(8), abs=1e-12)
    # Spread of one Gaussian (mean distance sigma * sqrt(pi)) over the ring's 1.257.
    assert figures["pairwise_distance_ratio"] < 0.02
    assert decision["verdict"] == "complete_collapse"
    # A single GAN: a mixture of GANs first, then packing (with its measured caveat), then more data.
    assert [r["name"] for r in decision["remedy_settings"]] == ["mixture", "pack2", "pack4", "augment"]
    assert decision["remedies"][0].startswith(SEPARATE)
    assert decision["evidence"]["modes_covered"] == 1


def test_ring_half_the_modes(ring_data):
    centers, sigma, train, test, test_labels = ring_data
    gen, _ = mixture(centers, sigma, N, seed=5, modes=[0, 2, 4, 6])
    report, figures, decision = diagnosis_2d(gen, centers, sigma, train, test, real_labels=test_labels, log=healthy_log())
    assert report["modes_covered"] == 4
    # Uniform over 4 of 8 modes against the empirical real histogram q: KL = sum_S 1/4 log(1/4 / q_i)
    # (log 2 for exact q), plus the generated side's sampling noise.
    q = np.bincount(test_labels.numpy(), minlength=8) / len(test_labels)
    target = float(np.sum(0.25 * np.log(0.25 / q[[0, 2, 4, 6]])))
    assert abs(target - math.log(2)) < 0.1
    assert report["mode_kl"] == pytest.approx(target, abs=kl_bound(4, report["n_counted"]) + 2e-3)
    assert report["real_histogram_source"].startswith("prepared test labels")
    assert decision["verdict"] == "partial_collapse"
    assert decision["evidence"]["modes_covered"] == 4
    # Half of the modes missing is also a large NDB (reported, not the deciding figure here).
    assert figures["ndb"] > false_positive_bound(100, 0.05)


def test_uniform_noise_is_low_quality_and_not_healthy(ring_data):
    centers, sigma, train, test, _ = ring_data
    g = torch.Generator().manual_seed(6)
    gen = torch.rand(N, 2, generator=g) * 3.0 - 1.5
    report, figures, decision = diagnosis_2d(gen, centers, sigma, train, test, log=healthy_log())
    # 8 discs of radius 3 sigma (disjoint, inside the box) over the box's area 9.
    p = 8 * math.pi * (3 * sigma) ** 2 / 9.0
    assert report["high_quality_fraction"] == pytest.approx(p, abs=binomial_tol(p, N))
    assert decision["verdict"] == "not_converged"
    assert decision["evidence"]["high_quality_fraction"] < 0.05


def test_grid25_analogues():
    centers, sigma = grid25()
    train, _ = mixture(centers, sigma, 5_000, seed=11)
    test, _ = mixture(centers, sigma, 2_000, seed=12)
    gen, _ = mixture(centers, sigma, N, seed=13)
    report, _, decision = diagnosis_2d(gen, centers, sigma, train, test, log=healthy_log(), bins=25)
    assert report["modes_covered"] == 25
    assert report["high_quality_fraction"] == pytest.approx(P_HQ, abs=binomial_tol(P_HQ, N))
    assert report["mode_kl"] <= kl_bound(25, report["n_counted"])
    assert decision["verdict"] == "healthy", decision["explanation"]

    few, _ = mixture(centers, sigma, N, seed=14, modes=range(0, 25, 2))  # 13 modes
    report, _, decision = diagnosis_2d(few, centers, sigma, train, test, bins=25)
    assert report["modes_covered"] == 13 and decision["verdict"] == "partial_collapse"

    one, _ = mixture(centers, sigma, N, seed=15, modes=[12])
    report, _, decision = diagnosis_2d(one, centers, sigma, train, test, bins=25)
    assert report["modes_covered"] == 1 and decision["verdict"] == "complete_collapse"

    noise = torch.rand(N, 2, generator=torch.Generator().manual_seed(16)) * 10 - 5
    report, _, decision = diagnosis_2d(noise, centers, sigma, train, test, bins=25)
    p = 25 * math.pi * (3 * sigma) ** 2 / 100.0
    assert report["high_quality_fraction"] == pytest.approx(p, abs=binomial_tol(p, N))
    assert decision["verdict"] == "not_converged"


def test_expected_coverage_matches_simulation():
    rng = np.random.default_rng(0)
    for k, n in ((8, 20), (1000, 1000)):
        p = np.full(k, 1.0 / k)
        mean, sd = expected_coverage(p, n)
        sims = np.array([np.count_nonzero(rng.multinomial(n, p)) for _ in range(4000)])
        assert mean == pytest.approx(sims.mean(), abs=4 * sims.std() / math.sqrt(len(sims)))
        assert sd == pytest.approx(sims.std(), rel=0.1)
    assert expected_coverage(np.full(8, 1 / 8), 2500)[0] == pytest.approx(8.0, abs=1e-12)


# -- complete-collapse measures -------------------------------------------------------------------
def test_collapse_measures_on_identical_points(ring_data):
    _, _, _, test, _ = ring_data
    same = torch.zeros(500, 2)
    m = collapse_measures(same, test, 0.05)
    assert m["pairwise_distance_ratio"] == 0.0
    assert m["duplicate_rate"] == 1.0
    assert m["pairwise_points"] == 500


def test_collapse_measures_in_feature_space():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(3000, 64, generator=g)
    fake = torch.randn(1500, 64, generator=g)
    m = collapse_measures(fake, real, 0.05)
    # Two samples of one Gaussian: equal mean distances within a percent, and the near-duplicate
    # rate at its chance level, the calibration quantile (sd ~0.008 at n = 1500).
    assert m["pairwise_distance_ratio"] == pytest.approx(1.0, abs=0.01)
    assert m["duplicate_rate"] == pytest.approx(0.05, abs=0.03) and m["real_duplicate_rate"] == pytest.approx(0.05, abs=0.03)
    copies = real[:10].repeat(150, 1) + 1e-3 * torch.randn(1500, 64, generator=g)
    m = collapse_measures(copies, real, 0.05)
    assert m["duplicate_rate"] == 1.0
    # Ten distinct samples, far apart: nearly all the same inside each, not one point overall.
    assert decide({**m, "ndb_significant": False})["verdict"] == "intra_mode_collapse"


# -- NDB ------------------------------------------------------------------------------------------
def test_two_proportion_z_matches_formula():
    z, p = two_proportion_z(torch.tensor([0.5, 0.0], dtype=torch.float64), 100, torch.tensor([0.4, 0.0], dtype=torch.float64), 100)
    pooled = 0.45
    expect = 0.1 / math.sqrt(pooled * (1 - pooled) * (2 / 100))
    assert float(z[0]) == pytest.approx(expect, rel=1e-12)
    assert float(p[0]) == pytest.approx(2 * stats.norm.cdf(-expect), rel=1e-10)
    assert float(p[1]) == 1.0  # both empty: not different


def test_kmeans_finds_separated_blobs(ring_data):
    centers, sigma, train, _, labels = ring_data
    c, lab = kmeans(train[:4000], 8, seed=0)
    d = torch.cdist(c.double(), centers).min(dim=1).values
    assert d.max() < 5 * sigma / math.sqrt(4000 / 8) + 1e-3
    assert len(torch.unique(lab)) == 8


def test_ndb_same_distribution_is_small(ring_data):
    centers, sigma, train, _, _ = ring_data
    gen, _ = mixture(centers, sigma, N, seed=21)
    r = ndb(train, gen, 100, 0.05, seed=0)
    assert r["ndb"] <= false_positive_bound(100, 0.05)
    assert r["ndb_significant"] is False
    assert r["ndb_k"] == r["ndb"] / 100
    # JS of two histograms of one distribution: about (K - 1)(1/n1 + 1/n2) / 8.
    assert 0 <= r["ndb_js"] < 3 * 99 * (1 / 10_000 + 1 / N) / 8


def test_ndb_missing_region_is_large(ring_data):
    centers, sigma, train, _, _ = ring_data
    gen, _ = mixture(centers, sigma, N, seed=22, modes=range(1, 8))
    r = ndb(train, gen, 100, 0.05, seed=0)
    near_missing = torch.cdist(r["centers"].double(), centers[:1]).squeeze(1) < 5 * sigma
    assert near_missing.sum() >= 5
    # Every bin of the dropped mode is empty on the generated side and significantly different.
    assert all(r["different"][i] for i in torch.nonzero(near_missing).flatten().tolist())
    assert r["ndb"] >= int(near_missing.sum()) and r["ndb_significant"] is True
    assert r["ndb_js"] > 0.03


def test_ndb_says_where_its_bins_outnumber_what_it_can_see(ring_data):
    """5,000 bins over 1,000 samples: a bin of average size that the generator misses entirely is
    not significant, so NDB finds nothing whatever the generator does; it said so nowhere."""
    from gancore.diagnostics.ndb import most_bins_seen

    centers, sigma, train, _, _ = ring_data
    n1, n2 = 4000, 300
    seen = most_bins_seen(n1, n2, 0.05)
    for k, significant in ((seen, True), (seen + 1, False)):  # the bound is exact
        one = torch.tensor([1.0 / k], dtype=torch.float64)
        assert bool(two_proportion_z(one, n1, torch.zeros_like(one), n2)[1][0] < 0.05) is significant
    # p1 = 1/K against 0, pooled SE: z^2 = n2 / (K - n1 / (n1 + n2)), so z = 1.96 (alpha 0.05,
    # two-sided) at K = 300 / 1.96^2 + 4000 / 4300 = 79.03: each bin needs about 3.84 samples.
    assert seen == 79
    gen, _ = mixture(centers, sigma, n2, seed=24, modes=range(1, 8))
    with pytest.warns(UserWarning, match=rf"NDB cannot see most bins at diagnose.ndb_bins=150: .* use at most {seen} bins"):
        blind = ndb(train[:n1], gen, 150, 0.05, seed=0)
    assert blind["ndb_bins_seen"] == seen
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        seeing = ndb(train[:n1], gen, 50, 0.05, seed=0)

    def missing_bins_found(r):  # the bins of the mode the generator left out, and how many differ
        near = torch.cdist(r["centers"].double(), centers[:1]).squeeze(1) < 5 * sigma
        return int(near.sum()), sum(r["different"][i] for i in torch.nonzero(near).flatten().tolist())

    found, of = missing_bins_found(seeing)
    assert of >= 3 and of >= 0.75 * found  # the missing mode, seen at 50 bins
    found, of = missing_bins_found(blind)
    assert found >= 10 and of <= 0.25 * found  # at 150 only in the odd bin well above average size


def test_ndb_decides_partial_collapse_only_without_known_modes(ring_data):
    centers, sigma, train, test, _ = ring_data
    gen, _ = mixture(centers, sigma, N, seed=23, modes=range(1, 8))
    nd = ndb(train, gen, 50, 0.05, seed=0)
    figures = figures_from(None, collapse_measures(gen, test, 0.05), nd)
    decision = decide(figures)
    assert decision["verdict"] == "partial_collapse"
    assert decision["evidence"]["ndb"] == nd["ndb"]


# -- stacked MNIST and labelled images -------------------------------------------------------------
def one_hot(idx, k):
    return torch.nn.functional.one_hot(torch.as_tensor(idx), k).double()


def test_stacked_all_triples_once():
    r = modes_stacked(one_hot(torch.arange(1000), 1000), confidence=0.9)
    assert r["modes_covered"] == 1000 and r["modes_total"] == 1000
    assert r["mode_kl"] == pytest.approx(0.0, abs=1e-12)
    assert r["high_quality_fraction"] == 1.0


def test_stacked_ten_triples():
    triples = torch.tensor([7, 42, 123, 256, 399, 500, 618, 777, 808, 999]).repeat(100)
    r = modes_stacked(one_hot(triples, 1000), confidence=0.9)
    assert r["modes_covered"] == 10
    # Ten equally used triples against 1/1000 each: sum 0.1 log(0.1 / 0.001) = log 100.
    assert r["mode_kl"] == pytest.approx(math.log(100), rel=1e-12)
    assert r["generated_counts"][123] == 100


def test_stacked_channel_confidence_from_outer_product():
    def channel(digit, conf):
        p = torch.full((10,), (1 - conf) / 9, dtype=torch.float64)
        p[digit] = conf
        return p

    confident = torch.einsum("i,j,k->ijk", channel(1, 0.95), channel(2, 0.99), channel(3, 0.92)).reshape(1000)
    unsure = torch.einsum("i,j,k->ijk", channel(1, 0.95), channel(2, 0.85), channel(3, 0.99)).reshape(1000)
    probs = torch.stack([confident] * 30 + [unsure] * 10)
    r = modes_stacked(probs, confidence=0.9)
    assert r["high_quality_fraction"] == pytest.approx(0.75)
    assert r["modes_covered"] == 1 and r["generated_counts"][123] == 40


def test_labelled_images():
    labels = torch.arange(10).repeat(100)
    probs = 0.95 * one_hot(labels, 10) + 0.05 / 10
    probs[labels == 9] = 0.5 * one_hot(torch.full((100,), 9), 10)[0] + 0.5 / 10
    real = torch.arange(10).repeat(50)
    r = modes_labelled(probs, real, confidence=0.9, label_names=[f"c{i}" for i in range(10)])
    assert r["modes_total"] == 10
    assert r["modes_covered"] == 9  # class 9 only has unconfident samples
    assert r["high_quality_fraction"] == pytest.approx(0.9)
    assert r["mode_kl"] == pytest.approx(0.0, abs=1e-12)
    assert r["mode_labels"][9] == "c9"
    # Against a skewed real histogram: KL(uniform || q) = sum 0.1 log(0.1 / q).
    skew = torch.cat([torch.zeros(200, dtype=torch.long), torch.arange(1, 10).repeat(20)])
    q = np.bincount(skew.numpy(), minlength=10) / len(skew)
    r = modes_labelled(probs, skew, confidence=0.9)
    assert r["mode_kl"] == pytest.approx(float(np.sum(0.1 * np.log(0.1 / q))), rel=1e-10)
