"""The modes of a fitted Gaussian mixture: its components grouped by the peak of the fitted
density they lie under.

BIC counts the Gaussian components a cluster's shape needs, not the clusters: a skewed or heavy
tailed cluster takes several (three gamma-shaped clusters were 14 to 17 components, one
Student-t cluster 5, one lognormal 4 to 5), and each component was called a mode. A mode is a
peak of the density (Li, Ray and Lindsay 2007, "modal EM"): a hill climb on the mixture's density
from each component's mean, and components whose climbs end on the same peak are one cluster.
This joins the concentric pieces of a heavy tail and the overlapping pieces of a skewed cluster.
Two clusters whose climbs end on peaks the fitted density holds apart by a dip stay two, however
few their rows: a tight cluster on a broad one's shoulder, a rare cluster of 8 rows, two round
clusters 3 sigma apart. No threshold: the climb's tolerance is far below the data's scale (a dip
of under 1e-9 in log density is none). A peak no component's climb reaches is no cluster.

What it leaves: a flat or curved cluster (a uniform square, a banana) tiled by Gaussian pieces
has a bump on each in the fitted density, and each bump stays a mode. A data-side test (the dip
test on the rows of two neighbouring clusters, after Hennig 2010) joined the tiles, but also
joined real clusters wherever it lacked power (two Gaussians 3 sigma apart at 150-300 rows each,
a dense cluster on a lighter broad one's shoulder, two clusters with a broad component between
them), and for a collapse diagnosis a missed mode is the worse error: a tile counted as a mode
only asks the generator to cover that part of the square too.
"""

from __future__ import annotations

from typing import Any

import torch

from gancore.gaussian_mixture import GaussianMixture

CLIMB_ITERS = 1000
CLIMB_TOL = 1e-10  # in the data's standardised units
SEGMENT_POINTS = 64  # where the density is read between two climbs' ends
# A climb that stops on a saddle point (a component's mean exactly between two peaks) is nudged
# off it by this fraction of the narrowest component's sd, along each axis, and goes on.
NUDGE = 1e-3


def _climb(gmm: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """Hill climbs on the mixture's density from the rows of ``x``: the fixed point
    x <- (sum_j p_j(x) P_j)^-1 sum_j p_j(x) P_j mu_j, with P_j the precisions and p_j the
    posteriors (Carreira-Perpinan 2000), which rises at every step."""
    if gmm.covariances is None:
        precisions = 1.0 / gmm.variances  # [k, d]: the solve is per coordinate
        pulls = gmm.means * precisions
    else:
        precisions = torch.cholesky_inverse(torch.linalg.cholesky(gmm.covariances))
        pulls = (precisions @ gmm.means[:, :, None])[:, :, 0]
    for _ in range(CLIMB_ITERS):
        posterior = torch.softmax(gmm.log_joint(x), 1)
        if gmm.covariances is None:
            step = (posterior @ pulls) / (posterior @ precisions)
        else:
            weighted = torch.einsum("mk,kij->mij", posterior, precisions)
            step = torch.linalg.solve(weighted, (posterior @ pulls)[:, :, None])[:, :, 0]
        done = float((step - x).abs().max()) < CLIMB_TOL
        x = step
        if done:
            break
    return x


def density_peaks(gmm: GaussianMixture) -> torch.Tensor:
    """Where a hill climb on the mixture's density from each component's mean ends: [k, d]. Each
    end is climbed again from points nudged off it, both ways along each axis, and the highest end
    kept: a fixed point may be a saddle (three components in a row, the middle one wide), where
    the climb stops and two peaks would seem joined through it. A saddle's way down has a part
    along some axis, whatever its direction."""
    ends = _climb(gmm, gmm.means.clone())
    k, d = gmm.means.shape
    axes = torch.eye(d, dtype=ends.dtype) * NUDGE * float(gmm.variances.min().sqrt())
    steps = torch.cat([axes, -axes])  # [2d, d]
    nudged = _climb(gmm, (ends[None] + steps[:, None]).reshape(-1, d)).reshape(2 * d, k, d)
    candidates = torch.cat([ends[None], nudged])  # [2d + 1, k, d]
    heights = gmm.log_density(candidates.reshape(-1, d)).reshape(2 * d + 1, k)
    return candidates[heights.argmax(0), torch.arange(k)]


def _same_peak(gmm: GaussianMixture, a: torch.Tensor, b: torch.Tensor) -> bool:
    """No dip in the density on the segment between two climbs' ends (ends of one peak that
    stopped apart on a flat top)."""
    t = torch.linspace(0.0, 1.0, SEGMENT_POINTS, dtype=a.dtype)[:, None]
    along = gmm.log_density(a * (1 - t) + b * t)
    return bool(along.min() >= torch.minimum(along[0], along[-1]) - 1e-9)


def merge_components(gmm: GaussianMixture) -> tuple[torch.Tensor, dict[str, Any]]:
    """(each component's cluster [k], 0..m-1 in order of first component; a record): components
    whose climbs end on the same peak of the fitted density are one cluster (the module docstring)."""
    k = gmm.k
    peaks = density_peaks(gmm)
    groups = torch.arange(k)
    for i in range(k):
        for j in range(i + 1, k):
            if groups[i] != groups[j] and _same_peak(gmm, peaks[i], peaks[j]):
                groups[groups == int(groups[j])] = int(groups[i])
    order: dict[int, int] = {}
    groups = torch.tensor([order.setdefault(int(g), len(order)) for g in groups], dtype=torch.long)
    record = {
        "components": k,
        "clusters": int(groups.max()) + 1,
        "definition": "the mixture's components grouped by the peak of the fitted density they lie under: those whose "
        "hill climbs on the density from their means end on one peak (modal EM) are one cluster",
    }
    return groups, record
