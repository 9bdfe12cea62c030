"""The diagnostics tests' shared data: the ring8 protocol's training and held-out points."""

from __future__ import annotations

import pytest

from constructed_inputs import mixture, ring8


@pytest.fixture(scope="module")
def ring_data():
    centers, sigma = ring8()
    train, _ = mixture(centers, sigma, 10_000, seed=1)
    test, test_labels = mixture(centers, sigma, 2_000, seed=2)
    return centers, sigma, train, test, test_labels
