"""The modes of a fitted Gaussian mixture: its components grouped into clusters of one mode each.

BIC counts the Gaussian components a cluster's shape needs, not the clusters: a skewed, heavy
tailed or flat cluster takes several (three gamma-shaped clusters were 14 to 17 components, three
uniform squares 19 to 20, one Student-t cluster 5), and each component was called a mode. Two
steps group them, neither with a tuned threshold:

1. **The fitted density's modes** (modal EM: Li, Ray and Lindsay 2007). A hill climb on the
   mixture's density from each component's mean; components whose climbs end on the same peak
   (no dip in the density between the ends) are one cluster. This joins the concentric pieces of
   a heavy tail and the overlapping pieces of a skewed cluster.
2. **No dip in the data** (Hennig 2010's ``dipuni``, with Hartigan and Hartigan's dip test).
   Pieces that tile a flat or curved cluster leave small bumps in the fitted density that the
   data do not show. Two clusters are joined when the dip test finds their points unimodal at the
   5 % level, projected on the direction that separates them best (Fisher's), the larger drawn
   down to the smaller's size (a small cluster beside a large one is a small bump in their union,
   which the test would miss), the least bimodal pair first. Only clusters of
   :data:`~gancore.gaussian_mixture.POINT_MASS_ROWS` rows or more are tested: from fewer the test
   cannot tell two clusters apart, and BIC's answer stands.

Two round Gaussians of 2,000 rows each, 2.5 sigma apart (their density dips by an eighth between
the peaks), were one cluster on every draw; 3 sigma apart (a dip of a third), two.
"""

from __future__ import annotations

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


def _union(groups: torch.Tensor, keep: int, drop: int) -> None:
    groups[groups == groups[drop]] = groups[keep]


def _dip_p_value(a: torch.Tensor, b: torch.Tensor, gen: torch.Generator) -> float:
    """The dip test's p-value on two clusters' rows, the larger drawn down to the smaller's size,
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
                _union(groups, i, j)
    by_peaks = len(torch.unique(groups))
    component = gmm.predict(x)
    component[gmm.outliers(x)] = -1
    gen = generator(seed, "modes/merge")
    while True:
        ids = [int(g) for g in torch.unique(groups)]
        members = {g: x[torch.isin(component, (groups == g).nonzero()[:, 0])] for g in ids}
        best: tuple[float, int, int] | None = None
        for n, a in enumerate(ids):
            for b in ids[n + 1 :]:
                if min(len(members[a]), len(members[b])) < POINT_MASS_ROWS:
                    continue
                p = _dip_p_value(members[a], members[b], gen)
                if p > DIP_ALPHA and (best is None or p > best[0]):
                    best = (p, a, b)
        if best is None:
            break
        _union(groups, best[1], best[2])
    order: dict[int, int] = {}
    groups = torch.tensor([order.setdefault(int(g), len(order)) for g in groups], dtype=torch.long)
    record = {
        "components": k,
        "clusters": int(groups.max()) + 1,
        "after_density_peaks": by_peaks,
        "definition": "the mixture's components grouped into clusters: those whose hill climbs on the fitted density end "
        f"on one peak (modal EM), then clusters whose rows the dip test finds unimodal at {DIP_ALPHA:.0%} on Fisher's "
        f"direction (each of {POINT_MASS_ROWS} rows or more, the larger drawn down to the smaller's size)",
    }
    return groups, record
