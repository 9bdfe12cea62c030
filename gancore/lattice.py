"""Columns recorded on a lattice (rounded values: an age in whole years, a rating, a price in
cents), spread over their rounding interval for the fit of the data's clusters.

A Gaussian mixture fitted to a rounded column buys likelihood without bound with a component per
lattice line, its variance at the floor: three Gaussian clusters with one column rounded to whole
units (18 values) were 22 clusters, one per line, and a generator drawing those clusters without
rounding covered 13 of the 22 (mode KL 6.8). A rounded value stands for the interval of one step
around it; spread uniformly over it (uniform dequantisation, as density models of images do:
Theis, van den Oord and Bethge 2016), the column is the smooth density it was rounded from, and
the mixture is fitted to that: 3 clusters. A lattice is also what codes and categories are, whose
values are the data's atoms and its clusters; which one a column is, its counts say
(:func:`rounded_steps`).
"""

from __future__ import annotations

import math

import torch

from gancore.cluster_selection import fit_mixture, select_clusters
from gancore.seeds import generator

# Gaps between a column's distinct values that are whole multiples of the smallest one to this
# relative tolerance (float64 rounding of standardised values is 1e-15 of it) make a lattice.
LATTICE_TOLERANCE = 1e-6


def lattice_steps(x: torch.Tensor) -> torch.Tensor:
    """Each column's lattice step [d], 0 where it has none: the smallest gap between the column's
    distinct values, where every gap is a whole multiple of it and values repeat (at most half
    as many distinct values as rows: a continuous column's values are all distinct)."""
    steps = torch.zeros(x.shape[1], dtype=x.dtype)
    for j in range(x.shape[1]):
        values = torch.unique(x[:, j])
        if len(values) < 2 or 2 * len(values) > len(x):
            continue
        gaps = values.diff()
        multiples = gaps / gaps.min()
        if float((multiples - multiples.round()).abs().max()) <= LATTICE_TOLERANCE:
            steps[j] = gaps.min()
    return steps


def rounded_steps(x: torch.Tensor, max_k: int, seed: int, rows: int) -> torch.Tensor:
    """The :func:`lattice_steps` of the columns that are rounded measurements, 0 for the others.
    A lattice column is also what codes and categories are (three codes 10 apart, a 0/1 flag),
    whose values are the data's atoms: spread over their intervals they become slabs side by
    side, which the mixture cut into pieces (three codes were 5 to 9 clusters). Which one a
    column is, its counts say, by BIC on them as they were recorded (counts of values, the
    likelihood of rounded data): the categorical law of its values (a parameter per value
    beyond one) against a Gaussian mixture fitted to the column spread over its intervals, by
    the probability it puts on each value's interval (Phi differences). 18 values rounded from
    two Gaussians: the mixture's 5 parameters; codes and flags: their categories."""
    steps = lattice_steps(x)
    for j in steps.nonzero()[:, 0].tolist():
        if not _smooth_beats_categories(x[:, j], float(steps[j]), max_k, seed, rows):
            steps[j] = 0.0
    return steps


def _smooth_beats_categories(column: torch.Tensor, step: float, max_k: int, seed: int, rows: int) -> bool:
    values, counts = torch.unique(column, return_counts=True)
    n = len(column)
    counts = counts.to(column.dtype)
    categorical_bic = -2.0 * float((counts * torch.log(counts / n)).sum()) + (len(values) - 1) * math.log(n)
    spread = dequantized(column[:, None], torch.tensor([step], dtype=column.dtype), seed)
    pick = torch.randperm(n, generator=generator(seed, "lattice/select"))[:rows]
    selection = select_clusters(spread[pick], max_k, seed, "lattice/select")
    gmm = fit_mixture(spread, selection.k, seed, 1, "lattice/fit", selection.covariance, selection.mixture)
    # Rounding added a variance of step^2 / 12 to the law (Sheppard's correction), and the spread
    # another: taken back off, the intervals' probabilities are those of the law before rounding.
    sd = (gmm.variances[:, 0] - step**2 / 6).clamp_min(1e-12 * step**2).sqrt()
    upper, lower = ((values[:, None] + side * step / 2 - gmm.means[None, :, 0]) / sd[None] for side in (1, -1))
    mass = (gmm.weights[None] * (torch.special.ndtr(upper) - torch.special.ndtr(lower))).sum(1)
    if gmm.noise is not None:  # the uniform background's share of each interval
        mass = mass + gmm.noise * step * math.exp(gmm.noise_log_density)
    smooth_bic = -2.0 * float((counts * torch.log(mass.clamp_min(1e-300))).sum()) + gmm.parameters * math.log(n)
    return smooth_bic < categorical_bic


def dequantized(x: torch.Tensor, steps: torch.Tensor, seed: int) -> torch.Tensor:
    """``x`` with each lattice column (``steps`` > 0) spread uniformly over its rounding interval,
    +- half a step around each value (seeded); ``x`` itself where no column is a lattice."""
    if not bool((steps > 0).any()):
        return x
    noise = torch.rand(x.shape, generator=generator(seed, "points/dequantize"), dtype=x.dtype) - 0.5
    return x + noise * steps.to(x.dtype)
