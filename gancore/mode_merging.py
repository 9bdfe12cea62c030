"""The modes of a fitted Gaussian mixture: its components grouped into clusters of one mode each.

BIC counts the Gaussian components a cluster's shape needs, not the clusters: a skewed, heavy
tailed or flat cluster takes several (three gamma-shaped clusters were 14 to 17 components, three
uniform squares 19 to 20, one Student-t cluster 5), and each component was called a mode. Two
steps group them, with no threshold fitted to any data set:

1. **The fitted density's modes** (modal EM: Li, Ray and Lindsay 2007). A hill climb on the
   mixture's density from each component's mean; components whose climbs end on the same peak
   (no dip in the density between the ends) are one cluster. This joins the concentric pieces of
   a heavy tail and the overlapping pieces of a skewed cluster.
2. **No dip in the data** (after Hennig 2010's ``dipuni``, with Hartigan and Hartigan's dip
   test). Pieces that tile a flat or curved cluster leave small bumps in the fitted density that
   the data do not show. Two clusters are joined when the dip test finds unimodal, at the 5 %
   level, the halves of their rows that face each other (each cluster's rows where the other's
   density is highest), the larger half drawn down to the smaller's size (a small cluster beside
   a large one is a small bump in their union, which the test would miss), projected on Fisher's
   direction; the least bimodal pair first. The test weighs mass, not sharpness: a tight cluster
   on a broad one's shoulder (250 rows at sd 0.05 on 4,750 at sd 1) looks unimodal to it. So it is
   asked only where the fitted density between the two peaks stays above
   :data:`SADDLE_MIN` of the lighter cluster's peak: a deeper dip is a separation in the data
   whatever the test says. Only clusters of :data:`~gancore.gaussian_mixture.POINT_MASS_ROWS`
   rows or more are tested: from fewer the test cannot tell two clusters apart, and BIC's answer
   stands.

Two round Gaussians of 2,000 rows each, 2.5 sigma apart (their density dips by an eighth between
the peaks), were one or two clusters by the draw; 3 sigma apart (a dip of a third), two.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from gancore.gaussian_mixture import POINT_MASS_ROWS, GaussianMixture
from gancore.seeds import generator

DIP_ALPHA = 0.05  # the dip test's conventional level (Hennig 2010)
DIP_ROWS_MAX = 1000  # rows per cluster a test draws: the test's power at 2 x 1000 rows is ample, its cost not
CLIMB_ITERS = 1000
CLIMB_TOL = 1e-10  # in the data's standardised units
SEGMENT_POINTS = 64  # where the density is read between two climbs' ends
# The deepest dip the data's test may overrule, relative to the lighter cluster's peak: that of two
# equal round Gaussians 4 sigma apart (2 exp(-2) / (1 + exp(-8)) = 0.27), two clusters by any
# reading. The bumps a fit left on held-out flat clusters dipped to 0.45-0.77 of theirs.
SADDLE_MIN = 2 * math.exp(-2.0) / (1 + math.exp(-8.0))


def _precisions(gmm: GaussianMixture) -> torch.Tensor:
    if gmm.covariances is None:
        return torch.diag_embed(1.0 / gmm.variances)
    return torch.cholesky_inverse(torch.linalg.cholesky(gmm.covariances))


def density_peaks(gmm: GaussianMixture) -> torch.Tensor:
    """Where a hill climb on the mixture's density from each component's mean ends: [k, d]. The
    fixed point x <- (sum_j p_j(x) P_j)^-1 sum_j p_j(x) P_j mu_j, with P_j the precisions and p_j
    the posteriors (Carreira-Perpinan 2000), rises at every step."""
    precisions = _precisions(gmm)
    pulls = (precisions @ gmm.means[:, :, None])[:, :, 0]
    x = gmm.means.clone()
    for _ in range(CLIMB_ITERS):
        posterior = torch.softmax(gmm.log_joint(x), 1)
        step = torch.linalg.solve(torch.einsum("mk,kij->mij", posterior, precisions), (posterior @ pulls)[:, :, None])[:, :, 0]
        done = float((step - x).abs().max()) < CLIMB_TOL
        x = step
        if done:
            break
    return x


def _log_density(gmm: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(gmm.log_joint(x), 1)


def _same_peak(gmm: GaussianMixture, a: torch.Tensor, b: torch.Tensor) -> bool:
    """No dip in the density on the segment between two climbs' ends (ends of one peak that
    stopped apart in a flat top)."""
    t = torch.linspace(0.0, 1.0, SEGMENT_POINTS, dtype=a.dtype)[:, None]
    along = _log_density(gmm, a * (1 - t) + b * t)
    return bool(along.min() >= torch.minimum(along[0], along[-1]) - 1e-9)


def _join(groups: torch.Tensor, keep: int, drop: int) -> None:
    """Cluster ``drop``'s components into cluster ``keep`` (labels, not component indices)."""
    groups[groups == drop] = keep


def _saddle_ratio(gmm: GaussianMixture, peaks: torch.Tensor, groups: torch.Tensor, a: int, b: int) -> float:
    """The fitted density's lowest point between clusters ``a`` and ``b``, relative to the peak of
    the lighter one (by weight), on the straight path between their nearest peaks (the highest
    such ratio over their peaks' pairs)."""
    light_is_a = float(gmm.weights[groups == a].sum()) <= float(gmm.weights[groups == b].sum())
    t = torch.linspace(0.0, 1.0, SEGMENT_POINTS, dtype=peaks.dtype)[:, None]
    best = 0.0
    for i in (groups == a).nonzero()[:, 0]:
        for j in (groups == b).nonzero()[:, 0]:
            along = _log_density(gmm, peaks[i] * (1 - t) + peaks[j] * t)
            light = along[0] if light_is_a else along[-1]
            best = max(best, math.exp(min(0.0, float(along.min() - light))))
    return best


def _facing(rows: torch.Tensor, other_density: torch.Tensor) -> torch.Tensor:
    """The half of a cluster's ``rows`` where the other cluster's density is highest."""
    if not len(rows):
        return rows
    score = other_density[rows]
    return rows[score >= score.median()]


def _dip_p_value(a: torch.Tensor, b: torch.Tensor, gen: torch.Generator) -> float:
    """The dip test's p-value on two sets of rows, the larger drawn down to the smaller's size,
    projected on Fisher's direction (the pooled covariance's inverse times the means' difference)."""
    import diptest

    rows = min(len(a), len(b), DIP_ROWS_MAX)
    a = a[torch.randperm(len(a), generator=gen)[:rows]]
    b = b[torch.randperm(len(b), generator=gen)[:rows]]
    d = a.shape[1]
    pooled = torch.cov(a.T).reshape(d, d) + torch.cov(b.T).reshape(d, d)
    ridge = 1e-9 * float(torch.diagonal(pooled).mean().clamp_min(1e-300)) * torch.eye(d, dtype=a.dtype)
    direction = torch.linalg.lstsq(pooled + ridge, (b.mean(0) - a.mean(0))[:, None]).solution[:, 0]
    projected = (torch.cat([a, b]) @ direction).numpy().astype(np.float64)
    return float(diptest.diptest(projected)[1])


def _unimodal_p_value(
    gmm: GaussianMixture,
    x: torch.Tensor,
    joint: torch.Tensor,
    peaks: torch.Tensor,
    groups: torch.Tensor,
    rows: dict[int, torch.Tensor],
    a: int,
    b: int,
    gen: torch.Generator,
) -> float:
    """The dip test's p-value on clusters ``a`` and ``b``'s facing rows; 0 (kept apart) where the
    fitted density dips below :data:`SADDLE_MIN` between them, or a side has too few rows."""
    if _saddle_ratio(gmm, peaks, groups, a, b) < SADDLE_MIN:
        return 0.0
    facing_a = _facing(rows[a], torch.logsumexp(joint[:, groups == b], 1))
    facing_b = _facing(rows[b], torch.logsumexp(joint[:, groups == a], 1))
    if min(len(facing_a), len(facing_b)) < POINT_MASS_ROWS:
        return 0.0
    return _dip_p_value(x[facing_a], x[facing_b], gen)


def merge_components(gmm: GaussianMixture, x: torch.Tensor, seed: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """(each component's cluster [k], 0..m-1 in order of first component; a record) for the
    mixture fitted to ``x`` (see the module docstring). The background's outliers take no part."""
    x = x.double()
    k = gmm.k
    groups = torch.arange(k)
    peaks = density_peaks(gmm)
    for i in range(k):
        for j in range(i + 1, k):
            if groups[i] != groups[j] and _same_peak(gmm, peaks[i], peaks[j]):
                _join(groups, int(groups[i]), int(groups[j]))
    by_peaks = len(torch.unique(groups))
    joint = gmm.log_joint(x)
    component = joint.argmax(1)
    component[gmm.outliers(x)] = -1
    gen = generator(seed, "modes/merge")
    tested: dict[tuple[int, int], float] = {}  # a pair's p-value (0 where not tested), until either cluster grows
    while True:
        ids = [int(g) for g in torch.unique(groups)]
        rows = {g: torch.isin(component, (groups == g).nonzero()[:, 0]).nonzero()[:, 0] for g in ids}
        for n, a in enumerate(ids):
            for b in ids[n + 1 :]:
                if (a, b) not in tested:
                    tested[a, b] = _unimodal_p_value(gmm, x, joint, peaks, groups, rows, a, b, gen)
        best = max(tested, key=lambda pair: tested[pair], default=None)
        if best is None or tested[best] <= DIP_ALPHA:
            break
        _join(groups, *best)
        tested = {pair: p for pair, p in tested.items() if not set(pair) & set(best)}
    order: dict[int, int] = {}
    groups = torch.tensor([order.setdefault(int(g), len(order)) for g in groups], dtype=torch.long)
    record = {
        "components": k,
        "clusters": int(groups.max()) + 1,
        "after_density_peaks": by_peaks,
        "definition": "the mixture's components grouped into clusters: those whose hill climbs on the fitted density end "
        f"on one peak (modal EM), then clusters whose facing rows the dip test finds unimodal at {DIP_ALPHA:.0%} on "
        f"Fisher's direction (each of {POINT_MASS_ROWS} rows or more, the larger drawn down to the smaller's size), where "
        f"the fitted density between them stays above {SADDLE_MIN:.2f} of the lighter one's peak",
    }
    return groups, record
