"""Columns recorded on a lattice (rounded values: an age in whole years, a length in millimetres,
a price in cents), spread over their rounding interval for the fit of the data's clusters.

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

from gancore.seeds import generator

# A row lies on its column's lattice within this share of a step (a float32 file's values carry
# 6e-8 of their size: 0.006 of a step of 0.01 at 1,000); all but OFF_LATTICE_SHARE of the rows
# must (one odd value in 20,000 turned the rule off, and a cluster per line back on).
LATTICE_TOLERANCE = 0.01
OFF_LATTICE_SHARE = 0.01
# Gaps between repeated values below this share of the column's range are one value stored twice.
GAP_FLOOR = 1e-6
# EM steps of a mixture fitted to a column's counts, and the counts past the best k tried.
BINNED_EM_ITERS = 200
BINNED_PATIENCE = 3


def lattice_steps(x: torch.Tensor) -> torch.Tensor:
    """Each column's lattice step [d], 0 where it has none (:func:`_lattice`)."""
    steps = torch.zeros(x.shape[1], dtype=x.dtype)
    for j in range(x.shape[1]):
        lattice = _lattice(x[:, j])
        if lattice is not None:
            steps[j] = lattice[0]
    return steps


def _lattice(column: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(step, origin) of the column's lattice, or None: the smallest gap between its repeated
    values, where all but :data:`OFF_LATTICE_SHARE` of its rows lie on the lattice of that step
    through its most frequent value, the origin (within :data:`LATTICE_TOLERANCE` of a step), and
    values repeat (at most half as many distinct values as rows: a continuous column's values are
    all distinct)."""
    values, counts = torch.unique(column, return_counts=True)
    if len(values) < 2 or 2 * len(values) > len(column):
        return None
    gaps = values[counts >= 2].diff()
    gaps = gaps[gaps > GAP_FLOOR * float(values[-1] - values[0])]
    if len(gaps) == 0:
        return None
    step, origin = gaps.min(), values[counts.argmax()]
    units = (column - origin) / step
    if float(((units - units.round()).abs() > LATTICE_TOLERANCE).double().mean()) > OFF_LATTICE_SHARE:
        return None
    return step, origin


def rounded_steps(x: torch.Tensor, max_k: int) -> torch.Tensor:
    """The :func:`lattice_steps` of the columns that are rounded measurements, 0 for the others.
    A lattice column is also what codes and categories are (three codes 10 apart, a 0/1 flag),
    whose values are the data's atoms: spread over their intervals they become slabs side by
    side, which the mixture cut into pieces (three codes were 5 to 9 clusters). Which one a
    column is, its counts say, by BIC on them as they were recorded: the categorical law of its
    values (a parameter per value beyond one) against Gaussian mixtures of 1..``max_k``
    components fitted to the counts, each value the interval of a step around it (the
    likelihood of rounded data). 18 values rounded from two Gaussians: the mixture's 5
    parameters; codes and flags: their categories."""
    steps = torch.zeros(x.shape[1], dtype=x.dtype)
    for j in range(x.shape[1]):
        lattice = _lattice(x[:, j])
        if lattice is None:
            continue
        step, origin = lattice
        if _smooth_beats_categories(((x[:, j] - origin) / step).round(), max_k):  # each row's lattice point
            steps[j] = step
    return steps


def _smooth_beats_categories(units: torch.Tensor, max_k: int) -> bool:
    points, counts = torch.unique(units, return_counts=True)
    counts = counts.to(units.dtype)
    n = float(counts.sum())
    categorical = -2.0 * float((counts * torch.log(counts / n)).sum()) + (len(points) - 1) * math.log(n)
    best, best_k = math.inf, 0
    for k in range(1, min(max_k, len(points) - 1) + 1):
        smooth = -2.0 * fit_binned_mixture(points, counts, k)[0] + (3 * k - 1) * math.log(n)
        if smooth < best:
            best, best_k = smooth, k
        if smooth < categorical:
            return True
        if k - best_k >= BINNED_PATIENCE:
            break
    return False


def fit_binned_mixture(points: torch.Tensor, counts: torch.Tensor, k: int) -> tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A ``k``-Gaussian mixture fitted to ``counts`` of rows rounded to the integers ``points``
    by EM for grouped data (McLachlan and Jones 1988): each point the interval of +- 1/2 around
    it, the E-step's moments those of each Gaussian truncated to it; started from the counts'
    quantiles. (log-likelihood, weights, means, standard deviations) of the law before rounding."""
    n = counts.sum()
    cumulative = counts.cumsum(0) / n
    means = points[torch.searchsorted(cumulative, (torch.arange(k, dtype=points.dtype) + 0.5) / k).clamp_max(len(points) - 1)]
    spread = float(((points - (counts * points).sum() / n) ** 2 * counts).sum() / n) ** 0.5
    sds = torch.full((k,), max(spread / k, 0.5), dtype=points.dtype)
    weights = torch.full((k,), 1.0 / k, dtype=points.dtype)
    lower, upper = points[:, None] - 0.5, points[:, None] + 0.5
    total = -math.inf
    for _ in range(BINNED_EM_ITERS):
        a, b = (lower - means) / sds, (upper - means) / sds
        mass = (torch.special.ndtr(b) - torch.special.ndtr(a)).clamp_min(1e-300)
        joint = torch.log(weights) + torch.log(mass)
        log_point = torch.logsumexp(joint, 1, keepdim=True)
        previous, total = total, float((counts * log_point[:, 0]).sum())
        if total - previous < 1e-9 * n:
            break
        share = counts[:, None] * torch.exp(joint - log_point)  # rows of each point per component
        pdf_a, pdf_b = torch.exp(-0.5 * a**2) / math.sqrt(2 * math.pi), torch.exp(-0.5 * b**2) / math.sqrt(2 * math.pi)
        # a Gaussian truncated to the interval: its mean, and its second moment about the Gaussian's
        first = means + sds * (pdf_a - pdf_b) / mass
        second = sds**2 * (1 + (a * pdf_a - b * pdf_b) / mass)
        # where the interval is all but out of a component's reach, its midpoint serves
        far = mass < 1e-200
        first = torch.where(far, points[:, None].expand_as(first), first)
        second = torch.where(far, (points[:, None] - means) ** 2 + 1 / 12, second)
        rows = share.sum(0).clamp_min(1e-300)
        new_means = (share * first).sum(0) / rows
        raw = second - (first - means) ** 2 + (first - new_means) ** 2  # its variance, plus its mean's offset from the new mean
        sds = ((share * raw).sum(0) / rows).clamp_min(1e-6).sqrt()
        means, weights = new_means, rows / rows.sum()
    return total, weights, means, sds


def dequantized(x: torch.Tensor, steps: torch.Tensor, seed: int) -> torch.Tensor:
    """``x`` with each lattice column (``steps`` > 0) spread uniformly over its rounding interval,
    +- half a step around each value (seeded); ``x`` itself where no column is a lattice."""
    if not bool((steps > 0).any()):
        return x
    noise = torch.rand(x.shape, generator=generator(seed, "points/dequantize"), dtype=x.dtype) - 0.5
    return x + noise * steps.to(x.dtype)
