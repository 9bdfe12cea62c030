"""FID and KID: parity with torch-fidelity, analytic values, accuracy, symmetry, validation."""

import mpmath
import numpy as np
import pytest
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from gancore.metrics import feature_statistics, fid, frechet_distance, kid


def gaussian(n, d, seed, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * scale + shift


def whitened(n, d, seed):
    """Samples whose sample mean is exactly 0 and sample covariance exactly I (up to rounding)."""
    x = gaussian(n, d, seed)
    x = x - x.mean(0)
    cov = x.T @ x / (n - 1)
    return x @ torch.linalg.inv(torch.linalg.cholesky(cov)).T


def torch_fidelity_fid(a, b):
    return fid_statistics_to_metric(fid_features_to_statistics(a), fid_features_to_statistics(b), False)["frechet_inception_distance"]


@pytest.mark.parametrize("n1, n2, d", [(600, 500, 64), (300, 300, 16), (40, 50, 64)])
def test_fid_parity_with_torch_fidelity(n1, n2, d):
    # (40, 50, 64) has rank-deficient covariances, where torch-fidelity's eigvals of the
    # non-symmetric S1 S2 is itself only good to ~1e-8 relative (see the accuracy test below).
    a = gaussian(n1, d, 0, scale=torch.linspace(0.2, 3.0, d, dtype=torch.float64))
    b = gaussian(n2, d, 1, shift=0.3)
    ref = torch_fidelity_fid(a, b)
    assert fid(a, b) == pytest.approx(ref, rel=1e-7 if n1 < d else 1e-10)


def test_fid_rank_deficient_matches_50_digit_reference():
    # tr((S1 S2)^(1/2)) = nuclear norm of A^T B / sqrt((n1 - 1)(n2 - 1)) with A, B the centred
    # features: computed here from the features in 50-digit arithmetic, independently of any
    # covariance eigendecomposition.
    n1, n2, d = 12, 14, 20
    a, b = gaussian(n1, d, 5, scale=2.0), gaussian(n2, d, 6, shift=0.5)
    mpmath.mp.dps = 50
    ca, cb = mp_centred(a), mp_centred(b)
    scale = mpmath.sqrt((n1 - 1) * (n2 - 1))
    tr_covmean = mpmath.fsum(mpmath.svd_r(ca * cb.T, compute_uv=False)) / scale
    mean_a = [mpmath.fsum(mpmath.mpf(float(v)) for v in a[:, j]) / n1 for j in range(d)]
    mean_b = [mpmath.fsum(mpmath.mpf(float(v)) for v in b[:, j]) / n2 for j in range(d)]
    tr_a = mpmath.fsum(ca[i, j] ** 2 for i in range(n1) for j in range(d)) / (n1 - 1)
    tr_b = mpmath.fsum(cb[i, j] ** 2 for i in range(n2) for j in range(d)) / (n2 - 1)
    exact = mpmath.fsum((x - y) ** 2 for x, y in zip(mean_a, mean_b)) + tr_a + tr_b - 2 * tr_covmean
    # The covariances themselves carry float64 rounding, which the square root amplifies to
    # ~sqrt(eps) on their null spaces: 1e-7 is the honest bound (measured ~1e-9).
    assert fid(a, b) == pytest.approx(float(exact), rel=1e-7)


def mp_centred(x):
    m = mpmath.matrix(x.tolist())
    for j in range(m.cols):
        mu = mpmath.fsum(m[i, j] for i in range(m.rows)) / m.rows
        for i in range(m.rows):
            m[i, j] -= mu
    return m


def test_ill_conditioned_covariances_match_40_digit_reference():
    # Feature scales spanning 1e6 (covariance condition number 1e12). An eigh-based square root
    # of S1 loses ~1e-6 relative here; the Cholesky route keeps ~1e-15. Only the trace term is
    # compared, since it is where the methods differ.
    from gancore.metrics.fid import _trace_sqrt_product

    rng = np.random.default_rng(0)
    scales = np.logspace(0, 6, 12)
    a, b = rng.standard_normal((40, 12)) * scales, rng.standard_normal((45, 12)) * scales[::-1]
    mpmath.mp.dps = 40
    exact = mpmath.fsum(mpmath.svd_r(mp_centred(a) * mp_centred(b).T, compute_uv=False)) / mpmath.sqrt(39 * 44)
    s1, s2 = (torch.from_numpy(np.cov(x, rowvar=False)) for x in (a, b))
    assert float(_trace_sqrt_product(s1, s2)) == pytest.approx(float(exact), rel=1e-12)
    assert float(_trace_sqrt_product(s2, s1)) == pytest.approx(float(exact), rel=1e-12)


def test_constant_features_drop_out_exactly():
    # A dead unit (constant feature) makes both covariances singular; it contributes only its
    # squared mean difference.
    a, b = gaussian(300, 8, 40), gaussian(300, 8, 41, scale=1.3)
    base = fid(a, b)
    a_dead = torch.cat([a, torch.zeros(300, 1, dtype=torch.float64)], 1)
    b_dead = torch.cat([b, torch.full((300, 1), 0.5, dtype=torch.float64)], 1)
    assert fid(a_dead, b_dead) == pytest.approx(base + 0.25, rel=1e-12)
    assert frechet_distance(*feature_statistics(a_dead), *feature_statistics(b_dead)) == pytest.approx(base + 0.25, rel=1e-12)


def test_identical_feature_sets_give_zero():
    a = gaussian(400, 32, 2)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-9)
    assert fid(a, a.flip(0)) == pytest.approx(0.0, abs=1e-9)


def test_symmetry():
    a, b = gaussian(300, 24, 3), gaussian(250, 24, 4, scale=1.5, shift=-0.2)
    assert fid(a, b) == pytest.approx(fid(b, a), rel=1e-12)


def test_analytic_gaussians_exact_moments():
    # With sample moments made exact, FID = ||mu||^2 + sum (sqrt(a_i) - sqrt(b_i))^2 for diagonal
    # covariances diag(a), diag(b): an analytic check of every term, to float64 rounding.
    n, d = 500, 10
    mu = torch.linspace(-1, 2, d, dtype=torch.float64)
    var_a = torch.linspace(0.5, 4.0, d, dtype=torch.float64)
    var_b = torch.linspace(3.0, 0.1, d, dtype=torch.float64)
    x = whitened(n, d, 7) * var_a.sqrt()
    y = whitened(n, d, 8) * var_b.sqrt() + mu
    expected = float(mu.dot(mu) + ((var_a.sqrt() - var_b.sqrt()) ** 2).sum())
    assert fid(x, y) == pytest.approx(expected, rel=1e-11)
    assert fid(whitened(n, d, 9), whitened(n, d, 10) + mu) == pytest.approx(float(mu.dot(mu)), rel=1e-11)


def test_shifted_standard_normals_give_squared_shift():
    # Fresh samples of N(0, I) and N(mu, I): FID estimates ||mu||^2 = 4. Error budget with n per
    # set: the mean term's cross term 2 mu.(m1 - m2) has sd 2 |mu| sqrt(2/n) = 0.028, its bias
    # 2d/n = 8e-4, and the covariance term's bias ~ d^2/(2n) = 1.6e-3: |error| < 0.15 is > 5 sd.
    n, d = 20000, 8
    mu = torch.full((d,), 2.0 / d**0.5, dtype=torch.float64)
    value = fid(gaussian(n, d, 11), gaussian(n, d, 12) + mu)
    assert value == pytest.approx(4.0, abs=0.15)


def test_feature_statistics_match_numpy():
    a = gaussian(5000, 16, 13, scale=3.0, shift=1e3).to(torch.float32)
    mu, sigma = feature_statistics(a)
    a64 = a.double().numpy()
    assert np.allclose(mu.numpy(), a64.mean(0), rtol=1e-13, atol=0)
    assert np.allclose(sigma.numpy(), np.cov(a64, rowvar=False), rtol=1e-10, atol=1e-10)
    # Statistics computed once can be reused: same value as from features.
    b = gaussian(300, 16, 14, shift=1e3)
    assert frechet_distance(mu, sigma, *feature_statistics(b)) == pytest.approx(fid(a, b), rel=1e-13)


@pytest.mark.parametrize("n1, n2, d, rel", [(300, 200, 16, 1e-12), (30, 200, 40, 1e-7), (20, 25, 40, 1e-7)])
def test_features_and_statistics_routes_agree(n1, n2, d, rel):
    # fid() factors thin (N <= d) sets from the features; frechet_distance() only sees the
    # covariances, whose null spaces cost it ~sqrt(eps) (see the module doc).
    a, b = gaussian(n1, d, 30, scale=2.0), gaussian(n2, d, 31, shift=0.2)
    from_stats = frechet_distance(*feature_statistics(a), *feature_statistics(b))
    assert fid(a, b) == pytest.approx(from_stats, rel=rel)
    assert fid(b, a) == pytest.approx(from_stats, rel=rel)


def test_fid_validation():
    a = gaussian(10, 4, 0)
    with pytest.raises(ValueError, match="same feature dimension, got 4 and 5"):
        fid(a, gaussian(10, 5, 1))
    with pytest.raises(ValueError, match=r"feat_fake needs at least 2 rows \(samples\), got 1"):
        fid(a, a[:1])
    with pytest.raises(ValueError, match="feat_real contains NaN"):
        fid(torch.full((3, 4), float("nan")), a)
    with pytest.raises(ValueError, match=r"feat_real must be a \[N, d\] feature matrix"):
        fid(a[0], a)
    with pytest.raises(ValueError, match="sigma2 is not positive semi-definite"):
        frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(2), -torch.eye(2))
    indefinite = torch.tensor([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1, positive diagonal
    with pytest.raises(ValueError, match="sigma1 is not positive semi-definite"):
        frechet_distance(torch.zeros(2), indefinite, torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match="sigma2 is not positive semi-definite"):
        frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(2), indefinite)
    with pytest.raises(ValueError, match="sigma1 is not symmetric"):
        frechet_distance(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]), torch.zeros(2), torch.eye(2))
    with pytest.raises(ValueError, match=r"sigma1 must be a \[2, 2\] covariance"):
        frechet_distance(torch.zeros(2), torch.eye(3), torch.zeros(2), torch.eye(2))


def test_fid_of_sets_on_orthogonal_planes_is_exact():
    """Two rank-2 sets on orthogonal planes of R^4 (N > d, both covariances singular): S1 S2 = 0,
    so FID = tr S1 + tr S2 + |mu1 - mu2|^2 exactly. The product L^T S2 L is then zero up to
    rounding, and its rounding (about -3e-16) was judged against its own largest eigenvalue, which
    is rounding too: 18 of 20 rotations raised "not positive semi-definite". A true covariance's
    rounding is bounded by |L|^2 |S2|. Tolerance: the square roots of eigenvalues that are rounding
    (about 1e-16) add up to about 1e-8, so 1e-6 relative (sqrt(eps) and a margin)."""
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        rotation = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=torch.float64))[0]
        a = torch.cat([torch.randn(500, 2, generator=gen, dtype=torch.float64), torch.zeros(500, 2, dtype=torch.float64)], 1) @ rotation
        b = torch.cat([torch.zeros(500, 2, dtype=torch.float64), torch.randn(500, 2, generator=gen, dtype=torch.float64)], 1) @ rotation
        expected = float(torch.trace(torch.cov(a.T)) + torch.trace(torch.cov(b.T)) + (a.mean(0) - b.mean(0)).square().sum())
        assert fid(a, b) == pytest.approx(expected, rel=1e-6)


def torch_fidelity_kid(a, b, **kw):
    out = kid_features_to_metric(a, b, verbose=False, **kw)
    return out["kernel_inception_distance_mean"], out["kernel_inception_distance_std"]


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (dict(subsets=20, subset_size=100, seed=0), dict(kid_subsets=20, kid_subset_size=100, rng_seed=0)),
        (
            dict(subsets=7, subset_size=150, degree=2, gamma=0.05, coef0=0.5, seed=2020),
            dict(
                kid_subsets=7,
                kid_subset_size=150,
                kid_kernel_poly_degree=2,
                kid_kernel_poly_gamma=0.05,
                kid_kernel_poly_coef0=0.5,
                rng_seed=2020,
            ),
        ),
    ],
)
def test_kid_parity_with_torch_fidelity(ours, theirs):
    # Same RandomState call sequence, so the same subsets; both sides compute in float64 here.
    a, b = gaussian(400, 32, 20), gaussian(300, 32, 21, scale=1.2, shift=0.1)
    ref_mean, ref_std = torch_fidelity_kid(a, b, **theirs)
    mean, std = kid(a, b, **ours)
    assert mean == pytest.approx(ref_mean, rel=1e-10)
    assert std == pytest.approx(ref_std, rel=1e-9)


def test_kid_same_distribution_is_near_zero_and_different_is_positive():
    a, b = gaussian(600, 16, 22), gaussian(600, 16, 23)
    mean, std = kid(a, b, subsets=20, subset_size=200)
    # Unbiased estimator: centred on 0 for equal distributions; can be slightly negative.
    assert abs(mean) < 4 * std + 1e-3
    shifted, _ = kid(a, b + 1.0, subsets=20, subset_size=200)
    assert shifted > 10 * max(abs(mean), std)


def test_kid_validation():
    a = gaussian(50, 4, 0)
    with pytest.raises(ValueError, match=r"subset_size=100 exceeds the 50 samples in feat_real; pass subset_size <= 50"):
        kid(a, gaussian(200, 4, 1), subset_size=100)
    with pytest.raises(ValueError, match="subset_size must be an integer >= 2"):
        kid(a, a, subset_size=1)
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        kid(a, a, subset_size=10, gamma=-1.0)
    with pytest.raises(ValueError, match="seed must be an integer"):
        kid(a, a, subset_size=10, seed=None)
