"""What the ``evaluate`` stage hands each registered metric (:data:`gancore.figures.METRICS`):
generated and real samples in one feature space, their class probabilities when a classifier
gives them, the settings, and a faithful reference (training examples in the samples' place)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


def seeded_subset(n: int, size: int | None, seed: int) -> torch.Tensor:
    """Indices of a seeded draw of ``size`` out of ``n`` (all of them when ``size`` is None or >= n), sorted."""
    if size is None or n <= size:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size].sort().values


@dataclass
class MetricInputs:
    real_features: torch.Tensor  # [n_real, d], on the device the metrics run on
    generated_features: torch.Tensor  # [n_generated, d]
    real_probabilities: torch.Tensor | None  # [n_real, classes], None without a classifier
    generated_probabilities: torch.Tensor | None
    settings: Any  # params.evaluate: splits, pr_k, dc_k, ...
    seed: int
    # n -> features of n examples of the split not compared against (a faithful generator's stand-in).
    training_features: Callable[[int], torch.Tensor]
    # the split training_features draws from, as the figures' notes name it
    faithful_split: str = "training"
    _equal: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)
    _faithful: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)

    @property
    def has_probabilities(self) -> bool:
        p = self.generated_probabilities
        return p is not None and self.real_probabilities is not None and p.shape[1] > 0

    def equal_sizes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Both sets cut to the smaller one's size (seeded subsets): the k-NN metrics' radii shrink
        with n, so precision/recall and density/coverage compare equal numbers of real and generated
        points, as their papers do (coverage of a faithful 2D generator: ~0.97 at equal n, ~0.65 with
        10,000 real against 2,500 generated). Drawn once: both k-NN metrics use it."""
        if self._equal is None:
            self._equal = equal_sizes(self.real_features, self.generated_features, self.seed)
        return self._equal

    def faithful(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(real, training) features at the k-NN metrics' n: what a faithful generator is compared on.
        Embedded once: both k-NN metrics use it."""
        if self._faithful is None:
            n = len(self.equal_sizes()[0])
            self._faithful = equal_sizes(self.real_features, self.training_features(n).to(self.real_features.device), self.seed)
        return self._faithful


def equal_sizes(real: torch.Tensor, generated: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = min(len(real), len(generated))
    return real[seeded_subset(len(real), n, seed)], generated[seeded_subset(len(generated), n, seed + 2)]
