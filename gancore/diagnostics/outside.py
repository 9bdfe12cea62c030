"""The rows outside every cluster: how many samples a generator puts there, and where.

A mixture prepare fitted to a points file may hold a background (a uniform law over the data's
box, mclust's noise component) for the rows no cluster explains. Under :data:`~gancore.background.STRAY_ROWS_MAX`
of its weight they are stray rows, glitches no generator need make; from it they are flat rows
the data hold, and a generator is judged on them as on a mode:

* :func:`outside_count`: the samples the background explains better than every cluster, inside
  its box (the share, tested as a mode's in :func:`gancore.diagnostics.modes.modes_gaussian`);
* :func:`short_outside_cells`: where they go. The share alone cannot see it: four clusters beside
  20 % flat rows in a 30 x 30 box, and a generator placing its 20 % in the central 8 x 8, had
  the data's share outside and every cluster covered, and was healthy (a review);
* :func:`outside_duplicates`: how they spread there: near duplicates among them, against the
  training rows outside at equal n.

The training rows' side of the last two is fitted once (:func:`outside_cells`,
:func:`outside_rows`), so that the collapse monitor, which judges a batch of samples every few
steps, tests them as `gan diagnose` does at the same cost per check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from gancore.background import as_rows, is_tested, outside_mask
from gancore.gaussian_mixture import GaussianMixture
from gancore.seeds import generator as seeded_generator

# The training rows the cells are fitted and counted on (half each), at most.
CELL_MAX_ROWS = 100_000
# Cells are fitted to this many rows each on average (their share then known to about a fifth);
# fewer rows outside than that in two cells, and there is no test.
CELL_MIN_ROWS = 20


def _rows(train: Any, seed: int, stream: str) -> torch.Tensor:
    """At most :data:`CELL_MAX_ROWS` training rows in a seeded order (float64 after the cut)."""
    x = torch.as_tensor(train)
    return as_rows(x[torch.randperm(len(x), generator=seeded_generator(seed, stream))[:CELL_MAX_ROWS]])


def outside_count(points: Any, mixture: GaussianMixture, share: float | None) -> tuple[int, int, float, bool] | None:
    """(samples the background explains better than every cluster, samples, ``share``, whether
    it is tested as a mode's: where the background weighs :data:`~gancore.background.STRAY_ROWS_MAX` or more), where
    the mixture has a background and the training rows a share outside. The weight, not the
    rows' share: beside broad clusters the background is the more probable on fewer rows than it
    holds (12 % flat beside clusters of sd 1.5: weight 0.12, rows 0.094, a review)."""
    if not share or mixture.background_log_joint is None:
        return None
    x = as_rows(points)
    return int(outside_mask(x, mixture).sum()), len(x), float(share), is_tested(mixture, share)


@dataclass(frozen=True)
class OutsideCells:
    """k-means cells over one half of the training rows outside every cluster (``centres``), and
    the rows of the other half in each (``reference``, of ``rows`` counted): :func:`outside_cells`."""

    mixture: GaussianMixture
    centres: torch.Tensor
    reference: np.ndarray
    rows: int

    def short(self, samples: Any) -> dict[str, Any]:
        """The cells far short of their share of ``samples`` (:func:`short_outside_cells`)."""
        from scipy import stats

        from gancore.clustering import nearest
        from gancore.diagnostics.coverage import SHORT_MODE_ALPHA, SHORT_SHARE

        cells, reference, rows = len(self.centres), self.reference, self.rows
        gen = as_rows(samples)
        generated = np.bincount(nearest(gen[outside_mask(gen, self.mixture)], self.centres).numpy(), minlength=cells)
        n = len(gen)
        below = generated < SHORT_SHARE * n * reference / rows
        tail = stats.binom.cdf(generated, generated + reference, n / (n + rows))
        short = np.flatnonzero(below & (tail < SHORT_MODE_ALPHA / cells))
        return {
            "outside_cells": int(cells),
            "outside_cells_short": int(len(short)),
            # the training rows in those cells: how much of the data the samples leave (nearly) empty
            "outside_cells_short_share": float(reference[short].sum() / rows),
        }


def outside_cells(train: Any, mixture: GaussianMixture, bins: int, seed: int) -> OutsideCells | None:
    """The cells of :func:`short_outside_cells`, fitted and counted on the training rows; None
    where fewer than two can be fitted."""
    from gancore.clustering import kmeans, nearest

    x = _rows(train, seed, "diagnose/outside-cells")
    fit, count = x[0::2], x[1::2]
    fit_outside = fit[outside_mask(fit, mixture)]
    cells = min(round(bins * len(fit_outside) / max(1, len(fit))), len(fit_outside) // CELL_MIN_ROWS)
    if cells < 2:
        return None
    centres, _ = kmeans(fit_outside, cells, seed, stream="diagnose/outside-cells")
    # (k-means works in float32 above 16 columns; the rows here are float64)
    centres = centres.to(x.dtype)
    reference = np.bincount(nearest(count[outside_mask(count, mixture)], centres).numpy(), minlength=cells)
    return OutsideCells(mixture, centres, reference, len(count))


def short_outside_cells(train: Any, samples: Any, mixture: GaussianMixture, bins: int, seed: int) -> dict[str, Any] | None:
    """Cells over the training rows outside every cluster, and those far short of their share of
    the samples: under a quarter of it, where a faithful generator would fall that short with
    probability below alpha / cells (the modes' rule, :func:`~gancore.diagnostics.coverage.short_modes`).

    The rows are split in two halves: k-means cells are fitted to one half's rows outside
    (``bins`` times their share of cells, NDB's resolution over them, and :data:`CELL_MIN_ROWS`
    rows per cell on average at least), the other half counts each cell's share. Cells fitted and
    counted on the same rows hold more of them than of the law (k-means follows the rows' chance
    clumps): a faithful generator's 4 samples in a cell of 23 fitting rows of 5,400 were called
    short. Each cell's test conditions on its two counts together: were both Poisson, the
    samples' count would be binomial in their sum with p = n / (n + rows counted), whatever the
    counts; with n and the rows fixed it is hypergeometric, whose lower tail is the smaller where
    the quarter rule lets the test act, so the binomial errs safe (a review). None where fewer
    than two cells can be fitted: ``bins`` times the share outside under 2 (``bins`` = 2 needs
    three quarters of the rows outside), or under 40 rows outside in the fitting half."""
    cells = outside_cells(train, mixture, bins, seed)
    return None if cells is None else cells.short(samples)


# The near-duplicate measures' fields, which diagnose.json carries with an outside_ prefix.
DUPLICATE_FIELDS = ("duplicate_rate", "real_duplicate_rate", "duplicate_quantile", "duplicate_neighbour", "duplicate_z", "duplicate_points")


def outside_duplicates(train: Any, samples: Any, mixture: GaussianMixture, quantile: float, seed: int) -> dict[str, Any] | None:
    """Near duplicates among the samples outside every cluster, calibrated on the training rows
    outside at equal n (:func:`~gancore.diagnostics.diversity.near_duplicates`), as ``outside_``
    fields. Over all the samples, the data's tight clusters set the near-duplicate scale: beside
    two clusters of sd 0.3, the flat rows' 30 % drawn as tight blobs at 100 or 300 places over
    the box scored 2 % near duplicates, the data's own rate, and with every cell's share right
    the run was healthy. None where fewer than :data:`CELL_MIN_ROWS` samples, or twice as many
    training rows, lie outside.

    Columns the training rows hold on a lattice (rounded values) are snapped to it, rows and
    samples alike (:class:`OutsideRows`)."""
    return outside_rows(train, mixture, seed).duplicates(samples, quantile, seed)


@dataclass(frozen=True)
class OutsideRows:
    """The training rows outside every cluster (at most :data:`CELL_MAX_ROWS` rows looked at),
    snapped to the lattices of the columns the rows hold on one: ``lattices`` (column, step,
    origin), for the samples to be snapped alike.

    Rounded rows tie at the lattice's steps, and a continuous generator, the best a
    GAN does on them, does not: with every column of a 2-D file rounded to integers, the 5 %
    threshold fell on one step, the rows' ties there counted a few per cent, and a faithful
    continuous generator's distances under a step counted in full (20-44 % near duplicates
    against 4 %, a review). Snapped alike, the continuous law is the rounded one, and repeats
    stay exact ties, which the measure's k-th neighbour counts (spread over the rounding interval
    instead, 100 blobs beside faithful flat samples were flagged in 1 of 8 draws, and in 8 of 8
    snapped; a review)."""

    mixture: GaussianMixture
    rows: torch.Tensor
    lattices: tuple[tuple[int, float, float], ...]

    def duplicates(self, samples: Any, quantile: float, seed: int) -> dict[str, Any] | None:
        """:func:`outside_duplicates` of ``samples``."""
        from gancore.diagnostics.diversity import PAIRWISE_MAX_POINTS, near_duplicates

        gen = as_rows(samples)
        outside = gen[outside_mask(gen, self.mixture)]
        if min(len(outside), len(self.rows) // 2) < CELL_MIN_ROWS:
            return None
        measured = near_duplicates(_snapped(outside, self.lattices), self.rows, quantile, seed, PAIRWISE_MAX_POINTS)
        return {f"outside_{key}": measured[key] for key in DUPLICATE_FIELDS}


def outside_rows(train: Any, mixture: GaussianMixture, seed: int) -> OutsideRows:
    """The training rows :func:`outside_duplicates` compares samples with."""
    from gancore.lattice import column_lattice

    x = _rows(train, seed, "diagnose/outside-duplicates")
    lattices = [(j, column_lattice(x[:, j])) for j in range(x.shape[1])]
    found = tuple((j, float(lattice[0]), float(lattice[1])) for j, lattice in lattices if lattice is not None)
    return OutsideRows(mixture, _snapped(x[outside_mask(x, mixture)], found), found)


def _snapped(x: torch.Tensor, lattices: tuple[tuple[int, float, float], ...]) -> torch.Tensor:
    """``x`` with each lattice column rounded to its lattice (why: :class:`OutsideRows`)."""
    x = x.clone()
    for j, step, origin in lattices:
        x[:, j] = origin + step * ((x[:, j] - origin) / step).round()
    return x
