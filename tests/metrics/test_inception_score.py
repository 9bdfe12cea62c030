"""Inception Score: parity with torch-fidelity, exact values on constructed inputs, bounds, validation."""

import math

import numpy as np
import pytest
import torch
from torch_fidelity.metric_isc import isc_features_to_metric

from gancore.metrics import inception_score, inception_score_from_logits


def torch_fidelity_isc(logits, splits, seed):
    out = isc_features_to_metric(logits, splits=splits, shuffle=seed is not None, rng_seed=seed)
    return out["inception_score_mean"], out["inception_score_std"]


@pytest.mark.parametrize(
    "n, k, splits, seed",
    [(1000, 10, 10, 0), (503, 1008, 10, 2020), (97, 7, 4, 123), (64, 10, 1, None)],
)
def test_parity_with_torch_fidelity(n, k, splits, seed):
    # Same shuffle (numpy RandomState permutation), same uneven split boundaries (503 / 10),
    # float64 softmax, population std. Differences are float64 rounding (~1e-15 relative);
    # 1e-9 would still catch any protocol difference (a different permutation moves the std by
    # percent, sample-vs-population std by 5%).
    g = torch.Generator().manual_seed(n + k)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64) * 3
    ref_mean, ref_std = torch_fidelity_isc(logits, splits, seed)
    mean, std = inception_score_from_logits(logits, splits=splits, seed=seed)
    assert mean == pytest.approx(ref_mean, rel=1e-9)
    assert std == pytest.approx(ref_std, rel=1e-9, abs=1e-12)
    mean_p, std_p = inception_score(torch.softmax(logits, dim=1), splits=splits, seed=seed)
    assert mean_p == pytest.approx(ref_mean, rel=1e-9)
    assert std_p == pytest.approx(ref_std, rel=1e-9, abs=1e-12)


def test_float32_logits_match_torch_fidelity():
    # torch-fidelity casts float32 logits to float64 before the softmax; so do we.
    logits = torch.randn(200, 50, generator=torch.Generator().manual_seed(1)) * 2
    ref_mean, ref_std = torch_fidelity_isc(logits, 5, 2020)
    mean, std = inception_score_from_logits(logits, splits=5, seed=2020)
    assert mean == pytest.approx(ref_mean, rel=1e-12)
    assert std == pytest.approx(ref_std, rel=1e-9)


def test_seed_changes_split_composition_but_not_a_single_split():
    probs = torch.softmax(torch.randn(300, 10, generator=torch.Generator().manual_seed(2), dtype=torch.float64), 1)
    assert inception_score(probs, splits=10, seed=0) != inception_score(probs, splits=10, seed=1)
    # With one split the order is irrelevant: every seed gives the same score.
    a, b = inception_score(probs, splits=1, seed=0), inception_score(probs, splits=1, seed=None)
    assert a[0] == pytest.approx(b[0], rel=1e-14)
    assert a[1] == b[1] == 0.0


@pytest.mark.parametrize("k, per_class, splits", [(10, 5, 10), (4, 3, 2), (1000, 1, 1)])
def test_confident_evenly_spread_predictions_score_k(k, per_class, splits):
    # One-hot rows, each split holding every class equally often: p(y) is uniform in each split,
    # KL(one-hot || uniform) = log K for every row, IS = K in every split, std 0. seed=None keeps
    # the balanced arrangement (a shuffle would unbalance the splits).
    labels = torch.arange(k).repeat(per_class * splits)
    probs = torch.nn.functional.one_hot(labels, k).to(torch.float64)
    mean, std = inception_score(probs, splits=splits, seed=None)
    assert mean == pytest.approx(k, rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12 * k)


def test_one_confident_image_per_class_already_scores_the_maximum():
    # The reference's caveat: K samples, one per class, no diversity within classes, IS = K.
    k = 10
    mean, std = inception_score(torch.eye(k, dtype=torch.float64), splits=1)
    assert mean == pytest.approx(k, rel=1e-13)
    assert std == 0.0


def test_identical_predictions_score_one():
    row = torch.softmax(torch.randn(20, generator=torch.Generator().manual_seed(3), dtype=torch.float64), 0)
    mean, std = inception_score(row.expand(500, 20), splits=10)
    assert mean == pytest.approx(1.0, abs=1e-14)
    assert std == pytest.approx(0.0, abs=1e-14)


def test_complete_mode_collapse_onto_one_class_scores_one():
    probs = torch.zeros(100, 10, dtype=torch.float64)
    probs[:, 3] = 1.0
    assert inception_score(probs, splits=5)[0] == pytest.approx(1.0, abs=1e-15)


def test_bounds_on_random_dirichlet_inputs():
    rng = np.random.default_rng(0)
    for trial in range(30):
        k = int(rng.integers(2, 60))
        n = int(rng.integers(10, 300))
        alpha = float(rng.choice([0.01, 0.1, 1.0, 10.0]))
        probs = rng.dirichlet(np.full(k, alpha), size=n)
        splits = int(rng.integers(1, min(n, 10) + 1))
        mean, std = inception_score(probs, splits=splits, seed=trial)
        assert 1.0 - 1e-12 <= mean <= k * (1 + 1e-12), (trial, k, alpha, mean)
        assert std >= 0.0


def test_known_value_two_classes():
    # Half the samples say (0.9, 0.1), half (0.1, 0.9): p(y) = (1/2, 1/2), every row's KL is
    # 0.9 log 1.8 + 0.1 log 0.2, IS = exp of that.
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9]], dtype=torch.float64).repeat(50, 1)
    expected = math.exp(0.9 * math.log(1.8) + 0.1 * math.log(0.2))
    assert inception_score(probs, splits=1)[0] == pytest.approx(expected, rel=1e-14)


def test_a_denormal_probability_does_not_make_the_score_infinite():
    """A confident 2-D posterior gave one sample 4.4e-323 for a class no other sample of its
    split has: the split's mean, 4.4e-323 / 250, underflowed to 0 below a positive p(y|x), KL was
    inf, IS inf and its std NaN, and evaluate reported IS as null (found by a user-journey
    review). That row's true share of the KL is 4.4e-323 * log(250), nothing: the score is the
    one without that class, to float64 rounding."""
    n = 250
    probs = np.zeros((n, 3))
    probs[: n // 2, 0] = 1.0
    probs[n // 2 :, 1] = 1.0
    tiny = 4.4e-323
    probs[0] = [1.0 - tiny, 0.0, tiny]
    assert probs[:, 2].mean() == 0.0  # the underflow itself
    mean, std = inception_score(probs, splits=1, seed=None)
    assert math.isfinite(mean) and math.isfinite(std)
    assert mean == pytest.approx(2.0, rel=1e-12)  # two confident, equally used classes
    # logits whose softmax underflows there too, through the logits path
    logits = torch.from_numpy(np.log(np.where(probs > 0, probs, 1e-320)))
    assert math.isfinite(inception_score_from_logits(logits, splits=1, seed=None)[0])


def test_numpy_and_float32_inputs():
    probs = np.random.default_rng(4).dirichlet(np.ones(10), size=100)
    ref = inception_score(probs, splits=5)
    assert inception_score(torch.from_numpy(probs), splits=5) == ref
    # float32 rows are renormalised in float64; what is left is float32 rounding of the inputs.
    got = inception_score(probs.astype(np.float32), splits=5)
    assert got[0] == pytest.approx(ref[0], rel=1e-6)


def test_fewer_samples_than_splits_is_an_error_not_nan():
    with pytest.raises(ValueError, match=r"inception_score needs at least `splits` samples, got 5 < 10"):
        inception_score(torch.full((5, 4), 0.25, dtype=torch.float64), splits=10)
    with pytest.raises(ValueError, match=r"got 3 < 4"):
        inception_score_from_logits(torch.zeros(3, 4), splits=4)


def test_validation_messages():
    good = torch.full((20, 4), 0.25, dtype=torch.float64)
    bad_sum = good.clone()
    bad_sum[7] = torch.tensor([0.5, 0.2, 0.2, 0.05], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"probs row 7 sums to 0.95.*softmax"):
        inception_score(bad_sum, splits=2)
    negative = good.clone()
    negative[2] = torch.tensor([0.5, 0.5, 0.25, -0.25], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"probs has a negative probability \(row 2"):
        inception_score(negative, splits=2)
    nan = good.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="probs contains NaN"):
        inception_score(nan, splits=2)
    with pytest.raises(ValueError, match=r"probs must be a \[N, K\] matrix"):
        inception_score(good[0], splits=1)
    with pytest.raises(ValueError, match="splits must be an integer >= 1"):
        inception_score(good, splits=0)
    with pytest.raises(ValueError, match="seed must be < 2"):
        inception_score(good, splits=2, seed=2**32)
    with pytest.raises(ValueError, match="logits contains \\+-inf"):
        inception_score_from_logits(torch.tensor([[0.0, float("inf")], [0.0, 0.0]]), splits=1)
