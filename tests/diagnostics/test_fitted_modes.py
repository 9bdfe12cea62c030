"""A points file's fitted mixture: generated samples go to the component the mixture's own
``predict`` gives (the rule that labelled the real test points), so a faithful generator's
histogram matches the real one whatever the components' widths and weights. The rows outside
every cluster (a points file's background): test_rows_outside_clusters.py."""

from __future__ import annotations

import pytest
import torch

from constructed_inputs import mixture_draw, two_gaussians
from gancore.diagnostics.modes import reference_labels, vector_assignments, vector_modes
from gancore.gaussian_mixture import GaussianMixture


@pytest.mark.parametrize(
    ("dims", "separation", "weights"),
    [
        (10, 6.0, (0.5, 0.5)),  # separated, widths 2 and 0.5: nearest-by-Mahalanobis gave [0.73, 0.27]
        (10, 0.0, (0.5, 0.5)),  # nested: the narrow component's samples all went to the wide one
        (2, 1.0, (0.5, 0.5)),  # overlapping in 2-D
        (5, 3.0, (0.8, 0.2)),  # unequal weights
    ],
)
def test_a_faithful_generator_matches_the_real_histogram(dims, separation, weights):
    """KL of two histograms of 2 bins from 20,000 and 10,000 draws of the same law: about
    (K - 1) / 2N = 1e-4 on average; 0.01 is far above its spread and far below the 0.11-0.69 the
    nearest-by-Mahalanobis rule scored on the same draws."""
    mixture = two_gaussians(dims, separation, weights, (4.0, 0.25))
    real = mixture_draw(mixture, 10_000, 0)
    meta = {
        "means": mixture.means.tolist(),
        "variances": mixture.variances.tolist(),
        "weights": mixture.weights.tolist(),
    }
    report = vector_modes(mixture_draw(mixture, 20_000, 1), meta, real_labels=mixture.predict(real))
    assert report["modes_covered"] == 2
    assert report["mode_kl"] < 0.01
    # PacGAN's quality radius holds a faithful sample of its own component with probability 98.89 %
    # in any dimension (s.e. 0.07 % at 20,000); where components overlap, a sample that falls in
    # another's radius and is more probable there counts too, so the share can only be higher.
    assert report["high_quality_fraction"] > 0.9889 - 0.003
    # the per-sample labels the dispersion and the monitor read follow the same rule
    points = mixture_draw(mixture, 5_000, 2)
    labels = vector_assignments(points, meta)
    counted = labels >= 0
    assert torch.equal(labels[counted], mixture.predict(points)[counted])


def _tilted(correlation: float) -> GaussianMixture:
    """Two 2-D components, each stretched along the diagonal (unit variances, ``correlation``)."""
    cov = torch.tensor([[1.0, correlation], [correlation, 1.0]], dtype=torch.float64)
    covariances = torch.stack([cov, 0.25 * cov])
    means = torch.tensor([[0.0, 0.0], [1.5, -1.5]], dtype=torch.float64)
    variances = torch.diagonal(covariances, dim1=1, dim2=2).clone()
    return GaussianMixture(torch.tensor([0.6, 0.4], dtype=torch.float64), means, variances, 0.0, 0, covariances)


def _draw_full(mixture: GaussianMixture, n: int, seed: int, correlated: bool = True) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    parts = torch.multinomial(mixture.weights, n, replacement=True, generator=gen)
    noise = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    assert mixture.covariances is not None
    if correlated:
        return mixture.means[parts] + (torch.linalg.cholesky(mixture.covariances)[parts] @ noise[:, :, None])[:, :, 0]
    return mixture.means[parts] + noise * mixture.variances[parts].sqrt()


def _meta(mixture: GaussianMixture) -> dict:
    return {**mixture.as_modes(), "count": mixture.k, "estimated": True}


def test_full_covariances_a_faithful_generator_and_one_that_misses_the_correlation():
    """Held out (built to fool a diagonal protocol): samples with each component's variances right
    but none of its correlation (0.95) lie in a disc where the real ones lie along a line; read
    with the diagonals alone they scored 99 % high quality, like the faithful ones. With the full
    covariances the squared distance of such a sample is 0.51 z1^2 + 20 z2^2 (S^-1's eigenvalues
    1 / (1 +- 0.95)), under the squared quality radius 9.0 only if |z2| < 0.67: about 50 % of
    them (s.e. 0.4 % at 20,000), against 98.9 % of faithful ones."""
    mixture = _tilted(0.95)
    meta = _meta(mixture)
    real = _draw_full(mixture, 10_000, 0)
    faithful = vector_modes(_draw_full(mixture, 20_000, 1), meta, real_labels=mixture.predict(real))
    assert faithful is not None and faithful["protocol"].startswith("gaussian_2d (full covariances)")
    assert faithful["modes_covered"] == 2 and faithful["mode_kl"] < 0.01
    assert faithful["high_quality_fraction"] > 0.9889 - 0.003  # as above: 98.89 %, s.e. 0.07 %
    uncorrelated = vector_modes(_draw_full(mixture, 20_000, 1, correlated=False), meta, real_labels=mixture.predict(real))
    assert uncorrelated is not None and uncorrelated["high_quality_fraction"] < 0.5 + 0.02
    diagonal_only = {key: value for key, value in meta.items() if key != "covariances"}
    misled = vector_modes(_draw_full(mixture, 20_000, 1, correlated=False), diagonal_only, real_labels=mixture.predict(real))
    assert misled is not None and misled["high_quality_fraction"] > 0.9889 - 0.003  # what the diagonal rule saw


def test_the_posterior_classifier_reads_full_covariances():
    """The points' domain classifier is the mixture's exact posterior: against torch's own
    multivariate normal densities, in float64."""
    from gancore.classifiers.domain_networks import GaussianPosterior
    from gancore.errors import EvaluationError

    mixture = _tilted(0.9)
    x = _draw_full(mixture, 500, 3)
    probs, features = GaussianPosterior.from_meta({"modes": _meta(mixture)}).predict(x)
    dens = torch.distributions.MultivariateNormal(mixture.means, covariance_matrix=mixture.covariances)
    expected = torch.softmax(torch.log(mixture.weights)[None] + dens.log_prob(x[:, None, :]), dim=1)
    assert torch.allclose(probs.double(), expected, atol=1e-6)
    assert torch.equal(probs.argmax(1), mixture.predict(x))
    bad = _meta(mixture)
    bad["covariances"] = [[[1.0, 2.0], [2.0, 1.0]], [[1.0, 0.0], [0.0, 1.0]]]  # not positive definite
    with pytest.raises(EvaluationError, match="covariances must be symmetric and positive definite"):
        GaussianPosterior.from_meta({"modes": bad})
    with pytest.raises(ValueError, match=r"meta.json modes: covariances must be symmetric and positive definite; run `gan prepare` again"):
        vector_modes(x, bad)
    bad["covariances"] = mixture.variances.tolist()  # [K, d]: the diagonals, not matrices
    with pytest.raises(ValueError, match=r"covariances must be \[K, d, d\] = \[2, 2, 2\], got \[2, 2\]"):
        vector_modes(x, bad)


def test_a_part_s_normalised_modes_scale_the_covariances():
    from gancore.part_space import _normalised_meta

    mixture = _tilted(0.5)
    out = _normalised_meta({"modes": _meta(mixture)}, torch.tensor([1.0, -1.0], dtype=torch.float64), torch.eye(2, dtype=torch.float64) / 2)
    assert torch.allclose(torch.tensor(out["modes"]["covariances"], dtype=torch.float64), mixture.covariances / 4)
    assert torch.allclose(torch.tensor(out["modes"]["variances"], dtype=torch.float64), mixture.variances / 4)


def test_a_rare_cluster_without_test_rows_keeps_the_reverse_kl_defined():
    """A cluster of 8 rows in 20,000 is a mode whose rows may all fall in the training split: the
    reference histogram is every prepared row's, so a faithful generator's sample in it leaves the
    reverse KL defined (the test rows alone gave that mode 0 and the KL was None) and small:
    histograms of 3 bins from 20,000 and 20,000 draws differ by about (K - 1) / 2N each, 1e-4."""
    from gancore.data.prepared import PreparedData
    from gancore.diagnostics.spaces import _vector

    weights = torch.tensor([0.6, 0.3996, 0.0004], dtype=torch.float64)
    means = torch.tensor([[0.0, 0.0], [8.0, 0.0], [0.0, 30.0]], dtype=torch.float64)
    mixture = GaussianMixture(weights, means, torch.ones(3, 2, dtype=torch.float64), 0.0, 0)
    train, test = mixture_draw(mixture, 18_000, 0), mixture_draw(mixture, 2_000, 1)
    rare = torch.tensor([[0.0, 30.0]] * 8, dtype=torch.float64) + 0.1 * torch.randn(8, 2, dtype=torch.float64)
    train = torch.cat([train[mixture.predict(train) != 2], rare])
    test = test[mixture.predict(test) != 2]
    meta = {"kind": "vector", "modes": {"means": means.tolist(), "variances": [[1.0, 1.0]] * 3, "weights": weights.tolist()}}
    data = PreparedData(meta, train.float(), test.float(), mixture.predict(train), mixture.predict(test))
    assert int((data.test_labels == 2).sum()) == 0 and int((data.train_labels == 2).sum()) == 8
    samples = torch.cat([mixture_draw(mixture, 20_000, 2)[:19_990], rare[:1].expand(10, 2)]).float()
    report, _ = _vector(data, samples, data.test)
    assert report["modes_covered"] == 3
    assert report["mode_kl"] is not None and report["mode_kl"] < 0.005
    # the training rows' count, among the high-quality rows (1.1 % of a faithful draw are not)
    counted = int((reference_labels(data) >= 0).sum())
    assert 0.98 * (len(train) + len(test)) < counted and report["real_histogram"][2] == pytest.approx(8 / counted)


def test_a_part_without_test_rows_of_its_own_is_compared_with_its_training_rows():
    """A mixture part no held-out point falls in is scored on the whole test split (own_test
    false), whose labels are the other parts' modes: training and test rows together gave a
    faithful part on mode 2 a reference of [0.59, 0.40, 0.004] and a reverse KL of 5.5 (review)."""
    from gancore.data.prepared import PreparedData

    train_labels, test_labels = torch.full((8,), 2), torch.tensor([0, 1, 0, 1, 0])
    part = PreparedData({"kind": "vector", "own_test": False}, torch.zeros(8, 2), torch.zeros(5, 2), train_labels, test_labels)
    assert torch.equal(part.all_labels(), train_labels)
    whole = PreparedData({"kind": "vector", "own_test": True}, torch.zeros(8, 2), torch.zeros(5, 2), train_labels, test_labels)
    assert torch.equal(whole.all_labels(), torch.cat([train_labels, test_labels]))
