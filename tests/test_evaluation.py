"""The `gan evaluate` stage on data whose answers are known in closed form.

Prepared data and samples are written directly (no training), so every expected value follows
from how they were drawn. ring8 (sigma 0.01, neighbouring centres 0.77 = 77 sigma apart) makes
the Gaussian posterior one-hot to within exp(-2500): argmax histograms are exactly the mode
counts of the draw, and the Inception Score is exactly exp(entropy of the per-split histogram).

The discriminator's JSD lower bound and images (a tiny MNIST, unlabelled images):
test_evaluation_jsd_and_images.py; inputs evaluate refuses, data without a classifier and the
reference split: test_evaluation_inputs.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gancore.device import software
from gancore.evaluation import HEADLINE, _real_subset, evaluate, strict_json
from helpers import EVALUATE_KEYS as KEYS
from ring_evaluation import LOG2, SIGMA, SPLITS, K, N, make_ring8, read_result, ring_params, ring_points, write_samples


def expected_is_uniform(n_per_split: int) -> float:
    # One-hot posteriors: per split IS = exp(H(histogram of the split)). For n draws from the
    # uniform over K, E[H] = log K - (K - 1) / (2n) + O(n^-2) (the multinomial entropy bias).
    return K * math.exp(-(K - 1) / (2 * n_per_split))


@pytest.fixture(scope="module")
def same(tmp_path_factory):
    """Generated samples drawn from the true mixture, independently of the real held-out set."""
    gen = torch.Generator().manual_seed(123)
    real_labels = torch.randint(K, (N,), generator=gen)
    layout = make_ring8(tmp_path_factory.mktemp("same"), real_labels)
    write_samples(layout, ring_points(torch.randint(K, (N,), generator=gen), gen))
    summary = evaluate(ring_params(), layout)
    return summary, read_result(layout)


@pytest.fixture(scope="module")
def collapsed(tmp_path_factory):
    """Complete mode collapse: every generated sample at centre 0."""
    gen = torch.Generator().manual_seed(7)
    real_labels = torch.randint(K, (N,), generator=gen)
    layout = make_ring8(tmp_path_factory.mktemp("collapsed"), real_labels)
    write_samples(layout, ring_points(torch.zeros(N, dtype=torch.long), gen))
    q = torch.bincount(real_labels, minlength=K).double() / N
    return evaluate(ring_params(), layout), read_result(layout), q, layout


# -- same distribution -----------------------------------------------------------------------


def test_same_distribution_divergences_are_multinomial_noise(same):
    _, r = same
    # KL between two independent empirical histograms of n1 = n2 = 2500 draws from one
    # distribution over K bins: E ~ (K-1)/2 (1/n1 + 1/n2) = 0.0028, sd ~ sqrt(2(K-1))/2 (1/n1 + 1/n2)
    # = 0.0015. 0.01 is E + 4.8 sd. JS ~ KL/4 to second order.
    assert 0 <= r["kl_divergence"] < 0.01
    assert 0 <= r["js_divergence"] < 0.0025
    assert r["js_distance"] == pytest.approx(math.sqrt(r["js_divergence"]), rel=1e-12)
    assert r["kl_divergence_note"] is None
    assert r["classes_generated"] == r["classes_real"] == r["num_classes"] == K
    # KL(generated || uniform) is noise of one histogram only: E = (K-1)/(2n) = 0.0014.
    assert 0 <= r["kl_to_uniform"] < 0.007


def test_same_distribution_inception_score_matches_its_expectation(same):
    _, r = same
    expected = expected_is_uniform(N // SPLITS)  # 7.89
    # Near the uniform the entropy's fluctuation is second order: sd(H) ~ sqrt(2(K-1))/(2n) = 0.0075
    # per split, so sd(IS) ~ 0.06 per split and ~0.02 for the mean over 10 splits.
    assert r["is_mean"] == pytest.approx(expected, abs=0.08)
    assert r["is_real_mean"] == pytest.approx(expected, abs=0.08)
    assert r["is_mean"] <= K and r["is_real_mean"] <= K
    assert 0 < r["is_std"] < 0.2


def test_same_distribution_feature_metrics(same):
    _, r = same
    assert r["feature_space"] == "coordinates:2"
    # Naeem et al. 2020: for identical distributions E[density] = 1 and
    # E[coverage] = 1 - prod_{i<k} (N-1-i)/(2N-1-i) ~ 1 - 2^-k = 0.969 (k = 5).
    e_cov = 1 - math.prod((N - 1 - i) / (2 * N - 1 - i) for i in range(5))
    assert r["density"] == pytest.approx(1.0, abs=0.06)
    assert r["coverage"] == pytest.approx(e_cov, abs=0.015)
    # Precision and recall are exchangeable for identical distributions (same expectation); in
    # 2D the union of k = 3 neighbour balls leaves little of the support uncovered.
    assert r["precision"] > 0.92 and r["recall"] > 0.92
    assert abs(r["precision"] - r["recall"]) < 0.04
    # FID of two 2500-point samples of one law: the means differ by ~sd/sqrt(n) per coordinate
    # (variance 0.5 -> ~4e-4 in ||dmu||^2) and the covariance term is of the same order.
    assert 0 <= r["fid"] < 0.01
    assert abs(r["kid_mean"]) < 5 * r["kid_std"] + 1e-3
    assert r["kid_subset_size"] == 1000


def test_same_distribution_js_lower_bound_is_small(same):
    _, r = same
    # JSD = 0, so V(D) <= -log 4 for every D: only the held-out estimate's own noise can lift the
    # bound above 0; the estimate reports its standard error, and 4 se covers that noise.
    assert r["js_lower_bound"] <= 4 * r["js_lower_bound_se"] + 1e-9
    assert r["js_lower_bound"] < 0.01
    assert r["js_lower_bound_n_train"] == r["js_lower_bound_n_test"] == N // 2


def test_same_distribution_bookkeeping(same):
    summary, r = same
    assert r["n_generated"] == r["n_real"] == N
    assert r["classifier"] == "domain" and r["splits"] == SPLITS and r["seed"] == 0
    assert r["provenance"]["software"] == software("cpu")  # the features were computed on the CPU
    # The exact posterior of a 77-sigma-separated mixture makes no mistakes.
    assert r["classifier_test_accuracy"] == 1.0


# -- complete mode collapse -------------------------------------------------------------------


def test_collapse_inception_score_is_one(collapsed):
    _, r, *_ = collapsed
    # Every p(y|x) is the same one-hot, so p(y) = p(y|x) and every KL term is 0.
    assert r["is_mean"] == pytest.approx(1.0, abs=1e-9)
    assert r["is_std"] == pytest.approx(0.0, abs=1e-9)
    assert r["is_real_mean"] > 7.8


def test_collapse_divergences_closed_form(collapsed):
    _, r, q, _ = collapsed
    q0 = float(q[0])
    # KL(delta_0 || q) = -log q0; with q uniform it is log 8.
    assert r["kl_divergence"] == pytest.approx(-math.log(q0), rel=1e-9)
    assert r["kl_to_uniform"] == pytest.approx(math.log(K), rel=1e-12)
    # JS(delta_0, q) with m0 = (1 + q0)/2 and m_k = q_k/2 elsewhere:
    # 1/2 log(2/(1+q0)) + 1/2 [q0 log(2 q0/(1+q0)) + (1 - q0) log 2].
    js = 0.5 * math.log(2 / (1 + q0)) + 0.5 * (q0 * math.log(2 * q0 / (1 + q0)) + (1 - q0) * LOG2)
    assert r["js_divergence"] == pytest.approx(js, rel=1e-9)
    # With q exactly uniform: 1/2 log(16/9) + 1/2 [1/8 log(2/9) + 7/8 log 2] = 0.496929. The
    # empirical q0 = 1/8 +- 0.0066 (binomial sd) moves it by dJS/dq0 = -1.10 times that: sd
    # 0.0073, so 0.025 is 3.4 sd.
    js_uniform = 0.5 * math.log(16 / 9) + 0.5 * (math.log(2 / 9) / 8 + 7 / 8 * LOG2)
    assert js_uniform == pytest.approx(0.496929, abs=1e-6)
    assert r["js_divergence"] == pytest.approx(js_uniform, abs=0.025)
    assert r["classes_generated"] == 1


def test_collapse_recall_and_coverage_bounded_by_the_covered_mode(collapsed):
    _, r, q, _ = collapsed
    # Balls around generated points (radius ~ sigma) reach no real point of the 7 other modes
    # (>= 77 sigma away), and the other modes' real balls contain no generated point: recall
    # and coverage can count only real points of mode 0.
    assert r["recall"] <= float(q[0]) + 1e-12
    assert r["coverage"] <= float(q[0]) + 1e-12
    # Generated points sit inside mode 0, which the real balls cover.
    assert r["precision"] > 0.8


def test_collapse_fid_matches_closed_form(collapsed):
    _, r, _, layout = collapsed
    # Features are the coordinates themselves, so FID is the Frechet distance between Gaussians
    # fitted to the two point clouds; computed here independently with scipy's sqrtm.
    from scipy import linalg

    real = torch.load(layout.prepared / "data.pt", weights_only=True)["test"].double().numpy()
    fake = torch.load(layout.samples / "samples.pt", weights_only=True)["x"].double().numpy()
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    expected = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))
    assert r["fid"] == pytest.approx(expected, rel=1e-6)
    # Population values: real ~ (0, I/2), generated ~ ((1, 0), sigma^2 I).
    assert r["fid"] == pytest.approx(1 + 2 * (0.5 + SIGMA**2 - 2 * math.sqrt(0.5) * SIGMA), abs=0.1)


def test_collapse_js_lower_bound_below_true_jsd(collapsed):
    _, r, q, _ = collapsed
    q0 = float(q[0])
    # Within mode 0 the generated and real densities coincide and the other modes are disjoint,
    # so the true JSD between the continuous laws equals the categorical JS above. A trained D
    # gets close to it but cannot beat it, except by the estimate's own noise.
    js = 0.5 * math.log(2 / (1 + q0)) + 0.5 * (q0 * math.log(2 * q0 / (1 + q0)) + (1 - q0) * LOG2)
    assert r["js_lower_bound"] <= js + 3 * r["js_lower_bound_se"]
    assert r["js_lower_bound"] >= 0.85 * js


# -- the result file ------------------------------------------------------------------------------


def test_result_file_is_strict_json_with_every_key(same, collapsed):
    for summary, r in (same, collapsed[:2]):
        assert set(r) == KEYS
        json.dumps(r, allow_nan=False)
        assert tuple(summary) == HEADLINE
        assert summary == {key: r[key] for key in HEADLINE}
        assert r["non_finite_metrics"] is None


def probability_metrics(gen_probs, real_probs, *, splits, seed):
    """The registered metrics of class probabilities alone (IS, KL/JS of the argmax histograms)."""
    from types import SimpleNamespace

    from gancore.figures import METRICS
    from gancore.metrics.inputs import MetricInputs

    empty = torch.empty(0, 1)
    inputs = MetricInputs(empty, empty, real_probs, gen_probs, SimpleNamespace(splits=splits), seed, lambda n: empty)
    return {k: v for m in METRICS.values() if m.needs == "probabilities" for k, v in m.function()(inputs).items()}


def test_kl_is_null_with_a_note_when_real_misses_a_generated_class():
    # Real held-out data never in class 7, generated uniform over all 8: KL(gen || real) = +inf.
    eye = torch.eye(K, dtype=torch.float64)
    gen = eye[torch.arange(800) % K]
    real = eye[torch.arange(700) % (K - 1)]
    r = strict_json(probability_metrics(gen, real, splits=SPLITS, seed=0))
    json.dumps(r, allow_nan=False)
    assert r["kl_divergence"] is None
    assert "+inf" in r["kl_divergence_note"] and "class(es) 7 " in r["kl_divergence_note"]
    # JS of U8 vs U7 (class 7 empty), exactly: m = (1/8 + 1/7)/2 on 0..6 and 1/16 on 7.
    m = (1 / 8 + 1 / 7) / 2
    js = 0.5 * (7 / 8 * math.log((1 / 8) / m) + 1 / 8 * LOG2) + 0.5 * math.log((1 / 7) / m)
    assert r["js_divergence"] == pytest.approx(js, rel=1e-9)
    assert r["classes_generated"] == K and r["classes_real"] == K - 1
    # One-hot posteriors: IS = exp(entropy of the split's histogram) <= number of classes present.
    assert 1 < r["is_mean"] <= K and 1 < r["is_real_mean"] <= K - 1


def test_strict_json_nulls_and_lists_non_finite_values():
    out = strict_json({"fid": float("nan"), "kid_mean": float("inf"), "precision": 0.5, "classifier": "domain"})
    assert out == {"fid": None, "kid_mean": None, "precision": 0.5, "classifier": "domain", "non_finite_metrics": "fid, kid_mean"}
    json.dumps(out, allow_nan=False)


def test_real_subset_is_seeded_sorted_and_bounded():
    a, b, c = _real_subset(5000, 1000, 0), _real_subset(5000, 1000, 0), _real_subset(5000, 1000, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(a) == 1000 and len(a.unique()) == 1000 and torch.equal(a, a.sort().values)
    assert torch.equal(_real_subset(800, 1000, 0), torch.arange(800))
    assert torch.equal(_real_subset(800, None, 0), torch.arange(800))
