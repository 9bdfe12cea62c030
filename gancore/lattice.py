"""Columns recorded on a lattice (rounded values: an age in whole years, a length in millimetres,
a price in cents), spread over their rounding interval for the fit of the data's clusters.

A Gaussian mixture fitted to a rounded column buys likelihood without bound with a component per
lattice line, its variance at the floor: three Gaussian clusters with one column rounded to whole
units (18 values) were 22 clusters, one per line, and a generator drawing those clusters without
rounding covered 13 of the 22 (mode KL 6.8). A rounded value stands for the interval of one step
around it; spread over it (dequantisation, as density models of images do: Theis, van den Oord
and Bethge 2016) by a draw from the law its counts were rounded from, the column is that law
again, and the mixture is fitted to it: 3 clusters. A lattice is also what codes and categories are, whose
values are the data's atoms and its clusters; which one a column is, its counts say
(:func:`rounded_columns`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gancore.gmm_fit import STRAY_SHARE_MAX
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

# A law fitted to a column's counts: (log-likelihood, weights, means, sds, the background's share),
# and where EM starts one: (weights, means, sds, the background's share).
BinnedFit = tuple[float, torch.Tensor, torch.Tensor, torch.Tensor, float]
BinnedStart = tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]


def column_lattice(column: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(step, origin) of the column's lattice, or None (no lattice): the smallest gap between its repeated
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


@dataclass(frozen=True)
class RoundedColumn:
    """A column recorded rounded to a lattice (``origin`` plus whole steps), and the law it was
    rounded from, as its counts say it: a Gaussian mixture in lattice units (``weights``, ``means``,
    ``sds``; :func:`fit_binned_mixture`), and the share ``noise`` of a uniform background over the
    column's values (``span``, lattice units)."""

    column: int
    step: float
    origin: float
    weights: torch.Tensor
    means: torch.Tensor
    sds: torch.Tensor
    noise: float = 0.0
    span: tuple[float, float] = (0.0, 0.0)

    @property
    def background_density(self) -> float:
        """The background's mass per lattice interval."""
        return self.noise / (self.span[1] - self.span[0]) if self.noise else 0.0

    def law_in_units(self, mean: float, std: float) -> list[dict[str, float]]:
        """The law before rounding in the file's units, for a column standardised by ``mean`` and
        ``std``: each Gaussian's weight, mean and standard deviation, and the background's weight
        and range where it has one."""
        scale, at = self.step * std, mean + std * self.origin
        law: list[dict] = [
            {"weight": float(w), "mean": at + scale * float(m), "sd": scale * float(sd)}
            for w, m, sd in zip(self.weights, self.means, self.sds, strict=True)
        ]
        if self.noise:
            law.append({"weight": self.noise, "uniform": [at + scale * self.span[0], at + scale * self.span[1]]})
        return law


def rounded_columns(x: torch.Tensor, max_k: int) -> list[RoundedColumn]:
    """The lattice columns (:func:`column_lattice`) that are rounded measurements, with their law before
    rounding. A lattice column is also what codes and categories are (three codes 10 apart, a 0/1
    flag), whose values are the data's atoms: spread over their intervals they become slabs side
    by side, which the mixture cut into pieces (three codes were 5 to 9 clusters). Which one a
    column is, its counts say, by BIC on them as they were recorded: the categorical law of its
    values (a parameter per value beyond one) against Gaussian mixtures of 1..``max_k``
    components fitted to the counts, each value the interval of a step around it (the
    likelihood of rounded data), each with and without a uniform background over the column's
    values for stray ones (four typos at 99 among ages 1-19 made every mixture lose). 18 values
    rounded from two Gaussians: the mixture's 5 parameters; codes and flags: their categories.
    The law kept is the mixture of least BIC."""
    found = []
    for j in range(x.shape[1]):
        lattice = column_lattice(x[:, j])
        if lattice is None:
            continue
        step, origin = lattice
        units = ((x[:, j] - origin) / step).round()  # each row's lattice point
        law = _smooth_law(units, max_k)
        if law is not None:
            span = (float(units.min()) - 0.5, float(units.max()) + 0.5)
            found.append(RoundedColumn(j, float(step), float(origin), *law, span=span))
    return found


def _smooth_law(units: torch.Tensor, max_k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float] | None:
    """The least-BIC Gaussian mixture of the rounded ``units``' counts, where one beats their
    categorical law; None where none does."""
    points, counts = torch.unique(units, return_counts=True)
    counts = counts.to(units.dtype)
    n = float(counts.sum())
    categorical = -2.0 * float((counts * torch.log(counts / n)).sum()) + (len(points) - 1) * math.log(n)
    best, best_k = math.inf, 0  # the smooth fits' own best, which the search runs past by BINNED_PATIENCE
    least, law = categorical, None
    previous: dict[bool, BinnedFit] = {}
    for k in range(1, min(max_k, len(points) - 1) + 1):
        for background in (False, True):
            tried = [fit_binned_mixture(points, counts, k, background)]
            if k > 1:
                tried.append(fit_binned_mixture(points, counts, k, background, _grown_start(points, counts, previous[background])))
            previous[background] = max(tried, key=lambda f: f[0])
        fits = list(previous.values())
        # a background of STRAY_SHARE_MAX or more is a flat column's own law (a uniform rating
        # 1-10), whose slabs the clusters' mixture cut in pieces (8 clusters for 2)
        scored = [(-2.0 * f[0] + (3 * k - 1 + (f[4] > 0)) * math.log(n), f) for f in fits if f[4] < STRAY_SHARE_MAX]
        smooth, (_, weights, means, sds, noise) = min(scored, key=lambda pair: pair[0])
        if smooth < best:
            best, best_k = smooth, k
        if smooth < least:
            least, law = smooth, (weights, means, sds, noise)
        if k - best_k >= BINNED_PATIENCE:
            break
    return law


def _grown_start(points: torch.Tensor, counts: torch.Tensor, fit: BinnedFit) -> BinnedStart:
    """A start of one component more than ``fit``: at the value the fit explains least (the most
    rows times log of counted over expected rows, as the clusters' grow_start), with its excess
    rows as weight and half a step as sd. Quantile starts put every component in the bulk, and a
    code on 1 % of rows 3 sd off it (-1 among ages near 40) was never a component of its own."""
    _, weights, means, sds, noise = fit
    n = counts.sum()
    expected = n * torch.logsumexp(_point_joint(points, weights, means, sds, noise)[0], 1).exp()
    gain = counts * torch.log(counts / expected.clamp_min(1e-300))
    at = int(gain.argmax())
    share = min(max(float((counts[at] - expected[at]) / n), 1 / float(n)), 0.5)
    half = torch.tensor([0.5], dtype=points.dtype)
    return (
        torch.cat([weights * (1 - share), weights.new_tensor([share])]),
        torch.cat([means, points[at : at + 1]]),
        torch.cat([sds, half]),
        noise,
    )


def fit_binned_mixture(
    points: torch.Tensor,
    counts: torch.Tensor,
    k: int,
    background: bool = False,
    start: BinnedStart | None = None,
) -> BinnedFit:
    """A ``k``-Gaussian mixture fitted to ``counts`` of rows rounded to the integers ``points``
    by EM for grouped data (McLachlan and Jones 1988): each point the interval of +- 1/2 around
    it, the E-step's moments those of each Gaussian truncated to it; started from the counts'
    quantiles. ``background``: with a uniform component over the points' range, whose share EM
    fits from a row's worth (mclust's noise component, for grouped data). (log-likelihood,
    weights, means, standard deviations, the background's share) of the law before rounding;
    the weights sum to 1 less the background's share. ``start``: where to start instead
    (:func:`_grown_start`)."""
    n = counts.sum()
    if start is None:
        weights, means, sds = _quantile_start(points, counts, k)
        noise = float(1 / n) if background else 0.0
    else:
        weights, means, sds, start_noise = start
        noise = max(start_noise, float(1 / n)) if background else 0.0
        weights = weights / weights.sum() * (1 - noise)
    total = -math.inf
    for _ in range(BINNED_EM_ITERS):
        joint, a, b, mass = _point_joint(points, weights, means, sds, noise)
        log_point = torch.logsumexp(joint, 1, keepdim=True)
        previous, total = total, float((counts * log_point[:, 0]).sum())
        if total - previous < 1e-9 * n:
            break
        share = counts[:, None] * torch.exp(joint - log_point)  # rows of each point per component
        if background:
            noise, share = max(float(share[:, k].sum() / n), 1e-300), share[:, :k]  # a share that underflows stays a log's worth
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
        means, weights = new_means, rows / n
    return total, weights, means, sds, noise


def _quantile_start(points: torch.Tensor, counts: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weights, means, sds) where EM starts by default: equal weights, means at the counts'
    quantiles, and sds of the counts' spread over k (half a step at least)."""
    n = counts.sum()
    cumulative = counts.cumsum(0) / n
    picks = torch.searchsorted(cumulative, (torch.arange(k, dtype=points.dtype) + 0.5) / k).clamp_max(len(points) - 1).tolist()
    for i in range(1, k):
        # quantiles on one heavy value are one start, and EM keeps equal components equal (72 % of
        # the rows on one value gave two components at 0 where the counts had 0 and 10): a repeated
        # start moves to the next value up not yet a start (down at the top), never far off to a
        # stray value as a farthest-point rule did (a typo at 99 among ages)
        if picks[i] in picks[:i]:
            free = [j for j in range(len(points)) if j not in picks[:i]]
            picks[i] = min((j for j in free if j > picks[i]), default=max(j for j in free if j < picks[i]))
    means = points[picks]
    spread = float(((points - (counts * points).sum() / n) ** 2 * counts).sum() / n) ** 0.5
    sds = torch.full((k,), max(spread / k, 0.5), dtype=points.dtype)
    return torch.full((k,), 1.0 / k, dtype=points.dtype), means, sds


def _point_joint(
    points: torch.Tensor, weights: torch.Tensor, means: torch.Tensor, sds: torch.Tensor, noise: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each point's log(weight x mass) per Gaussian over its interval of +- 1/2 [P, k], with the
    background's as a last column where it has a share (its mass per point 1 / the points'
    range), and the standardised interval ends and masses it took them from."""
    a, b = (points[:, None] - 0.5 - means) / sds, (points[:, None] + 0.5 - means) / sds
    mass = _standard_mass(a, b).clamp_min(1e-300)
    joint = torch.log(weights) + torch.log(mass)
    if noise > 0:
        width = float(points[-1] - points[0] + 1)
        joint = torch.cat([joint, torch.full_like(joint[:, :1], math.log(noise / width))], 1)
    return joint, a, b, mass


def dequantized(x: torch.Tensor, columns: list[RoundedColumn], seed: int) -> torch.Tensor:
    """``x`` with each rounded column's values spread over their rounding interval (+- half a
    step), drawn from the column's law before rounding truncated to it (seeded): the column as it
    was before rounding, in law. A uniform draw over the interval is that only where the step is
    small beside the law's spread; where it is not (clusters of sd 0.4 rounded to whole units),
    uniform spreading made flat-topped slabs, which the mixture cut into pieces (14 clusters for
    3). A row off the lattice (at most :data:`OFF_LATTICE_SHARE` of them) is drawn in the interval
    of its nearest lattice point. ``x`` itself where no column is rounded."""
    if not columns:
        return x
    spread = x.clone()
    gen = generator(seed, "points/dequantize")
    for c in columns:
        units = ((x[:, c.column] - c.origin) / c.step).round()
        draw = _truncated_draw(units - 0.5, units + 0.5, c.weights, c.means, c.sds, gen, c.background_density)
        spread[:, c.column] = c.origin + c.step * draw
    return spread


def _truncated_draw(
    lower: torch.Tensor,
    upper: torch.Tensor,
    weights: torch.Tensor,
    means: torch.Tensor,
    sds: torch.Tensor,
    gen: torch.Generator,
    background: float = 0.0,
) -> torch.Tensor:
    """A draw per row from the Gaussian mixture (and a uniform ``background`` of that density)
    truncated to [lower, upper]: a component in proportion to its weight times its mass there,
    then the inverse of its distribution function over the interval (:func:`_lower_side`), or a
    uniform draw for the background."""
    a, b, flip = _lower_side((lower[:, None] - means) / sds, (upper[:, None] - means) / sds)
    joint = torch.log(weights) + torch.log(_cdf(b) - _cdf(a))
    prior = torch.log(weights)
    if background > 0:
        joint = torch.cat([joint, torch.log(background * (upper - lower))[:, None]], 1)
        prior = torch.cat([prior, prior.new_tensor([math.log(background)])])
    joint = torch.where(torch.isfinite(joint).any(1, keepdim=True), joint, prior)  # out of every reach
    u = torch.rand((len(lower), 2), generator=gen, dtype=lower.dtype)
    pick = (torch.softmax(joint, 1).cumsum(1) < u[:, :1]).sum(1).clamp_max(joint.shape[1] - 1)
    gaussian = pick.clamp_max(len(weights) - 1)
    rows = torch.arange(len(lower))
    a, b, flip = a[rows, gaussian], b[rows, gaussian], flip[rows, gaussian]
    low, high = _cdf(a), _cdf(b)
    z = torch.special.ndtri(low + u[:, 1] * (high - low)).clamp(a, b)
    # an interval out of every component's reach (mass 0 in float64): its midpoint
    z = torch.where(torch.isfinite(z) & (high > low), z, (a + b) / 2)
    z = torch.where(flip, -z, z)
    draw = means[gaussian] + sds[gaussian] * z
    return torch.where(pick == len(weights), lower + u[:, 1] * (upper - lower), draw)


def _lower_side(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The standard interval [a, b] on the low side of 0 (mirrored where it lies above: ``flip``):
    there its distribution function keeps its digits far out (:func:`_cdf`), where above it
    rounds to 1 in float64 from 8.3 sd on."""
    flip = (a + b) > 0
    return torch.where(flip, -b, a), torch.where(flip, -a, b), flip


def _cdf(z: torch.Tensor) -> torch.Tensor:
    """The standard normal distribution function through its logarithm: ndtr itself loses its
    digits below -8 (ndtr(-8.5) is 0; this, 9.5e-18) and keeps them to 1e-300 (-37 sd)."""
    return torch.exp(torch.special.log_ndtr(z))


def _standard_mass(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The standard normal's mass on [a, b], taken on the low side (:func:`_lower_side`)."""
    low, high, _ = _lower_side(a, b)
    return _cdf(high) - _cdf(low)
