"""A fitted mixture's components grouped into clusters, one mode each (gancore.mode_merging).

BIC counts the Gaussian pieces a cluster's shape needs: before the grouping, three gamma-shaped
clusters were 10 to 14 "modes" at 2,000 rows, three uniform squares 13 to 15, one Student-t
cluster 3 to 5. The held-out cases below were built for this check, not tuned on: skewed, flat
and heavy-tailed clusters, and the cases meant to fool a grouping into joining real clusters
(two clusters 3 sigma apart, a rare cluster of 8 rows, known round modes).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gancore.classifiers.domain_networks import GaussianPosterior
from gancore.cluster_selection import select_clusters
from gancore.data.points import prepare_points
from gancore.diagnostics.modes import vector_assignments, vector_modes
from gancore.gaussian_mixture import GaussianMixture, mixture_from_modes
from gancore.mode_merging import merge_components

ROWS = 2000
CENTRES = np.array([[0, 0], [10, 0], [0, 10.0]])


def _three(r: np.random.Generator, noise, scale: float = 1.0) -> np.ndarray:
    labels = r.choice(3, ROWS, p=[0.5, 0.3, 0.2])
    return CENTRES[labels] * scale + noise(r, ROWS)


CASES = {
    "gamma": lambda r: _three(r, lambda r, n: r.gamma(2, 1, (n, 2))),  # skewed
    "squares": lambda r: _three(r, lambda r, n: r.uniform(-1, 1, (n, 2)), 0.4),  # flat, gaps of 2 between sides of 2
    "student_t": lambda r: r.standard_t(3, (ROWS, 2)),  # one heavy-tailed cluster
    "three_sigma": lambda r: np.c_[r.choice(2, ROWS) * 3.0 + r.normal(size=ROWS), r.normal(size=ROWS)],
    "two_and_a_half_sigma": lambda r: np.c_[r.choice(2, ROWS) * 2.5 + r.normal(size=ROWS), r.normal(size=ROWS)],
    "rare_8_rows": lambda r: np.r_[_three(r, lambda r, n: r.normal(size=(n, 2)))[: ROWS - 8], [-8, 8] + 0.05 * r.normal(size=(8, 2))],
    # a tight cluster on a broad one's shoulder: its density peak is 30 times the dip beside it,
    # though the dip test, which weighs mass, finds the pair unimodal
    "spike_on_a_shoulder": lambda r: np.r_[r.normal(size=(ROWS - 100, 2)), [1, 0] + 0.05 * r.normal(size=(100, 2))],
    "ring8": lambda r: 2 * np.c_[np.cos(a := np.pi / 4 * r.integers(0, 8, ROWS)), np.sin(a)] + 0.02 * r.normal(size=(ROWS, 2)),
}


def _clusters(case: str, seed: int) -> tuple[int, dict]:
    x = torch.as_tensor(CASES[case](np.random.default_rng(seed)), dtype=torch.float64)
    x = (x - x.mean(0)) / x.std(0)
    mixture = select_clusters(x, 20, seed).mixture
    assert mixture is not None
    groups, record = merge_components(mixture, x, seed)
    assert record["clusters"] == int(groups.max()) + 1 and record["components"] == mixture.k
    return record["clusters"], record


@pytest.mark.parametrize(
    ("case", "seed", "expected"),
    [
        ("gamma", 0, 3),
        ("gamma", 1, 3),
        ("student_t", 0, 1),
        # real separations are kept: the data's dip between them is significant
        ("three_sigma", 0, 2),
        ("rare_8_rows", 0, 4),  # too few rows for the test: BIC's separate cluster stands
        ("spike_on_a_shoulder", 0, 2),
        ("spike_on_a_shoulder", 1, 2),
        ("ring8", 0, 8),
        # a dip of an eighth of the peak, 1,000 rows a side: the dip test finds one mode
        ("two_and_a_half_sigma", 0, 1),
    ],
)
def test_components_are_grouped_into_the_data_s_clusters(case, seed, expected):
    clusters, record = _clusters(case, seed)
    assert clusters == expected, record


@pytest.mark.parametrize("seed", [0, 1])
def test_a_flat_cluster_s_tiles_are_joined(seed):
    """Uniform squares are tiled by 13-15 Gaussian pieces, whose fitted density has a bump on
    each; the data have none. Testing whole clusters against each other stopped at 4 on seed 1
    (an L of tiles against the rest of its square projects bimodally); their facing halves do not."""
    clusters, record = _clusters("squares", seed)
    assert record["components"] >= 10
    assert clusters == 3


def _grouped_mixture() -> GaussianMixture:
    """Two components for cluster 0 (side by side, overlapping) and one far away for cluster 1."""
    means = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]], dtype=torch.float64)
    variances = torch.ones(3, 2, dtype=torch.float64)
    weights = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    return GaussianMixture(weights, means, variances, 0.0, 0, groups=torch.tensor([0, 0, 1]))


def test_groups_travel_through_meta_and_bad_ones_are_refused():
    mixture = _grouped_mixture()
    modes = mixture.as_modes()
    assert modes["groups"] == [0, 0, 1]
    back = mixture_from_modes(modes)
    assert back is not None and back.clusters == 2 and torch.equal(back.groups, torch.tensor([0, 0, 1]))
    for bad in ([0, 2, 2], [0, 1], [1, 1, 1]):
        with pytest.raises(ValueError, match="groups must be"):
            mixture_from_modes({**modes, "groups": bad})


def test_the_mode_report_and_the_posterior_count_clusters_not_components():
    mixture = _grouped_mixture()
    modes = mixture.as_modes()
    gen = torch.Generator().manual_seed(0)
    near = torch.randn(4000, 2, generator=gen, dtype=torch.float64)  # all in cluster 0, spread over both pieces
    report = vector_modes(near, modes)
    assert report["modes_total"] == 2 and report["modes_covered"] == 1
    assert report["generated_counts"][1] == 0
    labels = vector_assignments(near, modes)
    assert set(labels[labels >= 0].tolist()) == {0}
    posterior = GaussianPosterior.from_meta({"modes": modes})
    assert posterior.num_classes == 2
    logits, _ = posterior.forward(torch.tensor([[0.5, 0.0], [10.0, 0.0]], dtype=torch.float64))
    probs = torch.softmax(logits, 1)
    # p(cluster 0 | x) sums both pieces' posteriors: at x = (0.5, 0) the far piece's is exp(-45)-small
    assert probs[0, 0] == pytest.approx(1.0, abs=1e-12) and probs[1, 1] == pytest.approx(1.0, abs=1e-12)


def test_a_points_file_of_skewed_clusters_prepares_its_clusters_not_their_pieces(tmp_path):
    """End to end: prepare's count, labels and the diagnosis of a faithful generator (fresh draws
    of the same law) on three gamma-shaped clusters; before the grouping, 14 modes. The grouping
    of whole clusters stops at 4 here (a cluster's two halves project bimodally on Fisher's
    direction between them); 3 at 2,000 rows (above)."""
    r = np.random.default_rng(0)
    labels = r.choice(3, 6000, p=[0.5, 0.3, 0.2])
    x = CENTRES[labels] + r.gamma(2, 1, (6000, 2))
    np.save(tmp_path / "skewed.npy", x)
    data = prepare_points(str(tmp_path / "skewed.npy"), 0, None, None, 20)
    modes = data.meta["modes"]
    count = modes["count"]
    assert count in (3, 4) and modes["merging"]["components"] >= 10
    assert sorted(torch.unique(data.train_labels).tolist()) == list(range(count))
    fresh = torch.as_tensor(CENTRES[labels] + np.random.default_rng(1).gamma(2, 1, (6000, 2)))
    units = data.meta["units"]
    report = vector_modes((fresh - torch.tensor(units["mean"])) / torch.tensor(units["std"]), modes, real_labels=data.all_labels())
    assert report["modes_covered"] == count
    # a faithful generator's reverse KL over 4 bins is of order (K - 1) / 2N = 3e-4
    assert report["mode_kl"] < 0.01
