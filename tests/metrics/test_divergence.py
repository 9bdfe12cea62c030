"""KL / JS divergences: exact values, references (scipy, 50-digit mpmath), edge cases, validation."""

import math

import mpmath
import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy

from gancore.metrics import js_distance, js_divergence, kl_divergence, label_histogram, normalize_histogram


def dirichlet(k, seed, alpha=1.0):
    return np.random.default_rng(seed).dirichlet(np.full(k, alpha))


def test_kl_closed_form():
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert kl_divergence([0.5, 0.5], [0.9, 0.1]) == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize("seed", range(5))
def test_kl_matches_scipy_entropy(seed):
    # scipy.stats.entropy(p, q) is sum p log(p/q) in nats; agreement to ~1e-15 relative is rounding.
    p, q = dirichlet(50, seed), dirichlet(50, seed + 100)
    assert kl_divergence(p, q) == pytest.approx(entropy(p, q), rel=1e-12)
    assert kl_divergence(torch.from_numpy(p), torch.from_numpy(q)) == pytest.approx(entropy(p, q), rel=1e-12)


def test_kl_of_nearly_equal_distributions_is_accurate():
    # q = p (1 + delta): KL ~ delta^2 / 2 ~ 1e-19. The textbook sum p log(p/q) cancels O(delta)
    # terms of both signs and picks up sum(q) - sum(p) (~1e-16 from rounding) at first order,
    # so it returns noise of order 1e-16; the non-negative-term form keeps ~full precision.
    p = dirichlet(20, 7)
    q = p * (1 + 1e-9 * np.cos(np.arange(20)))
    mpmath.mp.dps = 60
    mp_p, mp_q = [mpmath.mpf(a) for a in p], [mpmath.mpf(b) for b in q]
    s_p, s_q = mpmath.fsum(mp_p), mpmath.fsum(mp_q)
    # The divergence of the exactly normalised float inputs.
    exact = mpmath.fsum((a / s_p) * mpmath.log((a / s_p) / (b / s_q)) for a, b in zip(mp_p, mp_q))
    assert 1e-20 < float(exact) < 1e-17
    # q - p is exact here (Sterbenz) and everything after it is relatively accurate: the float64
    # evaluation is good to ~1e-15 relative; 1e-9 leaves margin for platform libm differences.
    assert kl_divergence(p, q) == pytest.approx(float(exact), rel=1e-9)
    naive = float(np.sum(p * np.log(p / q)))
    assert abs(naive - float(exact)) > 10 * float(exact)  # why the careful form is needed


@pytest.mark.parametrize("tiny", [1e-6, 1e-12, 1e-20, 1e-300, 4.4e-323])
def test_kl_where_q_is_far_below_p_is_accurate(tiny):
    """q/S_q far below p/S_p: w = q/p - 1 rounds towards -1, and 1 + w keeps only the digits
    cancellation leaves (1e-12 was off by 8e-7 relative; below 1e-16 w was -1 exactly, and a
    finite KL came out inf; a denormal q made an Inception Score inf). Against 60-digit mpmath
    on the same float inputs; 1e-12 covers log's rounding of the large logs (up to 744)."""
    p, q = np.array([0.5, 0.5]), np.array([1.0 - tiny, tiny])
    mpmath.mp.dps = 60
    mp_p, mp_q = [mpmath.mpf(a) for a in p], [mpmath.mpf(b) for b in q]
    s_p, s_q = mpmath.fsum(mp_p), mpmath.fsum(mp_q)
    exact = mpmath.fsum((a / s_p) * mpmath.log((a / s_p) / (b / s_q)) for a, b in zip(mp_p, mp_q))
    assert kl_divergence(p, q) == pytest.approx(float(exact), rel=1e-12)


def test_kl_zero_iff_equal_and_nonnegative():
    p = dirichlet(30, 1)
    assert kl_divergence(p, p) == 0.0
    for seed in range(10):
        assert kl_divergence(dirichlet(30, seed, 0.3), dirichlet(30, seed + 50, 0.3)) > 0


def test_kl_zero_log_zero_and_infinity():
    # Bins where p = 0 contribute nothing (0 log 0 = 0)...
    assert kl_divergence([0.0, 0.5, 0.5], [0.2, 0.4, 0.4]) == pytest.approx(math.log(0.5 / 0.4), rel=1e-14)
    # ...but mass of p where q has none makes KL infinite, which is its true value.
    assert kl_divergence([0.5, 0.5, 0.0], [1.0, 0.0, 0.0]) == math.inf
    # Reverse direction of the same pair is finite.
    assert kl_divergence([1.0, 0.0, 0.0], [0.5, 0.5, 0.0]) == pytest.approx(math.log(2), rel=1e-14)


def test_kl_smoothing_adds_eps_to_both_and_renormalises():
    p, q, eps = np.array([0.5, 0.5, 0.0]), np.array([1.0, 0.0, 0.0]), 1e-3
    ps, qs = (p + eps) / (1 + 3 * eps), (q + eps) / (1 + 3 * eps)
    value = kl_divergence(p, q, smoothing=eps)
    assert math.isfinite(value)
    assert value == pytest.approx(entropy(ps, qs), rel=1e-12)
    assert kl_divergence(p, p, smoothing=eps) == 0.0


def test_reverse_kl_against_uniform_counts_modes():
    # PacGAN-style reverse KL of a mode histogram against uniform: covering half of 1000 equally
    # likely modes evenly gives log 2; all modes evenly gives 0.
    uniform = np.full(1000, 1e-3)
    half = label_histogram(np.arange(500).repeat(3), 1000)
    assert kl_divergence(half, uniform) == pytest.approx(math.log(2), rel=1e-13)
    assert kl_divergence(label_histogram(np.arange(1000), 1000), uniform) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("seed", range(5))
def test_js_matches_scipy_and_is_symmetric(seed):
    p, q = dirichlet(40, seed, 0.5), dirichlet(40, seed + 9, 0.5)
    js = js_divergence(p, q)
    # scipy returns the JS distance (square root), natural log by default.
    assert js == pytest.approx(jensenshannon(p, q) ** 2, rel=1e-10)
    assert js_distance(p, q) == pytest.approx(jensenshannon(p, q), rel=1e-10)
    assert js == js_divergence(q, p)
    assert 0 < js < math.log(2)


def test_js_bounds():
    assert js_divergence([1.0, 0.0], [0.0, 1.0]) == pytest.approx(math.log(2), rel=1e-15)
    assert js_divergence([0.2, 0.8, 0.0], [0.0, 0.0, 1.0]) == pytest.approx(math.log(2), rel=1e-15)
    p = dirichlet(10, 3)
    assert js_divergence(p, p) == 0.0
    assert js_distance([1.0, 0.0], [0.0, 1.0]) == pytest.approx(math.sqrt(math.log(2)), rel=1e-15)


def test_js_distance_triangle_inequality():
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b, c = (rng.dirichlet(np.full(6, 0.4)) for _ in range(3))
        assert js_distance(a, c) <= js_distance(a, b) + js_distance(b, c) + 1e-12


def test_normalize_histogram():
    h = normalize_histogram([2, 6, 0])
    assert h.dtype == torch.float64
    assert h.tolist() == [0.25, 0.75, 0.0]
    assert torch.equal(normalize_histogram(np.array([1, 1], dtype=np.int64)), torch.tensor([0.5, 0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="counts must be >= 0"):
        normalize_histogram([1, -1, 3])
    with pytest.raises(ValueError, match="counts sum to 0"):
        normalize_histogram([0, 0])
    with pytest.raises(ValueError, match="NaN"):
        normalize_histogram([1.0, float("nan")])


def test_label_histogram():
    counts = label_histogram(torch.tensor([0, 2, 2, 3]), 5, normalize=False)
    assert counts.tolist() == [1.0, 0.0, 2.0, 1.0, 0.0]
    assert label_histogram([0, 2, 2, 3], 5).tolist() == [0.25, 0.0, 0.5, 0.25, 0.0]
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        label_histogram([0, 3], 3)
    with pytest.raises(ValueError, match="integers"):
        label_histogram([0.5], 3)


def test_validation_messages():
    with pytest.raises(ValueError, match="p has a negative probability"):
        kl_divergence([1.2, -0.2], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"q sums to 0.9.*must sum to 1.*normalize_histogram"):
        kl_divergence([0.5, 0.5], [0.5, 0.4])
    with pytest.raises(ValueError, match=r"same shape.*\(2,\) and \(3,\)"):
        js_divergence([0.5, 0.5], [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="p contains NaN"):
        kl_divergence([float("nan"), 1.0], [0.5, 0.5])
    with pytest.raises(ValueError, match="p must be a probability vector"):
        kl_divergence([[0.5, 0.5]], [[0.5, 0.5]])
    with pytest.raises(ValueError, match="smoothing must be a finite number >= 0"):
        kl_divergence([0.5, 0.5], [0.5, 0.5], smoothing=-1e-3)


def test_sum_tolerance_depends_on_dtype():
    # A float32 softmax over many classes misses 1 by ~1e-6..1e-5: accepted for float32 input,
    # while the same deviation in float64 input points at a real bug.
    off = np.array([0.5, 0.5 + 2e-5])
    assert math.isfinite(kl_divergence(off.astype(np.float32), np.array([0.5, 0.5], np.float32)))
    with pytest.raises(ValueError, match="within 1e-06"):
        kl_divergence(off, [0.5, 0.5])
