"""How many clusters the data hold (:func:`gancore.cluster_selection.select_clusters`), on the benchmarks
and on held-out layouts the criterion was not chosen on, including ones built to fool it."""

from __future__ import annotations

import math

import pytest
import torch

from gancore.cluster_selection import fit_mixture, select_clusters
from gancore.clustering import kmeans, kmeans_best, nearest
from gancore.data.toy import prepare_toy
from gancore.gmm_fit import fit_gmm


def _blobs(centres, sds, weights, n, seed):
    g = torch.Generator().manual_seed(seed)
    centres, sds = torch.as_tensor(centres, dtype=torch.float64), torch.as_tensor(sds, dtype=torch.float64)
    labels = torch.multinomial(torch.as_tensor(weights, dtype=torch.float64), n, replacement=True, generator=g)
    return centres[labels] + sds[labels] * torch.randn(n, centres.shape[1], generator=g, dtype=torch.float64), labels


@pytest.mark.parametrize("name, count", [("ring8", 8), ("grid25", 25)])
def test_the_benchmarks_modes_are_found_over_seeds(name, count):
    """Round clusters: a full covariance's extra parameter per cluster buys nothing, so BIC keeps
    the diagonal model (both tried), and the benchmarks' modes are measured as they always were."""
    for seed in range(3):
        x = prepare_toy(name, seed, 2500, 100).train
        sel = select_clusters(x, 50, seed)
        assert (sel.k, sel.covariance) == (count, "diag") and set(sel.curves) == {"diag", "full"}


def test_unequal_weights_and_widths():
    x, _ = _blobs(
        [[0, 0], [5, 0], [0, 5], [5, 5], [10, 2], [2, 10]],
        [[1.0], [0.3], [0.5], [0.1], [0.8], [0.2]],
        [0.4, 0.2, 0.15, 0.1, 0.1, 0.05],
        5000,
        1,
    )
    assert select_clusters(x, 50, 0).k == 6


def test_twelve_separated_clusters_in_ten_dimensions():
    g = torch.Generator().manual_seed(1)
    centres = 6 * torch.randn(12, 10, generator=g, dtype=torch.float64)
    x, _ = _blobs(centres, torch.ones(12, 1), torch.full((12,), 1 / 12), 5000, 2)
    assert select_clusters(x, 30, 0).k == 12


def test_one_gaussian_is_one_cluster_and_the_search_stops_early():
    x = torch.randn(5000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    sel = select_clusters(x, 50, 0)
    assert sel.k == 1
    assert sel.ks[-1] <= 1 + 5  # patience: five k past the best without improvement
    assert not sel.at_limit


def test_a_limit_too_low_is_reported():
    x = prepare_toy("ring8", 0, 5000, 100).train
    sel = select_clusters(x, 5, 0)
    assert sel.k == 5 and sel.at_limit and sel.as_dict()["at_limit"] is True


def test_bic_matches_its_definition():
    x, labels = _blobs([[0, 0], [10, 0]], [[1.0], [2.0]], [0.5, 0.5], 2000, 4)
    centres, assigned = kmeans_best(x, 2, 0, 3, "t")
    gmm = fit_gmm(x, centres, assigned)
    # Log-likelihood of the data under the fitted mixture, computed independently.
    comp = torch.distributions.Normal(gmm.means[None], gmm.variances.sqrt()[None])
    ll = torch.logsumexp(torch.log(gmm.weights)[None] + comp.log_prob(x[:, None, :]).sum(-1), dim=1).sum()
    assert gmm.log_likelihood == pytest.approx(float(ll), rel=1e-9)
    assert gmm.bic == pytest.approx(-2 * float(ll) + (1 + 2 * 2 * 2) * math.log(2000), rel=1e-12)
    assert sorted(gmm.variances[:, 0].sqrt().tolist()) == pytest.approx([1.0, 2.0], rel=0.1)
    # Most probable component = the generating one, up to the Bayes error of two Gaussians 10
    # apart with sds 1 and 2 (about 0.1 %; 0.5 % leaves room for 2,000 draws).
    agree = (gmm.predict(x) == labels).double().mean()
    assert max(float(agree), 1 - float(agree)) > 0.995


def test_kmeans_is_seeded_and_nearest_agrees():
    x = prepare_toy("ring8", 0, 4000, 100).train
    a, la = kmeans(x, 8, seed=5)
    b, lb = kmeans(x, 8, seed=5)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert torch.equal(nearest(x.double(), a), la)


def test_the_images_principal_components_follow_the_seed_not_the_process_s_random_state():
    """pca_lowrank draws a random projection from the global generator; the clustering space of
    images (mixture.partition=kmeans) must be the same for the same seed whatever ran before."""
    from gancore.data.prepared import PreparedData
    from gancore.partition import cluster_space
    from helpers import image_meta

    images = torch.randint(0, 256, (300, 1, 12, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    data = PreparedData(image_meta("image_folder", [1, 12, 12], 200, 100, {"count": None}), images[:200], images[200:])
    spaces = []
    for state in (1, 2):
        torch.manual_seed(state)
        spaces.append(cluster_space(data, seed=7))
    assert torch.equal(spaces[0][0], spaces[1][0]) and torch.equal(spaces[0][1], spaces[1][1])
    torch.manual_seed(1)
    assert not torch.equal(cluster_space(data, seed=8)[0], spaces[0][0])  # the seed still matters


def test_a_cluster_that_wins_no_example_is_dropped_and_said(monkeypatch):
    """EM can leave a component more probable nowhere than the others (here forced: component 1's
    examples given to component 0); its part would be empty, so the parts renumber and it says so."""
    from gancore import partition
    from gancore.config import validate
    from helpers import ring_data

    fit = partition.fit_mixture

    class Absorbed:
        def __init__(self, gmm):
            self.gmm = gmm

        def predict(self, x):
            labels = self.gmm.predict(x)
            return torch.where(labels == 1, 0, labels)

    monkeypatch.setattr(partition, "fit_mixture", lambda *args: Absorbed(fit(*args)))
    params = validate(
        {"device": "cpu", "data": {"name": "ring8"}, "mixture": {"enabled": True, "parts": 3}, "tracking": {"enabled": False}}
    )
    with pytest.warns(UserWarning, match="1 of the 3 clusters won no training example .*: 2 parts train"):
        train_labels, test_labels, descriptions, _ = partition.cluster_partition(ring_data(), params)
    assert sorted(set(train_labels.tolist())) == [0, 1] and set(test_labels.tolist()) <= {0, 1} and len(descriptions) == 2


def _tilted_pair(angle: float, n: int, seed: int, dims: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Two parallel clusters, long (sd 1) along one axis and thin (sd 0.05) across it, 0.6
    apart, turned by ``angle`` in the first two coordinates and standardised per column (as a
    points file is prepared)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(2, (n,), generator=g)
    sds = torch.tensor([1.0, 0.05] + [0.05] * (dims - 2), dtype=torch.float64)
    x = torch.randn(n, dims, generator=g, dtype=torch.float64) * sds
    x[:, 1] += (labels.double() - 0.5) * 0.6
    turn = torch.eye(dims, dtype=torch.float64)
    c, s = math.cos(angle), math.sin(angle)
    turn[:2, :2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    x = x @ turn.T
    return (x - x.mean(0)) / x.std(0), labels


@pytest.mark.parametrize("degrees", [0, 20, 45, 70])
def test_elongated_clusters_are_found_whatever_their_orientation(degrees):
    """Held out (built to fool a diagonal mixture): at 45 degrees the diagonal model cut the two
    clusters into 50 pieces, the limit (0 degrees: 2). The full model, started from k-means in
    whitened coordinates, sees the same two at every angle; axis-aligned, the diagonal one is
    enough and BIC keeps it (fewer parameters)."""
    x, labels = _tilted_pair(math.radians(degrees), 5000, degrees)
    sel = select_clusters(x, 50, 0)
    assert sel.k == 2 and not sel.at_limit
    assert sel.covariance == ("diag" if degrees == 0 else "full")
    gmm = fit_mixture(x, 2, 0, 3, "t", sel.covariance)
    agree = float((gmm.predict(x) == labels).double().mean())
    assert max(agree, 1 - agree) > 0.999  # the clusters are 12 thin sds apart: no honest error


def test_correlated_clusters_in_six_dimensions():
    """Three clusters, each a randomly turned ellipsoid (sds 1 to 0.1) in 6-D: full covariances,
    and three of them (the diagonal model needs many pieces per ellipsoid)."""
    g = torch.Generator().manual_seed(5)
    parts = []
    for _ in range(3):
        turn = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64)).Q
        shape = torch.logspace(0, -1, 6, dtype=torch.float64)
        parts.append(
            (torch.randn(1500, 6, generator=g, dtype=torch.float64) * shape) @ turn.T + 4 * torch.randn(6, generator=g, dtype=torch.float64)
        )
    sel = select_clusters(torch.cat(parts), 30, 0)
    assert (sel.k, sel.covariance) == (3, "full")


def test_full_covariance_bic_matches_its_definition():
    x, _ = _tilted_pair(math.radians(30), 3000, 1, dims=3)
    gmm = fit_mixture(x, 2, 0, 3, "t", "full")
    assert gmm.covariance == "full" and gmm.covariances is not None
    comp = torch.distributions.MultivariateNormal(gmm.means, covariance_matrix=gmm.covariances)
    ll = torch.logsumexp(torch.log(gmm.weights)[None] + comp.log_prob(x[:, None, :]), dim=1).sum()
    assert gmm.log_likelihood == pytest.approx(float(ll), rel=1e-9)
    # weights k - 1, means k d, symmetric covariances k d (d + 1) / 2
    assert gmm.parameters == 1 + 2 * 3 + 2 * 6
    assert gmm.bic == pytest.approx(-2 * float(ll) + 19 * math.log(3000), rel=1e-12)
    assert torch.allclose(gmm.variances, torch.diagonal(gmm.covariances, dim1=1, dim2=2))
    # the squared Mahalanobis distances agree with a direct solve
    direct = torch.stack([((x - m) @ torch.linalg.inv(c) * (x - m)).sum(1) for m, c in zip(gmm.means, gmm.covariances)], 1)
    assert torch.allclose(gmm.squared_mahalanobis(x), direct, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="covariance must be one of diag, full, got 'spherical'"):
        fit_gmm(x, gmm.means, gmm.predict(x), covariance="spherical")


def test_high_dimensional_data_try_only_the_diagonal_model():
    """Beyond FULL_COVARIANCE_DIMS a full model's d(d+1)/2 parameters per cluster are not tried."""
    from gancore.gmm_fit import FULL_COVARIANCE_DIMS

    x = torch.randn(500, FULL_COVARIANCE_DIMS + 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sel = select_clusters(x, 4, 0)
    assert set(sel.curves) == {"diag"} and sel.covariance == "diag"
    assert set(select_clusters(x[:, :1], 4, 0).curves) == {"diag"}  # one column: full is diagonal


@pytest.mark.parametrize("seed", [1, 14])
def test_a_full_covariance_on_fewer_points_than_dimensions_plus_one_is_no_candidate(seed):
    """Held out (found by review): 30 points in 3 clusters. Full covariances on components of one
    or two points sit on the variance floor, and the likelihood they buy outbid BIC's parameter
    price: k ran to the limit (20). Such fits are no candidates; 3 clusters, as before full
    covariances were tried."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 2, generator=g, dtype=torch.float64) * 3
    x = centres[torch.arange(30) % 3] + 0.5 * torch.randn(30, 2, generator=g, dtype=torch.float64)
    sel = select_clusters((x - x.mean(0)) / x.std(0), 20, 0)
    assert sel.k == 3 and not sel.at_limit
    assert None in sel.as_dict()["curves"]["full"]  # the degenerate fits are shown as no candidates


def test_identical_points_fit_one_component_with_either_model():
    """Points that are all the same, away from 0 (a standardised constant file keeps a residue of
    1e-17): the full covariance was not positive definite after rounding, and Cholesky failed."""
    for value in (0.0, 1e-17, 100.0):
        x = torch.full((200, 2), value, dtype=torch.float64)
        sel = select_clusters(x, 5, 0)
        assert sel.k == 1
        for model in ("diag", "full"):
            gmm = fit_mixture(x, 1, 0, 1, "t", model)
            assert math.isfinite(gmm.log_likelihood) and torch.allclose(gmm.means, x[:1])


def test_a_tight_spike_inside_a_broad_cluster_is_two_clusters():
    """Held out (from a review): 15 % of the points in a spike (sd 0.03) inside a broad Gaussian
    (sd 1). K-means halves the broad cluster whatever the start, so EM from it never isolated the
    spike at k = 2 and BIC chose 3 (the spike and two halves). The fit of 3 with its two halves
    merged starts EM at 2, which finds the spike."""
    g = torch.Generator().manual_seed(0)
    spike = torch.rand(5000, generator=g) < 0.15
    x = torch.randn(5000, 2, generator=g, dtype=torch.float64)
    x[spike] = 0.3 + 0.03 * torch.randn(int(spike.sum()), 2, generator=g, dtype=torch.float64)
    sel = select_clusters(x, 50, 0)
    assert sel.k == 2 and sel.mixture is not None
    assert sorted(round(w, 2) for w in sel.mixture.weights.tolist()) == pytest.approx([0.15, 0.85], abs=0.02)


def test_the_count_does_not_depend_on_the_data_s_units():
    """Every variance floor is relative to the data's spread. The split and merge starts had an
    absolute one (1e-6): benchmarks/collapse.py's tilted file (two thin clusters at 45 degrees
    beside a round one), standardised and then in units 1e4 times larger, was 2 clusters, not 3."""
    g = torch.Generator().manual_seed(2026)
    labels = torch.multinomial(torch.tensor([0.4, 0.4, 0.2]), 1500, replacement=True, generator=g)
    along = 8 * torch.randn(1500, generator=g, dtype=torch.float64)
    across = 0.4 * torch.randn(1500, generator=g, dtype=torch.float64) + torch.where(labels == 0, -2.0, 2.0).double()
    x = torch.stack([along - across, along + across], 1) / math.sqrt(2)
    round_ = labels == 2
    x[round_] = torch.tensor([20.0, -20.0], dtype=torch.float64) + torch.randn(int(round_.sum()), 2, generator=g, dtype=torch.float64)
    x = (x - x.mean(0)) / x.std(0)
    found = {scale: select_clusters(x * scale, 5, 0) for scale in (1.0, 1e-4, 1e4)}
    assert {(s.k, s.covariance) for s in found.values()} == {(3, "full")}
