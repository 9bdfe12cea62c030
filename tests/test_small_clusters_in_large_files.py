"""A small cluster in a large points file: the count is chosen on a 5,000-row subset
(:func:`gancore.cluster_selection.select_clusters`), where a cluster of a few dozen rows in 100,000
has one or two rows, or none; prepare then grows the mixture on every row
(:func:`gancore.cluster_growth.grow_on_all_rows`). Held-out layouts, and ones meant to fool it
into a cluster of noise or of a heavy tail."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from gancore.cluster_growth import classification_cost, grow_on_all_rows
from gancore.cluster_selection import fit_mixture, grow_start, select_clusters
from gancore.gaussian_mixture import GaussianMixture
from gancore.seeds import generator
from helpers import mode_report, prepared_points

CENTRES = np.array([[0, 0], [10, 0], [0, 10.0]])


def _blobs(r: np.random.Generator, n: int, noise=None) -> np.ndarray:
    """Three clusters 10 apart (weights 0.5, 0.3, 0.2), unit normal unless ``noise`` says."""
    labels = r.choice(3, n, p=[0.5, 0.3, 0.2])
    return CENTRES[labels] + (r.normal(size=(n, 2)) if noise is None else noise(r, n))


def _with_rare(seed: int, n: int, rows: int, at: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The blobs, and ``rows`` of them replaced by a tight cluster (sd 0.3) at ``at``; and its mask."""
    r = np.random.default_rng(seed)
    x = _blobs(r, n)
    rare = np.zeros(n, dtype=bool)
    rare[r.choice(n, rows, replace=False)] = True
    x[rare] = np.asarray(at) + 0.3 * r.normal(size=(rows, 2))
    return x, rare


def test_a_candidate_s_weight_is_fitted_so_rows_the_background_holds_are_grown():
    """40 rows of a real cluster far from three large ones, which the background holds (at its
    weight of some 40 rows): a candidate of one point's weight gained less than the background
    lost on every row and won none, so no start held them. Its weight fitted by Newton's method,
    it wins exactly those rows."""
    x, rare = _with_rare(0, 20_000, 40, (10.0, 10.0))
    z = torch.from_numpy((x - x.mean(0)) / x.std(0))
    gmm = fit_mixture(z, 3, 0, 3, "t", "diag")
    assert bool(gmm.outliers(z)[torch.from_numpy(rare)].all())  # the case: the background holds them
    grown = grow_start(z, gmm)
    assert grown is not None and torch.equal(grown[1] == 3, torch.from_numpy(rare))


@pytest.mark.parametrize(("seed", "rows", "at"), [(1, 20, (10.0, 10.0)), (0, 60, (5.0, 0.0))])
def test_a_small_cluster_of_a_large_file_is_a_mode(tmp_path, seed, rows, at):
    """100,000 rows and a tight cluster of 20 (far out) or 60 (between two large ones): a row or
    two of them in the subset the count is chosen on, and the background held them: 3 modes, and
    a generator that dropped the small cluster was told it covered every one (3 of 3). Grown on
    every row, the small cluster is a mode of its own, and dropping it shows (3 of 4)."""
    x, rare = _with_rare(seed, 100_000, rows, at)
    data = prepared_points(tmp_path, x, seed)
    modes = data.meta["modes"]
    assert modes["count"] == 4 and modes["growth"]["added"] >= 1 and modes["outliers"]["rows"] == 0
    fresh, fresh_rare = _with_rare(seed + 100, 100_000, rows, at)
    assert mode_report(data, fresh)["modes_covered"] == 4
    assert mode_report(data, fresh[~fresh_rare])["modes_covered"] == 3


def test_stray_rows_of_a_large_file_stay_no_cluster(tmp_path):
    """Fooling it: 100 stray rows uniform over a box five times the clusters' (two or three close
    enough to pair up by chance) are the background's, no cluster grown from them."""
    r = np.random.default_rng(0)
    x = _blobs(r, 100_000)
    x[:100] = r.uniform(-25, 35, (100, 2))
    modes = prepared_points(tmp_path, x, 0).meta["modes"]
    # the training split holds some 90 of the strays, a few of them within a cluster's reach
    assert modes["count"] == 3 and modes["growth"]["added"] == 0 and 80 <= modes["outliers"]["rows"] <= 100


def test_a_component_s_classification_cost_is_twice_its_rows_entropy():
    """The arithmetic on mixtures whose posteriors are known exactly: two identical components
    split every row's posterior in halves, so each one's cost is -2 n (1/2) log(1/2) = n log 2;
    two components 100 sd apart classify every row with certainty, so the cost is 0."""
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    half, ones = torch.tensor([0.5, 0.5], dtype=torch.float64), torch.ones(2, 2, dtype=torch.float64)
    same = GaussianMixture(half, torch.zeros(2, 2, dtype=torch.float64), ones, -1000.0, 500)
    assert classification_cost(same.log_joint_with_background(x), 1) == pytest.approx(500 * math.log(2), rel=1e-12)
    separate = GaussianMixture(half, torch.tensor([[0.0, 0.0], [100.0, 100.0]], dtype=torch.float64), ones, -1000.0, 500)
    assert classification_cost(separate.log_joint_with_background(torch.cat([x[:250], x[250:] + 100])), 1) == pytest.approx(0.0, abs=1e-9)


def test_a_skewed_cluster_s_tail_on_every_row_adds_no_mode():
    """Fooling it: one gamma-shaped cluster of 30,000 rows. On every row BIC keeps falling as
    pieces are added to its tail (8 components and 2 modes became 16 and 4, BIC alone); those are
    finer density, not clusters the subset could not show: too large to hide in it, or sharing
    their rows with what is there, and none is added."""
    r = np.random.default_rng(0)
    z = torch.from_numpy(r.gamma(2, 1, (30_000, 2)))
    z = (z - z.mean(0)) / z.std(0)
    pick = torch.randperm(len(z), generator=generator(0, "points/select"))[:5000]  # prepare's subset and streams
    selection = select_clusters(z[pick], 50, 0, "points/select")
    gmm = fit_mixture(z, selection.k, 0, 5, "points/clusters", selection.covariance, selection.mixture)
    grown, record = grow_on_all_rows(z, gmm, 50, 0, pick)
    assert record["added"] == 0 and grown is gmm


def _rare_rows_own_cluster(data, rare: np.ndarray, seed: int, n: int) -> bool:
    """Whether the small cluster's training rows are all in one cluster (prepare's labels) that is
    mostly theirs: stray or tail rows within its reach may join it (a few), a large cluster may not."""
    perm = torch.randperm(n, generator=generator(seed, "points_split"))
    train = perm[round(0.1 * n) :].sort().values
    labels, own = data.train_labels, torch.from_numpy(rare)[train]
    cluster = torch.unique(labels[own])
    return len(cluster) == 1 and int(own.sum()) >= 0.8 * int((labels == cluster[0]).sum())


def test_a_small_cluster_beside_a_heavy_tailed_one_is_a_mode(tmp_path):
    """A review's case: the largest cluster Student-t (df 2), cut into overlapping pieces, and 30
    rows at (-12, -12). Judged by ICL over every component, the grown cluster was refused (BIC
    -348, ICL +583: EM rearranged the heavy cluster's pieces, and their classification with them);
    its own rows' classification cost is about 0, and it is kept."""
    r = np.random.default_rng(1)
    labels = r.choice(3, 100_000, p=[0.5, 0.3, 0.2])
    x = CENTRES[labels] + np.where(labels[:, None] == 0, r.standard_t(2, size=(100_000, 2)), r.normal(size=(100_000, 2)))
    rare = np.zeros(100_000, dtype=bool)
    rare[r.choice(100_000, 30, replace=False)] = True
    x[rare] = -12 + 0.3 * r.normal(size=(30, 2))
    data = prepared_points(tmp_path, x, 0)
    assert data.meta["modes"]["count"] == 4 and _rare_rows_own_cluster(data, rare, 0, 100_000)


def test_a_small_cluster_among_many_stray_rows_is_a_mode(tmp_path):
    """A review's case: 800 stray rows over a box five times the clusters' and 30 rows at (10, 10).
    With candidates capped at 500 least explained rows, the small cluster's (ranked 592-626) were
    never tried, a clump of 7 strays was, and growth stopped: every candidate is tried on all rows."""
    r = np.random.default_rng(0)
    x = _blobs(r, 100_000)
    x[-800:] = r.uniform(-25, 35, (800, 2))
    rare = np.zeros(100_000, dtype=bool)
    rare[:30] = True
    x[:30] = 10 + 0.3 * r.normal(size=(30, 2))
    data = prepared_points(tmp_path, x, 0)
    assert data.meta["modes"]["count"] == 4 and _rare_rows_own_cluster(data, rare, 0, 100_000)


def test_a_cluster_the_subset_drew_too_few_of_is_grown(tmp_path):
    """A review's case: 220 rows (11 expected among the 5,000 the count is chosen on), placed so
    that only 2 are. Bounded by its expected rows in the subset (fewer than 10, so 180 in all),
    its 188 training rows were refused and went to the background; the bound is on the rows the
    subset holds."""
    n, seed = 100_000, 0
    perm = torch.randperm(n, generator=generator(seed, "points_split"))
    train = perm[round(0.1 * n) :].sort().values
    in_subset = np.zeros(n, dtype=bool)
    in_subset[train[torch.randperm(len(train), generator=generator(seed, "points/select"))[:5000]].numpy()] = True
    r = np.random.default_rng(0)
    x = _blobs(r, n)
    rare = np.zeros(n, dtype=bool)
    rare[np.r_[r.choice(np.flatnonzero(in_subset), 2, replace=False), r.choice(np.flatnonzero(~in_subset), 218, replace=False)]] = True
    x[rare] = 10 + 0.3 * r.normal(size=(220, 2))
    data = prepared_points(tmp_path, x, seed)
    assert data.meta["modes"]["count"] == 4 and _rare_rows_own_cluster(data, rare, seed, n)


def test_growth_that_finds_more_clusters_than_the_part_limit_holds_says_so():
    """Two small clusters far out (20 rows each in 20,000), and room for one more component: the
    count the subset chose (3) is below mixture.max_parts, so the selection does not warn; growth
    fills the last place and finds the second cluster with no room for it, and says so. With room
    for both, both are grown; with one small cluster and room for one, it is grown: neither says
    anything."""
    x, _ = _with_rare(0, 20_000, 20, (10.0, 10.0))
    x[-20:] = np.array([-8.0, 12.0]) + 0.3 * np.random.default_rng(1).normal(size=(20, 2))
    pick = torch.randperm(len(x), generator=generator(0, "points/select"))[:5000]
    for clusters, limit, added in [(2, 4, 1), (2, 50, 2), (1, 4, 1)]:
        z = torch.from_numpy(x if clusters == 2 else x[:-20])
        z = (z - z.mean(0)) / z.std(0)
        gmm = fit_mixture(z, 3, 0, 3, "t", "diag")
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            grown, record = grow_on_all_rows(z, gmm, limit, 0, pick[pick < len(z)])
        full = clusters == 2 and limit == 4
        assert (grown.k, record["added"], record["at_limit"]) == (3 + added, added, full)
        messages = [str(w.message) for w in said]
        assert (
            messages
            == [
                "1 cluster(s) too small for the 5,000 rows the count was chosen on were added on every row up to "
                "mixture.max_parts=4 components, and the data hold at least one more: raise mixture.max_parts"
            ]
            * full
        )


@pytest.mark.parametrize("largest", [0.5, 10 / 5000])  # the selection's cap, and the growth's
def test_rows_no_candidate_reaches_are_counted_as_the_dense_sums_had_them(largest):
    """The candidates' Newton fit counts the rows they do not reach (density ratio under e^-40, whose
    terms are -1 / (1 - w) and log(1 - w) in float64) instead of summing them: the gain and the
    rows won are those of the sums over every row, to rounding."""
    from gancore.cluster_selection import _inserted

    x, _ = _with_rare(0, 20_000, 40, (10.0, 10.0))
    z = torch.from_numpy((x - x.mean(0)) / x.std(0))
    gmm = fit_mixture(z, 3, 0, 3, "t", "diag")
    joint = gmm.log_joint_with_background(z)
    total, explained = torch.logsumexp(joint, 1), joint.amax(1)
    centres = z[total.argsort()[:30]]  # the least explained: the 40 rows and tail rows
    gain, wins = _inserted(z, gmm, centres, total, explained, largest)

    tight = int(torch.log(gmm.variances).sum(1).argmin())
    shaped = GaussianMixture(torch.ones(30, dtype=z.dtype), centres, gmm.variances[tight].expand(30, 2), 0.0, len(z))
    density = shaped.log_joint(z).T
    ratio = (density - total[None]).clamp_max(600).exp()  # every row, as before the count
    unreached = ((density - total[None]) < -40).all(0).double().mean()
    assert 0.2 < float(unreached) < 0.9  # the case: rows of both kinds
    w = ((ratio > 1).double().mean(1, keepdim=True)).clamp(1 / len(z), largest)
    for _ in range(8):
        slope = (ratio - 1) / (1 - w + w * ratio)
        w = (w + slope.sum(1, keepdim=True) / slope.square().sum(1, keepdim=True)).clamp(1 / len(z), largest)
    dense = torch.log1p(w * (ratio - 1)).sum(1)
    best = int(dense.argmax())
    # the unreached rows' terms are the same bits; only the order of summation differs (20,000
    # terms of at most a few units: under 1e-12); a threshold of e^-20 was already off by 2e-12
    assert gain == pytest.approx(float(dense[best]), rel=0, abs=1e-12)
    assert torch.equal(wins, density[best] - explained > torch.log((1 - w[best, 0]) / w[best, 0]))
