"""One dropped mode among many, where some mode is rare: the count rule compares the modes covered
with the count a faithful generator expects, and when any mode can be missed by chance that
expectation is K - e, so K - 1 covered fell short by 1 - e < 1 and was called healthy (999 of
Stacked MNIST's 1,000 triples; a class of 1 % never drawn). A mode a faithful generator hits all
but surely is evidence on its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gancore.diagnostics.coverage import SHORT_MODE_ALPHA, short_modes
from gancore.diagnostics.image_modes import modes_labelled, modes_stacked
from gancore.diagnostics.modes import REPORT_FIGURES as KEYS
from gancore.diagnostics.verdict import decide


def _verdict(report: dict) -> dict:
    return decide({k: report[k] for k in KEYS})


def _stacked(triples: np.ndarray) -> torch.Tensor:
    probs = torch.zeros(len(triples), 1000)
    probs[torch.arange(len(triples)), torch.from_numpy(triples)] = 1.0
    return probs


def test_one_of_stacked_mnist_s_thousand_triples_missing_is_partial_collapse():
    rng = np.random.default_rng(0)
    n = 26_000  # PacGAN's sample count
    faithful = modes_stacked(_stacked(rng.integers(0, 1000, n)), 0.9)
    assert faithful["modes_covered"] == 1000 and _verdict(faithful)["verdict"] == "healthy"
    one_short = modes_stacked(_stacked(rng.integers(1, 1000, n)), 0.9)
    assert one_short["modes_covered"] == 999 and 999.99 < one_short["modes_expected"] < 1000
    assert one_short["modes_short"] == 1 and one_short["modes_short_labels"] == ["000"]
    found = _verdict(one_short)
    assert found["verdict"] == "partial_collapse"
    assert "all but surely place more" in found["explanation"]


def _classes(rng: np.random.Generator, p: np.ndarray, n: int, drop: int | None = None) -> torch.Tensor:
    labels = rng.choice(len(p), n, p=p)
    if drop is not None:
        labels = np.where(labels == drop, (labels + 1) % len(p), labels)
    probs = torch.full((n, len(p)), 0.05 / len(p), dtype=torch.float64)
    probs[torch.arange(n), torch.from_numpy(labels)] += 0.95
    return probs


def test_a_dropped_common_class_is_found_beside_a_rare_one_and_the_rare_one_is_forgiven():
    """100 classes, one of them rare (0.01 % of the data): a faithful generator of 5,000 samples
    misses it often, so its absence is not evidence; class 0 (1 %, about 50 expected samples) is
    missed by chance with probability (0.99)^5000 ~ 1e-22."""
    rng = np.random.default_rng(1)
    p = np.ones(100)
    p[99] = 0.01
    p /= p.sum()
    test = torch.from_numpy(rng.choice(100, 200_000, p=p))
    faithful = modes_labelled(_classes(rng, p, 5_000, drop=99), test, 0.9)  # the rare class never drawn
    assert faithful["modes_covered"] == 99 and faithful["modes_short"] == 0
    assert _verdict(faithful)["verdict"] == "healthy"
    dropped = modes_labelled(_classes(rng, p, 5_000, drop=0), test, 0.9)
    assert dropped["modes_short"] == 1 and dropped["modes_short_labels"] == ["0"]
    assert _verdict(dropped)["verdict"] == "partial_collapse"


def test_the_per_mode_rule_s_false_alarms_stay_within_its_level():
    """Faithful multinomial draws over uneven modes (weights spread over three decades), 2,000
    times: the rule flags a draw with probability at most SHORT_MODE_ALPHA (Bonferroni over the
    modes), so 2,000 draws give 5.4 flags on average at the bound; 16 is beyond its 99.99 % point."""
    rng = np.random.default_rng(2)
    p = np.geomspace(1.0, 1e-3, 40)
    p /= p.sum()
    n = 30_000
    flags = sum(bool(short_modes(p, rng.multinomial(n, p), n)) for _ in range(2_000))
    assert flags <= 16
    assert SHORT_MODE_ALPHA * 2_000 < 16


def test_quality_floor_follows_held_out_real_data_when_they_fall_short_of_half():
    """A domain classifier over 20 classes that is 90 % sure of only 40 % of real test images:
    real data score 40 % high quality, below the absolute 50 % floor, so a faithful generator was
    `not_converged` and half the classes missing went unjudged. The floor is now half of what
    held-out real data reach (20 %)."""
    rng = np.random.default_rng(3)
    k = 20

    def probs(labels: np.ndarray) -> torch.Tensor:
        top = np.where(rng.random(len(labels)) < 0.4, 0.95, 0.6)
        p = np.repeat(((1 - top) / (k - 1))[:, None], k, axis=1)
        p[np.arange(len(labels)), labels] = top
        return torch.from_numpy(p)

    from gancore.diagnostics.image_modes import labelled_assignments

    test = rng.integers(0, k, 10_000)
    real_hq = float((labelled_assignments(probs(test), 0.9) >= 0).double().mean())
    assert 0.38 < real_hq < 0.42

    def verdict(generated: np.ndarray) -> str:
        report = modes_labelled(probs(generated), torch.from_numpy(test), 0.9)
        return decide({**{key: report[key] for key in KEYS}, "high_quality_real": real_hq})["verdict"]

    assert verdict(rng.integers(0, k, 5_000)) == "healthy"
    assert verdict(rng.integers(0, k // 2, 5_000)) == "partial_collapse"
    # Against real data's 40 %, samples at 15 % are still unconverged.
    sure = rng.random(5_000) < 0.15
    noisy = probs(rng.integers(0, k, 5_000))
    noisy[~torch.from_numpy(sure)] = 1.0 / k
    report = modes_labelled(noisy, torch.from_numpy(test), 0.9)
    assert decide({**{key: report[key] for key in KEYS}, "high_quality_real": real_hq})["verdict"] == "not_converged"


def _probs(labels: np.ndarray, sure: np.ndarray, k: int = 10) -> torch.Tensor:
    """One-hot-ish classifier outputs: 0.95 on the label where ``sure``, else 0.6."""
    top = np.where(sure, 0.95, 0.6)
    p = np.repeat(((1 - top) / (k - 1))[:, None], k, axis=1)
    p[np.arange(len(labels)), labels] = top
    return torch.from_numpy(p)


def test_a_class_the_generator_no_longer_draws_is_short_though_misclassified_samples_cover_it():
    """MNIST without 7s: the classifier's errors still put a few samples into 7 at 0.9 or more,
    so 7 counted as covered and the run was healthy (found by a review: 3 of the 248 samples it
    was due). Under a quarter of its share, where a faithful generator would all but surely have
    more, it is short: partial_collapse."""
    rng = np.random.default_rng(4)
    test = rng.integers(0, 10, 10_000)
    real = _probs(test, np.ones(len(test), bool))
    drawn = rng.integers(0, 10, 2_500)
    no7 = np.where(drawn == 7, rng.integers(0, 7, 2_500), drawn)
    no7[:3] = 7  # the classifier's errors
    report = modes_labelled(_probs(no7, np.ones(2_500, bool)), torch.from_numpy(test), 0.9, real_probs=real)
    assert report["modes_covered"] == 10 and report["modes_short"] == 1 and report["modes_short_labels"] == ["7"]
    assert decide({key: report[key] for key in KEYS})["verdict"] == "partial_collapse"
    faithful = modes_labelled(_probs(drawn, np.ones(2_500, bool)), torch.from_numpy(test), 0.9, real_probs=real)
    assert faithful["modes_short"] == 0 and decide({key: faithful[key] for key in KEYS})["verdict"] == "healthy"


def test_coverage_follows_the_real_images_the_classifier_is_sure_of():
    """Look-alike classes 8 and 9 the classifier is never 90 % sure of, real images included: no
    sample can cover them, and a faithful generator was partial_collapse against the test labels.
    The coverage a faithful generator reaches is taken from the held-out real images the
    classifier is sure of."""
    rng = np.random.default_rng(5)
    test = rng.integers(0, 10, 10_000)
    real = _probs(test, test < 8)
    drawn = rng.integers(0, 10, 2_500)
    faithful = modes_labelled(_probs(drawn, drawn < 8), torch.from_numpy(test), 0.9, real_probs=real)
    assert faithful["modes_covered"] == 8 and faithful["modes_expected"] == pytest.approx(8.0)
    assert decide({key: faithful[key] for key in KEYS})["verdict"] == "healthy"
    by_labels = modes_labelled(_probs(drawn, drawn < 8), torch.from_numpy(test), 0.9)
    assert decide({key: by_labels[key] for key in KEYS})["verdict"] == "partial_collapse"  # the reading before


def test_blurred_samples_are_not_converged_and_their_spread_is_a_finding_beside_it():
    """Blurred digits: 11 % high quality where real images reach 92 %; their spread inside the
    modes rests on the few that pass and read as intra_mode_collapse (found by a review). The
    verdict is not_converged, the spread stays listed; sharp samples that tight stay collapsed."""
    tight = {"dispersion_ratio": 0.3, "dispersion_se_log": 0.05, "modes_total": 10, "modes_covered": 10, "modes_expected": 10.0}
    blurred = decide({**tight, "high_quality_fraction": 0.11, "high_quality_real": 0.92})
    assert blurred["verdict"] == "not_converged"
    assert "Also:" in blurred["explanation"] and "spread 0.30 times" in blurred["explanation"]
    assert any(f["verdict"] == "intra_mode_collapse" for f in blurred["findings"])
    assert decide({**tight, "high_quality_fraction": 0.9, "high_quality_real": 0.92})["verdict"] == "intra_mode_collapse"


def test_real_images_the_classifier_is_never_sure_of_leave_the_mode_counts_unjudged():
    """high_quality_real 0.0 read as "unknown": the floor fell back to 50 % and every generator
    was not_converged (found by a review). Then no sample can cover a mode and the counts say
    nothing: the verdict rests on the other measures."""
    figures = {"modes_total": 100, "modes_covered": 0, "modes_expected": 100.0, "high_quality_fraction": 0.0, "high_quality_real": 0.0}
    assert decide(figures)["verdict"] == "healthy"
    assert decide({**figures, "pairwise_distance_ratio": 0.01})["verdict"] == "complete_collapse"


def test_stacked_mnist_s_quality_floor_is_what_real_stacked_images_reach():
    """The stacked protocol's floor stayed at a fixed 50 %: where real triples reach 11 % at the
    confidence, a faithful generator was not_converged (found by a review)."""
    rng = np.random.default_rng(6)
    n = 26_000
    triples = rng.integers(0, 1000, n)
    probs = torch.full((n, 1000), 0.5 / 999, dtype=torch.float64)
    probs[torch.arange(n), torch.from_numpy(triples)] = 0.5  # per channel about 0.7-0.8: rarely all three >= 0.9
    report = modes_stacked(probs, 0.9)
    real = modes_stacked(probs[: n // 2], 0.9)["high_quality_fraction"]
    assert report["high_quality_fraction"] < 0.5
    figures = {**{key: report[key] for key in KEYS}, "high_quality_real": real}
    assert decide(figures)["verdict"] == "healthy"
