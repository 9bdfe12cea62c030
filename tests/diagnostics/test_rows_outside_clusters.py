"""A points file's rows outside every cluster (its background, under half the data): a generator
that leaves them out is short of them, one that keeps them is not, and near duplicates among them
are measured against rounded rows. The fitted clusters themselves: test_fitted_modes.py."""

from __future__ import annotations

import math

import pytest
import torch

from constructed_inputs import mixture_draw, two_gaussians
from gancore.diagnostics.modes import reference_labels, vector_modes
from gancore.gaussian_mixture import GaussianMixture

FOUR_CORNERS = ((0, 0), (0, 20), (20, 0), (20, 20))


def _flat_beside_clusters(rng, n: int, flat: float, centres=FOUR_CORNERS):
    """``flat`` of ``n`` rows uniform over a 30 x 30 box, the rest in clusters of sd 0.3 at
    ``centres``, and the clusters' rows alone."""
    import numpy as np

    def clusters(m: int):
        return np.concatenate([rng.normal(size=(m // len(centres), 2)) * 0.3 + c for c in centres])

    return np.concatenate([rng.random((int(n * flat), 2)) * 30 - 5, clusters(n - int(n * flat))]), clusters


@pytest.mark.parametrize(("flat", "centres"), [(0.35, FOUR_CORNERS), (0.3, FOUR_CORNERS[:2])])
def test_a_generator_that_drops_the_rows_outside_every_cluster_is_short_of_them(tmp_path, flat, centres):
    """Flat rows under half the data are the background's, no mode (STRAY_SHARE_MAX). A generator
    that left them all out covered every cluster at 99 % high quality and was called healthy,
    with 20 % to 45 % of the data missing; it is short of the rows outside every cluster now,
    and a faithful generator is not. (A review's: 30 % flat rows beside two clusters of 35 %
    went untested by a rule relative to the lightest cluster.) The background comes back from
    meta.json: the training rows it takes are the ones prepare counted."""
    import numpy as np

    from gancore.data.points import prepare_points
    from gancore.diagnostics.findings import modes_missing as _modes_missing
    from gancore.diagnostics.outside import short_outside_cells
    from gancore.gaussian_mixture import mixture_from_modes

    rng = np.random.default_rng(0)
    x, clusters = _flat_beside_clusters(rng, 6_000, flat, centres)
    np.save(tmp_path / "points.npy", x)
    data = prepare_points(str(tmp_path / "points.npy"), 0, None, None, 50)
    modes = data.meta["modes"]
    outliers = modes["outliers"]
    assert modes["count"] == len(centres) and flat - 0.05 < outliers["row_share"] < flat + 0.05
    assert int(mixture_from_modes(modes).outliers(data.train).sum()) == outliers["rows"]
    # the background's box is the training rows' (no rounded column here)
    # (stored as float32: equal to its rounding, 6e-8 relative)
    corners = torch.stack([data.train.double().amin(0), data.train.double().amax(0)])
    assert torch.allclose(torch.tensor(outliers["box"], dtype=torch.float64), corners, rtol=1e-7, atol=0)

    units = data.meta["units"]

    def report(points):
        z = (torch.from_numpy(points) - torch.tensor(units["mean"])) / torch.tensor(units["std"])
        return vector_modes(z, modes, real_labels=reference_labels(data))

    faithful, dropped = report(_flat_beside_clusters(rng, 5_000, flat, centres)[0]), report(clusters(5_000))
    k = len(centres)
    assert (faithful["modes_covered"], faithful["modes_short"], _modes_missing(faithful)) == (k, 0, False)
    # 5,000 faithful samples against the training rows' share (about 5,000 rows): the difference's
    # sd is sqrt(2 p (1 - p) / 5,000) = 0.0095 at p = 0.35, and 0.03 is 3.2 of it
    assert faithful["outside_share"] == pytest.approx(outliers["row_share"], abs=0.03)
    # short of the rows outside, which are no mode: modes_short counts the clusters alone
    assert (dropped["modes_covered"], dropped["modes_short"], dropped["outside_short"], _modes_missing(dropped)) == (k, 0, True, True)
    # (the clusters' far tails: 0.2 % of their samples lie where the background is the more probable)
    assert dropped["outside_share"] < 0.01 and dropped["high_quality_fraction"] > 0.95
    # garbage far beyond the data's box in the flat rows' place is no row outside every cluster
    # (without the box, its share outside matched the training rows': healthy)
    garbage = np.concatenate([clusters(round(5_000 * (1 - flat))), np.full((round(5_000 * flat), 2), 500.0)])
    assert report(garbage)["outside_share"] < 0.01 and report(garbage)["outside_short"] is True

    # where the samples outside go: cells over the rows outside (at NDB's default 100 bins over
    # the data: 100 times their share)
    def cells(points):
        z = (torch.from_numpy(points) - torch.tensor(units["mean"])) / torch.tensor(units["std"])
        return short_outside_cells(data.train, z, mixture_from_modes(modes), 100, 0)

    for seed in range(3):  # no region of a faithful generator's is short (alpha 0.0027 in all)
        assert cells(_flat_beside_clusters(np.random.default_rng(10 + seed), 5_000, flat, centres)[0])["outside_cells_short"] == 0
    assert cells(clusters(5_000))["outside_cells_short_share"] == pytest.approx(outliers["row_share"], abs=0.03)
    # the flat rows' share, inside a central 8 x 8 square of the 30 x 30 box: the share outside
    # is the data's and every cluster covered (a review: healthy), but the regions around are empty
    squeezed = _flat_beside_clusters(rng, 5_000, flat, centres)[0]
    squeezed[: int(5_000 * flat)] = rng.random((int(5_000 * flat), 2)) * 8 + 6
    assert report(squeezed)["modes_short"] == 0 and report(squeezed)["outside_share"] == pytest.approx(flat, abs=0.05)
    where = cells(squeezed)
    # (cells: 100 times the share outside of half the training rows, 2,700: sd 0.9 cells)
    assert abs(where["outside_cells"] - 100 * outliers["row_share"]) <= 3 and where["outside_cells_short_share"] > flat / 2
    assert _modes_missing({**report(squeezed), **where})


def test_a_parts_modes_carry_no_share_outside():
    """A mixture part holds its clusters' rows and the outliers among them: the data's share
    outside every cluster is no part's, and a part's report takes no test of it."""
    from gancore.part_space import _normalised_meta

    meta = {
        "modes": {
            "means": [[0.0, 0.0]],
            "variances": [[1.0, 1.0]],
            "outliers": {"rows": 5, "row_share": 0.3, "share": 0.3, "log_density": -2.0, "box": [[-1.0, -1.0], [1.0, 1.0]]},
        }
    }
    part = _normalised_meta(meta, torch.zeros(2, dtype=torch.float64), 2 * torch.eye(2, dtype=torch.float64))
    assert part["modes"]["outliers"] == {"rows": 5, "share": 0.3}
    assert "outside_share" not in vector_modes(torch.zeros(10, 2), part["modes"])
    assert "outside_share" in vector_modes(torch.zeros(10, 2), meta["modes"])


@pytest.mark.parametrize(("background", "short"), [(0.05, False), (0.08, False), (0.12, True), (0.4, True)])
def test_rows_outside_are_tested_as_a_mode_from_a_tenth_of_the_rows(background, short):
    """Two clusters, a rare one of 0.2 %, and a background over [-10, 10]^2; a generator of the
    clusters alone, the rare one included. Stray rows (5 %, 8 %: under STRAY_ROWS_MAX) are glitches
    it need not make, rare cluster or not (tested from the lightest cluster's weight, they were
    flagged: a review); flat rows (12 %, 40 %) are part of the law it left out. The verdict's
    text says which."""
    from gancore.diagnostics.modes import modes_gaussian
    from gancore.diagnostics.verdict_text import short_modes_text

    mixture = two_gaussians(2, 8.0, (0.5, 0.5), (0.25, 0.25))
    mixture.means = torch.cat([mixture.means, torch.tensor([[4.0, 4.0]], dtype=torch.float64)])
    mixture.variances = torch.cat([mixture.variances, torch.full((1, 2), 0.01, dtype=torch.float64)])
    mixture.weights = torch.tensor([(1 - background - 0.002) / 2] * 2 + [0.002], dtype=torch.float64)
    mixture.noise, mixture.noise_log_density = background, -2 * math.log(20.0)
    clusters = mixture_draw(mixture, 4_000, 0)
    report = modes_gaussian(clusters, mixture, real_labels=mixture.predict(mixture_draw(mixture, 4_000, 1)), outside_share=background)
    # the clusters' samples beyond the radius where the background is the more probable:
    # exp(-r^2 / 2) of a 2-D Gaussian, 0.04 % and 0.5 % here
    assert report["outside_share"] < 0.01 and report["outside_share_real"] == background
    assert report["outside_short"] is short and (report["modes_covered"], report["modes_short"], report["modes_short_labels"]) == (3, 0, [])
    text = short_modes_text(report)
    assert (text.startswith("; short of the rows outside every cluster (") and f"{background:.1%} of training rows" in text) is short
    assert "mode(s)" not in text


def test_the_reference_histogram_counts_what_a_faithful_generators_counted_samples_follow():
    """Two tight clusters, a light broad one (0.5 %), and 30 % flat rows over [-10, 10]^2. Each
    row's most probable cluster (its prepared label) is the broad one for most flat rows, far
    from the tight ones: a fifth of the labels. A faithful generator's counted samples are those
    in its quality radius, 2.5 % of them; it was short of that cluster (held out: so were
    faithful generators on 2 of 18 files of flat rows beside clusters in 2-5 D, at every
    sample size). The reference now counts the rows high quality under the same rule."""
    from gancore.data.prepared import PreparedData
    from gancore.diagnostics.modes import PACGAN_QUALITY_PROBABILITY

    flat, box = 0.3, [[-10.0, -10.0], [10.0, 10.0]]
    weights = torch.tensor([0.3475, 0.3475, 0.005], dtype=torch.float64)
    means = torch.tensor([[-6.0, -6.0], [6.0, 6.0], [0.0, 0.0]], dtype=torch.float64)
    variances = torch.tensor([[0.25, 0.25], [0.25, 0.25], [1.0, 1.0]], dtype=torch.float64)
    mixture = GaussianMixture(weights, means, variances, 0.0, 0)
    modes = {
        "means": means.tolist(),
        "variances": variances.tolist(),
        "weights": (weights / weights.sum()).tolist(),
        "outliers": {"share": flat, "row_share": flat, "log_density": -math.log(400.0), "box": box},
    }

    def draw(n: int, seed: int) -> torch.Tensor:
        uniform = torch.rand(int(n * flat), 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 20 - 10
        return torch.cat([mixture_draw(mixture, n - len(uniform), seed), uniform])

    train, test = draw(18_000, 0), draw(2_000, 1)
    data = PreparedData({"kind": "vector", "modes": modes}, train.float(), test.float(), mixture.predict(train), mixture.predict(test))
    labels = data.all_labels()
    assert labels is not None and 0.15 < float((labels == 2).double().mean()) < 0.3
    samples = draw(5_000, 2)
    before, now = vector_modes(samples, modes, real_labels=labels), vector_modes(samples, modes, real_labels=reference_labels(data))
    assert before["modes_short_labels"] == ["2"]
    assert now["modes_short"] == 0 and now["mode_kl"] < 0.01
    # the broad cluster's share among the counted: 98.89 % of its own rows, and the flat rows in
    # its radius (3: pi 9 of the box's 400), over every cluster's (the tight ones' radius: 1.5)
    own, radius = PACGAN_QUALITY_PROBABILITY, flat * math.pi / 400
    expected = (0.005 * own + 9 * radius) / (0.7 * own + (9 + 2 * 2.25) * radius)
    # (20,000 rows, about 720 counted there: sd 4 % of the share)
    assert now["real_histogram"][2] == pytest.approx(expected, rel=0.12)


def test_the_regions_outside_are_measured_above_sixteen_columns():
    """K-means works in float32 above 16 columns, and the cells' centres met float64 rows: the
    diagnosis raised on a 20-column file with 30 % flat rows (a review). Two clusters beside a
    background over [-10, 10]^20: a faithful generator is short of no region; one of the
    clusters alone is short of every one, and its few samples outside are no test."""
    from gancore.diagnostics.outside import outside_duplicates, short_outside_cells

    dims, flat = 20, 0.3
    means = torch.zeros(2, dims, dtype=torch.float64)
    means[1, 0] = 10.0
    mixture = GaussianMixture(
        torch.tensor([0.35, 0.35], dtype=torch.float64), means, torch.full((2, dims), 0.25, dtype=torch.float64), 0.0, 0
    )
    mixture.noise, mixture.noise_log_density = flat, -dims * math.log(20.0)
    mixture.noise_box = torch.tensor([[-10.0] * dims, [10.0] * dims], dtype=torch.float64)

    def draw(n: int, seed: int, share: float = flat) -> torch.Tensor:
        uniform = torch.rand(int(n * share), dims, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 20 - 10
        return torch.cat([mixture_draw(mixture, n - len(uniform), seed), uniform]).float()

    train = draw(6_000, 0)
    faithful = short_outside_cells(train, draw(3_000, 1), mixture, 100, 0)
    assert faithful is not None and faithful["outside_cells"] == pytest.approx(30, abs=3) and faithful["outside_cells_short"] == 0
    clusters = short_outside_cells(train, draw(3_000, 2, 0.0), mixture, 100, 0)
    assert clusters is not None and clusters["outside_cells_short"] == clusters["outside_cells"]
    duplicates = outside_duplicates(train, draw(3_000, 3), mixture, 0.05, 0)
    assert duplicates is not None and duplicates["outside_duplicate_rate"] < 0.15
    assert outside_duplicates(train, draw(3_000, 4, 0.0), mixture, 0.05, 0) is None


def test_near_duplicates_outside_compare_rounded_rows_with_a_continuous_generator(tmp_path):
    """Every column rounded to integers: four clusters beside 30 % flat rows. The rows tie at a
    step, and a continuous generator of the same law, the best a GAN does on them, does not: its
    distances under a step counted in full against the rows' ties at the threshold, and it had
    20-44 % near duplicates outside every cluster against 4 % (a review's file). Snapped to the
    lattice, rows and samples alike, neither it nor the rounded law itself stands out; blobs at
    100 places over the box still do."""
    import numpy as np

    from gancore.diagnostics.findings import above_chance
    from gancore.diagnostics.outside import outside_duplicates
    from gancore.gaussian_mixture import mixture_from_modes
    from helpers import prepared_points

    rng = np.random.default_rng(0)
    centres, sds = rng.uniform(-8, 8, (4, 2)), rng.uniform(0.3, 1.0, 4)

    def law(n: int, flat: np.ndarray | None = None) -> np.ndarray:
        m = rng.binomial(n, 0.3)
        i = rng.integers(4, size=n - m)
        clusters = centres[i] + rng.normal(size=(n - m, 2)) * sds[i, None]
        return np.concatenate([rng.uniform(-12, 12, (m, 2)) if flat is None else flat[:m], clusters])

    data = prepared_points(tmp_path, np.round(law(6_000)))
    mixture, units = mixture_from_modes(data.meta["modes"]), data.meta["units"]
    assert data.meta["modes"]["rounded_columns"]["steps"] == pytest.approx([1.0, 1.0]) and (mixture.noise or 0.0) >= 0.1

    def flagged(points: np.ndarray, seed: int) -> tuple[float, bool]:
        z = (torch.from_numpy(points) - torch.tensor(units["mean"])) / torch.tensor(units["std"])
        r = outside_duplicates(data.train, z, mixture, 0.05, seed)
        assert r is not None
        rate = r["outside_duplicate_rate"]
        return rate, above_chance(rate, 0.05, r["outside_duplicate_points"]) and r["outside_duplicate_z"] >= 3

    for seed in range(3):
        continuous = np.round(law(2_000)) + rng.uniform(-0.5, 0.5, (2_000, 2))
        assert not flagged(continuous, seed)[1] and not flagged(np.round(law(2_000)), seed)[1]
    places = rng.uniform(-12, 12, (100, 2))
    blobs = law(2_000, places[np.arange(2_000) % 100] + rng.normal(size=(2_000, 2)) * 0.1)
    # (snapped, a blob is a few lattice points repeated: 85 % here; spread over the rounding
    # interval instead, it filled one step as the rows do, 20 %)
    rate, flag = flagged(blobs, 0)
    assert flag and rate > 0.5
