"""One dropped mode among many, where some mode is rare: the count rule compares the modes covered
with the count a faithful generator expects, and when any mode can be missed by chance that
expectation is K - e, so K - 1 covered fell short by 1 - e < 1 and was called healthy (999 of
Stacked MNIST's 1,000 triples; a class of 1 % never drawn). A mode a faithful generator hits all
but surely is evidence on its own."""

from __future__ import annotations

import numpy as np
import torch

from gancore.diagnostics.modes import MISSED_MODE_ALPHA, modes_labelled, modes_stacked, surely_hit_yet_missed
from gancore.diagnostics.verdict import decide

KEYS = (
    "modes_total",
    "modes_covered",
    "modes_expected",
    "modes_expected_sd",
    "modes_missing_unlikely",
    "modes_missing_unlikely_labels",
    "high_quality_fraction",
    "mode_kl",
)


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
    assert one_short["modes_missing_unlikely"] == 1 and one_short["modes_missing_unlikely_labels"] == ["000"]
    found = _verdict(one_short)
    assert found["verdict"] == "partial_collapse"
    assert "all but surely hit" in found["explanation"]


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
    assert faithful["modes_covered"] == 99 and faithful["modes_missing_unlikely"] == 0
    assert _verdict(faithful)["verdict"] == "healthy"
    dropped = modes_labelled(_classes(rng, p, 5_000, drop=0), test, 0.9)
    assert dropped["modes_missing_unlikely"] == 1 and dropped["modes_missing_unlikely_labels"] == ["0"]
    assert _verdict(dropped)["verdict"] == "partial_collapse"


def test_the_per_mode_rule_s_false_alarms_stay_within_its_level():
    """Faithful multinomial draws over uneven modes (weights spread over three decades), 2,000
    times: the rule flags a draw with probability at most MISSED_MODE_ALPHA (Bonferroni over the
    modes), so 2,000 draws give 5.4 flags on average at the bound; 16 is beyond its 99.99 % point."""
    rng = np.random.default_rng(2)
    p = np.geomspace(1.0, 1e-3, 40)
    p /= p.sum()
    n = 30_000
    flags = sum(bool(surely_hit_yet_missed(p, rng.multinomial(n, p), n)) for _ in range(2_000))
    assert flags <= 16
    assert MISSED_MODE_ALPHA * 2_000 < 16


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

    from gancore.diagnostics.modes import labelled_assignments

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
