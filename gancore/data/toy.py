"""The 2D mode-collapse benchmarks of PacGAN (``synthetic_data_experiments``): ring8 and grid25.

Each point picks a mode uniformly, then adds isotropic Gaussian noise: ``centre + sigma * N(0, I)``.
The coordinates are the protocol's own (not rescaled to [-1, 1]) so that the "within 3 sigma of a
centre" quality test and published numbers apply unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from gancore.data.prepared import PreparedData
from gancore.seeds import generator

if TYPE_CHECKING:  # pragma: no cover
    from gancore.config import Params
    from gancore.datasets import DatasetSpec
    from gancore.layout import Layout

DEFAULT_N_TRAIN = 50_000
DEFAULT_N_TEST = 10_000
# value_range bounds the data at centres +- RANGE_SIGMAS * sigma: per coordinate, 4 sigma leaves
# out 6e-5 of the points (two-sided normal tail), i.e. the box the data effectively fill.
RANGE_SIGMAS = 4.0


@dataclass(frozen=True)
class Mixture:
    """An equal-weight isotropic Gaussian mixture in 2D."""

    centers: torch.Tensor  # float64 [K, 2]
    sigma: float
    definition: str

    @property
    def count(self) -> int:
        return self.centers.shape[0]

    def sample(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` points (float32 [n, 2]) and the index of the centre each was drawn from (int64 [n])."""
        labels = torch.randint(0, self.count, (n,), generator=gen)
        noise = torch.randn(n, 2, generator=gen, dtype=torch.float64)
        points = self.centers[labels] + self.sigma * noise
        return points.float(), labels

    def value_range(self) -> list[float]:
        margin = RANGE_SIGMAS * self.sigma
        return [round(self.centers.min().item() - margin, 12), round(self.centers.max().item() + margin, 12)]


def ring8() -> Mixture:
    # arange(8) / 8, not linspace(0, 2 pi, 8): linspace includes 2 pi, which repeats centre 0 and
    # leaves 7 modes.
    angles = 2 * math.pi * torch.arange(8, dtype=torch.float64) / 8
    centers = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return Mixture(centers, 0.01, "8 Gaussians on the unit circle at angles 2*pi*i/8 (i = 0..7), sigma 0.01")


def grid25() -> Mixture:
    axis = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0], dtype=torch.float64)
    xs, ys = torch.meshgrid(axis, axis, indexing="ij")
    centers = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)
    return Mixture(centers, 0.05, "25 Gaussians on the grid {-4,-2,0,2,4}^2, sigma 0.05")


MIXTURES = {"ring8": ring8, "grid25": grid25}


def build(spec: DatasetSpec, params: Params, layout: Layout) -> PreparedData:
    """The registry's builder (gancore.datasets): the mixture named ``spec.name``, sampled."""
    return prepare_toy(spec.name, params.seed, params.data.n_train, params.data.n_test)


def prepare_toy(name: str, seed: int, n_train: int | None, n_test: int | None) -> PreparedData:
    return prepare_mixture(MIXTURES[name](), seed, n_train, n_test)


def prepare_mixture(mixture: Mixture, seed: int, n_train: int | None, n_test: int | None) -> PreparedData:
    """Training and test points of ``mixture``, seeded, with its centres as the known modes (a new
    2D set is a Mixture and a builder calling this)."""
    train, train_labels = mixture.sample(n_train or DEFAULT_N_TRAIN, generator(seed, "train"))
    test, test_labels = mixture.sample(n_test or DEFAULT_N_TEST, generator(seed, "test"))
    meta = {
        "value_range": mixture.value_range(),
        "value_range_definition": f"not rescaled: the bounding box of the centres +- {RANGE_SIGMAS:g} sigma",
        "modes": {
            "count": mixture.count,
            "definition": mixture.definition,
            "centers": mixture.centers.tolist(),
            "sigma": mixture.sigma,
        },
        "raw_sha256": {},
    }
    return PreparedData(meta, train, test, train_labels, test_labels)
