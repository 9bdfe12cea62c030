"""Points files with rounded columns (gancore.lattice): a column rounded from a smooth law is fitted
spread over its rounding intervals, where a mixture gave each lattice line a cluster of its own;
codes and flags, whose values are the data's atoms, stay clusters. Held-out layouts, and ones
meant to fool the rule into spreading codes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gancore.lattice import _truncated_draw, column_lattice, fit_binned_mixture
from helpers import mode_report, prepared_points

CENTRES = np.array([[0, 0], [10, 0], [0, 10.0]])


def _blobs(r: np.random.Generator, n: int) -> np.ndarray:
    return CENTRES[r.choice(3, n, p=[0.5, 0.3, 0.2])] + r.normal(size=(n, 2))


def test_a_column_rounded_to_whole_units_leaves_the_clusters_three(tmp_path):
    """Three unit Gaussians 10 apart, the second column rounded to whole units (18 values): a
    component per lattice line made 22 clusters, and the same law drawn without rounding covered
    13 of them (mode KL 6.8). Spread over its intervals, the column gives the 3 clusters, which
    draws with and without rounding cover; dropping a cluster shows."""
    r = np.random.default_rng(0)
    x = _blobs(r, 20_000)
    x[:, 1] = np.round(x[:, 1])
    data = prepared_points(tmp_path, x)
    modes = data.meta["modes"]
    assert modes["count"] == 3 and modes["rounded_columns"]["columns"] == ["x1"]
    assert modes["rounded_columns"]["steps"] == [pytest.approx(1.0, abs=1e-9)]  # in the file's units
    # the column's law before rounding, in the file's units: 80 % of rows at 0 and 20 % at 10, sd 1
    # (4 standard errors of 18,000 training rows: 0.012 in weight, 0.07 in mean, 0.05 in sd)
    law = sorted(modes["rounded_columns"]["laws"][0], key=lambda c: c["mean"])
    assert [c["weight"] for c in law] == pytest.approx([0.8, 0.2], abs=0.012)
    assert [c["mean"] for c in law] == pytest.approx([0, 10], abs=0.07)
    assert [c["sd"] for c in law] == pytest.approx([1, 1], abs=0.05)
    fresh = _blobs(np.random.default_rng(5), 5000)
    continuous = mode_report(data, fresh)
    assert continuous["modes_covered"] == 3 and continuous["mode_kl"] < 0.01
    rounded = fresh.copy()
    rounded[:, 1] = np.round(rounded[:, 1])
    assert mode_report(data, rounded)["modes_covered"] == 3
    assert mode_report(data, rounded[rounded[:, 0] < 5])["modes_covered"] == 2


@pytest.mark.parametrize(
    ("layout", "columns"),
    [
        ("both columns of clusters of sd 3 rounded to whole units", ["x0", "x1"]),
        ("one column rounded to halves", ["x1"]),
        ("both columns to 3 decimals", ["x0", "x1"]),
    ],
)
def test_held_out_roundings_are_spread(tmp_path, layout, columns):
    r = np.random.default_rng(1)
    x = _blobs(r, 20_000)
    if layout.startswith("both columns of clusters"):
        x = np.round(3 * x)
    elif layout.endswith("halves"):
        x[:, 1] = np.round(2 * x[:, 1]) / 2
    else:
        x = np.round(x, 3)
    modes = prepared_points(tmp_path, x, 1).meta["modes"]
    assert modes["count"] == 3 and modes["rounded_columns"]["columns"] == columns


@pytest.mark.parametrize(
    ("layout", "clusters"),
    [
        ("three integer codes (0,0), (1,0), (0,1)", 3),
        ("two clusters and a 0/1 flag", 4),
        ("one cluster and three codes 10 apart", 3),
    ],
)
def test_codes_and_flags_stay_the_data_s_atoms(tmp_path, layout, clusters):
    """Fooling it: codes and flags are lattices too. Spread over their intervals, they were slabs
    side by side, which the mixture cut into pieces (three codes: 5 and 9 clusters, a flag beside
    two clusters: 8 and 10). By their counts their categorical law beats any smooth one, and each
    value stays its own cluster."""
    r = np.random.default_rng(2)
    if layout.startswith("three integer codes"):
        x = np.array([[0, 0], [1, 0], [0, 1.0]])[r.integers(0, 3, 900)]
    elif layout.endswith("flag"):
        x = np.c_[10 * r.integers(0, 2, 20_000) + r.normal(size=20_000), r.integers(0, 2, 20_000)]
    else:
        x = np.c_[r.normal(size=20_000), 10.0 * r.integers(0, 3, 20_000)]
    modes = prepared_points(tmp_path, x, 2).meta["modes"]
    assert modes["count"] == clusters and modes["rounded_columns"]["columns"] == []


def test_a_lattice_is_whole_multiples_of_the_smallest_gap_with_repeated_values():
    g = torch.Generator().manual_seed(0)
    continuous = torch.randn(1000, generator=g, dtype=torch.float64)
    tenths = 0.37 + 0.1 * torch.randint(0, 30, (1000,), generator=g).double()  # offset, steps of 0.1 in float64
    every_value_once = torch.arange(1000, dtype=torch.float64)  # a lattice with nothing repeated: an index
    k = torch.randint(0, 30, (1000,), generator=g).double()
    stored_twice = torch.where(k % 2 == 0, k * 0.1, torch.round(k * 0.1, decimals=1))  # 0.30000000000000004 and 0.3
    steps = [
        0 if lattice is None else float(lattice[0]) for lattice in map(column_lattice, (continuous, tenths, every_value_once, stored_twice))
    ]
    assert steps[0] == 0 and float(steps[1]) == pytest.approx(0.1, rel=1e-9) and steps[2] == 0
    assert float(steps[3]) == pytest.approx(0.1, rel=1e-9)


def test_the_counts_mixture_is_the_law_before_rounding():
    """EM for grouped data on 200,000 draws of N(3.3, 0.7) rounded to whole units: the mean and sd
    of the law before rounding (standard errors 0.0016 and 0.0011; the rounded values' own sd is
    0.757, Sheppard's sqrt(0.49 + 1/12)), within 4 of them."""
    r = np.random.default_rng(0)
    points, counts = torch.unique(torch.from_numpy(np.round(r.normal(3.3, 0.7, 200_000))), return_counts=True)
    _, weights, means, sds, _ = fit_binned_mixture(points, counts.double(), 1)
    assert float(means[0]) == pytest.approx(3.3, abs=4 * 0.0016) and float(sds[0]) == pytest.approx(0.7, abs=4 * 0.0011)


@pytest.mark.parametrize("oddity", ["one row off the lattice", "a float32 file"])
def test_a_rounded_column_is_found_through_an_odd_row_or_float32(tmp_path, oddity):
    """A review's cases: one row at x1 = 0.3 among whole units turned the rule off (23 clusters);
    a float32 file's values carry 6e-8 of their size, far above a float64 tolerance (21 clusters
    for values in tenths). Both are lattices within a hundredth of a step, all but 1 % of rows."""
    r = np.random.default_rng(3)
    x = _blobs(r, 20_000)
    if oddity == "a float32 file":
        x[:, 1] = np.round(x[:, 1] * 10) / 10
        x = x.astype(np.float32)
    else:
        x[:, 1] = np.round(x[:, 1])
        x[0, 1] = 0.3
    modes = prepared_points(tmp_path, x, 3).meta["modes"]
    assert modes["count"] == 3 and modes["rounded_columns"]["columns"] == ["x1"]


@pytest.mark.parametrize("layout", ["both columns rounded to steps of 2", "clusters of sd 0.4, one column to whole units"])
def test_rounding_as_coarse_as_a_cluster_s_spread_leaves_the_clusters_three(tmp_path, layout):
    """Spread uniformly over its interval, a column rounded as coarsely as its clusters are wide
    was flat-topped slabs, which the mixture cut into pieces: 15 and 17 clusters (steps of 2), 10
    and 13 (sd 0.4) on seeds 0 and 1, and 15 and 12 on this test's files. Drawn from the law its counts were rounded from, the column
    is that law again: 3 clusters, which draws of the unrounded law cover."""
    r = np.random.default_rng(4)
    if layout.startswith("both"):
        unrounded = _blobs(r, 20_000)
        x = np.round(unrounded / 2) * 2
    else:
        unrounded = CENTRES[r.choice(3, 20_000, p=[0.5, 0.3, 0.2])] + 0.4 * r.normal(size=(20_000, 2))
        x = unrounded.copy()
        x[:, 1] = np.round(x[:, 1])
    data = prepared_points(tmp_path, x, 4)
    assert data.meta["modes"]["count"] == 3
    report = mode_report(data, unrounded[:5000])
    assert report["modes_covered"] == 3 and report["mode_kl"] < 0.01


def test_a_value_is_spread_by_the_law_before_rounding_truncated_to_its_interval():
    """200,000 draws of N(0.2, 0.4) rounded to whole units, then spread over their intervals from
    the law their counts give: every value stays in its interval, and the spread column is
    N(0.2, 0.4) again, within Kolmogorov distance 0.006 (on this fixed seed; the sampling error's
    99 % points are 0.0036 for the draws and about 0.002 for the fitted law: a review's 40 files
    reached 0.0053). Spread uniformly, it has sd 0.564, sqrt(0.4^2 + 1/12), not 0.4."""
    r = np.random.default_rng(6)
    units = torch.from_numpy(np.round(r.normal(0.2, 0.4, 200_000)))
    points, counts = torch.unique(units, return_counts=True)
    _, weights, means, sds, _ = fit_binned_mixture(points, counts.double(), 1)
    spread = _truncated_draw(units - 0.5, units + 0.5, weights, means, sds, torch.Generator().manual_seed(0))
    assert bool(((spread - units).abs() <= 0.5).all())
    assert _kolmogorov(spread, lambda z: torch.special.ndtr((z - 0.2) / 0.4)) < 0.006
    assert float(spread.std()) == pytest.approx(0.4, abs=0.004)


def _kolmogorov(draws: torch.Tensor, cdf) -> float:
    ordered = draws.sort().values
    law, ranks = cdf(ordered), torch.arange(1, len(ordered) + 1, dtype=torch.float64) / len(ordered)
    return float(torch.maximum((law - ranks).abs(), (law - ranks + 1 / len(ordered)).abs()).max())


def test_the_draw_picks_components_by_their_mass_in_the_interval_and_keeps_its_digits_in_far_tails():
    """The law 0.9 N(0, 0.4) + 0.1 N(3, 0.8) on [1.5, 2.5]: the second component holds 89 % of the
    interval's mass for a tenth of the weight, and 20,000 draws follow the mixture truncated to it
    (Kolmogorov distance under 0.015, the 99.9 % point at that size). Beyond 8.3 sd the normal
    distribution function rounds to 1 above the mean and loses its digits below it: N(0, 0.5) on
    [4.25, 4.75] (8.5 to 9.5 sd) draws have the truncated mean 4.3072, within 5 standard errors
    (0.0004), not the midpoint. An interval out of every reach (mass 0 in float64) gives its
    midpoint."""
    w, m, sd = (torch.tensor(v, dtype=torch.float64) for v in ([0.9, 0.1], [0.0, 3.0], [0.4, 0.8]))
    n = 20_000
    draws = _truncated_draw(
        torch.full((n,), 1.5, dtype=torch.float64), torch.full((n,), 2.5, dtype=torch.float64), w, m, sd, torch.Generator().manual_seed(1)
    )

    def truncated(z):
        below = (w * (torch.special.ndtr((z[:, None] - m) / sd) - torch.special.ndtr((1.5 - m) / sd))).sum(1)
        return below / (w * (torch.special.ndtr((2.5 - m) / sd) - torch.special.ndtr((1.5 - m) / sd))).sum()

    assert _kolmogorov(draws, truncated) < 0.015
    one = torch.ones(1, dtype=torch.float64)
    far = _truncated_draw(
        torch.full((n,), 4.25, dtype=torch.float64),
        torch.full((n,), 4.75, dtype=torch.float64),
        one,
        0 * one,
        0.5 * one,
        torch.Generator().manual_seed(2),
    )
    assert bool(((far >= 4.25) & (far <= 4.75)).all()) and float(far.mean()) == pytest.approx(4.3072, abs=5 * 0.0004)
    out_of_reach = _truncated_draw(torch.tensor([60.5]), torch.tensor([61.5]), one, 0 * one, 0.5 * one, torch.Generator())
    assert float(out_of_reach[0]) == 61.0


@pytest.mark.parametrize("stray", ["four typos, 99 to 310", "a code 999 on 1 % of rows"])
def test_stray_values_leave_a_rounded_column_rounded(tmp_path, stray):
    """Held out: the first file with four rows' x1 at 99, 150, 230 and 310, or 1 % of them at 999
    (a missing-value code). Every Gaussian mixture lost to the categories on the typos' counts,
    and the lines were clusters again (21 clusters at e56ec96 for four typos at 99). A uniform
    background over the column's values takes the scattered typos (mclust's noise component, for
    grouped data); the code's 200 rows are a narrow Gaussian of their own in the column's law. The column is rounded, its law the clusters' (80 %
    at 0, 20 % at 10), and the clusters are the three, with the typos' 4 rows at most a cluster of
    their own; the code's rows are two more clusters, as their x0 has the first column's two values
    (0 and 10)."""
    r = np.random.default_rng(20)
    x = _blobs(r, 20_000)
    x[:, 1] = np.round(x[:, 1])
    if stray.startswith("four"):
        x[:4, 1] = [99, 150, 230, 310]
    else:
        x[:200, 1] = 999
    modes = prepared_points(tmp_path, x, 5).meta["modes"]
    assert modes["rounded_columns"]["columns"] == ["x1"]
    law = modes["rounded_columns"]["laws"][0]
    gaussians = sorted((c for c in law if "sd" in c and c["weight"] > 0.05), key=lambda c: c["mean"])
    assert [c["mean"] for c in gaussians] == pytest.approx([0, 10], abs=0.1)
    if stray.startswith("four"):
        uniform = [c["uniform"] for c in law if "uniform" in c]  # over the training rows' values (the split may hold typos)
        assert len(uniform) == 1 and uniform[0][0] == pytest.approx(-4.5, abs=0.01) and round(uniform[0][1], 6) in (150.5, 230.5, 310.5)
        assert modes["count"] in (3, 4)
    else:
        code = [c for c in law if "sd" in c and abs(c["mean"] - 999) < 0.5]
        assert len(code) == 1 and code[0]["weight"] == pytest.approx(0.01, abs=0.003) and code[0]["sd"] < 0.5
        assert modes["count"] == 5


def test_the_counts_mixture_with_a_background_recovers_the_share_of_stray_values():
    """100,000 rows: 98 % N(5, 1) and 2 % uniform over 0..40, rounded to whole units. With the
    background the grouped EM gives its share 0.02 (standard error 0.0005; within 4 of them), the
    Gaussian's mean 5 and sd 1 (0.003 each), and the weights and the share sum to 1."""
    r = np.random.default_rng(8)
    values = np.where(r.random(100_000) < 0.98, np.round(r.normal(5, 1, 100_000)), r.integers(0, 41, 100_000))
    points, counts = torch.unique(torch.from_numpy(values.astype(float)), return_counts=True)
    total, weights, means, sds, noise = fit_binned_mixture(points, counts.double(), 1, background=True)
    assert noise == pytest.approx(0.02, abs=4 * 0.0005) and float(weights.sum()) + noise == pytest.approx(1, abs=1e-12)
    assert float(means[0]) == pytest.approx(5, abs=4 * 0.003) and float(sds[0]) == pytest.approx(1, abs=4 * 0.003)
    assert total > fit_binned_mixture(points, counts.double(), 1)[0]


def test_the_draw_takes_the_background_in_proportion_to_its_mass():
    """N(3.2, 0.3) and a background of density 0.5 on [2.5, 3.5]: the Gaussian's mass there is
    0.831 and the background's 0.5, and 20,000 draws follow that mixture truncated to the
    interval (Kolmogorov distance under 0.015, the 99.9 % point at that size)."""
    n = 20_000
    one = torch.ones(1, dtype=torch.float64)
    lower, upper = torch.full((n,), 2.5, dtype=torch.float64), torch.full((n,), 3.5, dtype=torch.float64)
    draws = _truncated_draw(lower, upper, one, 3.2 * one, 0.3 * one, torch.Generator().manual_seed(3), background=0.5)

    def truncated(z):
        gaussian = torch.special.ndtr((z - 3.2) / 0.3) - torch.special.ndtr(torch.tensor(-0.7 / 0.3, dtype=torch.float64))
        whole = torch.special.ndtr(torch.tensor(0.3 / 0.3, dtype=torch.float64)) - torch.special.ndtr(
            torch.tensor(-0.7 / 0.3, dtype=torch.float64)
        )
        return (gaussian + 0.5 * (z - 2.5)) / (whole + 0.5)

    assert _kolmogorov(draws, truncated) < 0.015


def test_a_code_beside_the_bulk_is_a_component_of_its_own(tmp_path):
    """Held out: ages N(40, 12) in whole years beside a normal column, with -1 (a missing-value
    code) on 1 % of rows, 3.4 sd below the bulk. Quantile starts put every component in the bulk,
    no mixture reached -1, the categories won, and the ages' lines were clusters: 50 clusters (the
    limit) at e56ec96. A start grown at the value the fit explains least (as the clusters'
    grow_start) makes -1 a narrow component: the column is rounded, and the clusters are the ages
    and the code's rows."""
    r = np.random.default_rng(42)
    x = np.c_[r.normal(size=20_000), np.round(r.normal(40, 12, 20_000))]
    x[:200, 1] = -1
    modes = prepared_points(tmp_path, x, 6).meta["modes"]
    assert modes["rounded_columns"]["columns"] == ["x1"] and modes["count"] == 2
    code = [c for c in modes["rounded_columns"]["laws"][0] if "sd" in c and abs(c["mean"] + 1) < 0.5]
    assert len(code) == 1 and code[0]["weight"] == pytest.approx(0.01, abs=0.003) and code[0]["sd"] < 0.5
