"""K-means shared by the mixture's partition (prepare), NDB's bins and the diagnosis (diagnose).

* :func:`kmeans`: k-means++ seeding, then Lloyd iterations (NDB's bins; the mixture's parts);
* :func:`nearest`: each point's nearest centre;
* :func:`whitened`: points in coordinates where their covariance is the identity.

The Gaussian mixtures fitted from its partitions are :mod:`gancore.gaussian_mixture`; how many
clusters the data hold, :mod:`gancore.cluster_selection`.
"""

from __future__ import annotations

import math

import torch

from gancore.seeds import generator as seeded_generator

KMEANS_ITERS = 50
# scikit-learn's convergence rule: stop once the centres move (summed squared shift) by less than
# 1e-4 of the data's mean per-dimension variance.
KMEANS_TOL = 1e-4
# Chunk of points per distance computation: bounds the memory of [chunk, K] on 3072-dim images.
CHUNK = 4096
# Up to this many dimensions, points are compared exactly in float64 (tight 2D modes, sigma 0.01).
EXACT_DIMS = 16


def _exact(x: torch.Tensor) -> bool:
    return x.shape[1] <= EXACT_DIMS


def nearest(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre (L2) of each row of ``x``, in chunks."""
    out = []
    mode = "donot_use_mm_for_euclid_dist" if _exact(x) else "use_mm_for_euclid_dist"
    for start in range(0, len(x), CHUNK):
        out.append(torch.cdist(x[start : start + CHUNK], centers, compute_mode=mode).argmin(dim=1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def _min_sq_dist(x: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    return (x - center).pow(2).sum(dim=1)


def as_points(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` as vectors: float64 for low-dimensional data (tight modes need the digits)."""
    x = x.reshape(len(x), -1)
    return x.double() if _exact(x) else x.float()


def _greedy_kmeans_pp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur and Vassilvitskii 2007; scikit-learn's default): each new
    centre is the best of 2 + log k candidates drawn in proportion to the squared distance, the one
    that lowers the summed squared distance most. Plain k-means++ (one candidate) leaves two
    centres in one of twelve well-separated 10-D clusters in most of its runs."""
    n = len(x)
    trials = 2 + int(math.log(k)) if k > 1 else 1
    first = int(torch.randint(n, (1,), generator=gen))
    centers = [x[first]]
    d2 = _min_sq_dist(x, x[first])
    for _ in range(1, k):
        total = d2.sum()
        if total <= 0:  # fewer distinct points than clusters: any point will do
            idx = int(torch.randint(n, (1,), generator=gen))
            best_d2 = d2
        else:
            candidates = torch.multinomial((d2 / total).double().cpu(), trials, replacement=True, generator=gen).tolist()
            options = [torch.minimum(d2, _min_sq_dist(x, x[c])) for c in candidates]
            pick = min(range(trials), key=lambda i: float(options[i].sum()))
            idx, best_d2 = candidates[pick], options[pick]
        centers.append(x[idx])
        d2 = best_d2
    return torch.stack(centers)


def kmeans(
    x: torch.Tensor, k: int, seed: int = 0, iters: int = KMEANS_ITERS, stream: str = "diagnose/kmeans"
) -> tuple[torch.Tensor, torch.Tensor]:
    """K-means (k-means++ seeding, then Lloyd) on ``x`` [N, d]; returns (centres [k, d], labels [N]).

    Runs on ``x``'s device; the random choices come from a CPU generator, so a seed picks the same
    clusters on any device (up to floating-point ties). An emptied cluster is re-seeded at the point
    farthest from its centre, so every cluster keeps members.
    """
    x = as_points(x)
    n = len(x)
    if n < k:
        raise ValueError(f"K-means needs at least as many points as clusters: {n} points, {k} clusters")
    c = _greedy_kmeans_pp(x, k, seeded_generator(seed, stream))
    labels = nearest(x, c)
    tol = KMEANS_TOL * float(x.var(dim=0).mean()) if n > 1 else 0.0
    for _ in range(iters):
        sums = torch.zeros_like(c).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        empty = counts == 0
        new_c = torch.where(empty[:, None], c, sums / counts.clamp_min(1)[:, None].to(x.dtype))
        if empty.any():
            far = _min_sq_dist(x, new_c[labels]).argsort(descending=True)
            new_c[empty] = x[far[: int(empty.sum())]]
        shift = float((new_c - c).pow(2).sum())
        c = new_c
        new = nearest(x, c)
        if torch.equal(new, labels) or shift <= tol:
            labels = new
            break
        labels = new
    return c, labels


def inertia(x: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor) -> float:
    """Within-cluster sum of squares."""
    return float((as_points(x).to(centers.dtype) - centers[labels]).pow(2).sum())


def kmeans_best(x: torch.Tensor, k: int, seed: int, restarts: int, stream: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The k-means run of lowest inertia among ``restarts`` seeded restarts (streams ``stream<i>``)."""
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    for restart in range(restarts):
        centers, labels = kmeans(x, k, seed, stream=f"{stream}{restart}")
        value = inertia(x, centers, labels)
        if best is None or value < best[0]:
            best = (value, centers, labels)
    assert best is not None
    return best[1], best[2]


def principal_axes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x centred on its mean, the sample covariance's eigenvalues [d] ascending, its eigenvectors
    as columns [d, d])."""
    centred = x - x.mean(0)
    values, vectors = torch.linalg.eigh(centred.T @ centred / max(len(x) - 1, 1))
    return centred, values, vectors


def whitened(x: torch.Tensor) -> torch.Tensor:
    """``x`` in coordinates where its covariance is the identity (the principal axes, each scaled
    to unit spread; a direction without spread stays unscaled)."""
    centred, values, vectors = principal_axes(as_points(x))
    scale = torch.where(values > values.max() * 1e-12, values.clamp_min(1e-300).rsqrt(), torch.ones_like(values))
    return centred @ vectors * scale


def centres_of(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    counts = torch.bincount(labels, minlength=k).clamp_min(1)
    return torch.zeros(k, x.shape[1], dtype=x.dtype).index_add_(0, labels, x) / counts[:, None].to(x.dtype)
