"""Clustering shared by the mixture's partition (prepare), NDB's bins and the diagnosis (diagnose).

* :func:`kmeans`: k-means++ seeding, then Lloyd iterations (NDB's bins; the mixture's parts);
* :func:`nearest`: each point's nearest centre;
* :func:`fit_gmm`: a Gaussian mixture with diagonal covariances, fitted by EM from k-means;
* :func:`select_clusters`: how many clusters the data hold, by the Bayesian information criterion
  of that mixture over k = 1..max_k (Schwarz 1978; the rule of scikit-learn's ``GaussianMixture.bic``
  and of x-means). Nothing in it knows a data set: the count comes from the likelihood alone.

Why a diagonal Gaussian mixture and BIC: splitting one Gaussian cluster in two never pays under
BIC (the halves' likelihood gain is smaller than the mixing cost), while merging two separated
clusters costs the likelihood of the gap between them; so the criterion has its minimum at the
number of Gaussian-like clusters, with unequal weights and widths allowed. Elongated or curved
clusters are cut into several Gaussian pieces, which for a mixture of GANs only means more, easier
parts.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from gancore.seeds import generator as seeded_generator

KMEANS_ITERS = 50
# scikit-learn's convergence rule: stop once the centres move (summed squared shift) by less than
# 1e-4 of the data's mean per-dimension variance.
KMEANS_TOL = 1e-4
# Chunk of points per distance computation: bounds the memory of [chunk, K] on 3072-dim images.
_CHUNK = 4096
# Up to this many dimensions, points are compared exactly in float64 (tight 2D modes, sigma 0.01).
EXACT_DIMS = 16
# EM starts from k-means, near a fixed point already; BIC compares likelihoods that differ by
# hundreds of nats between neighbouring k, so 1e-5 nats per point is far below what could move the
# choice.
EM_ITERS = 50
EM_TOL = 1e-5
# Variance floor of a component, relative to the data's mean per-dimension variance: a cluster of
# repeated points would otherwise have zero variance and unbounded likelihood.
VARIANCE_FLOOR = 1e-6
SELECT_RESTARTS = 3
# The scan over k stops once this many k past the best one have not improved on it (at least
# PATIENCE_MIN, and half the best k: a curve that found 30 clusters is allowed a longer search).
PATIENCE_MIN = 5


def _exact(x: torch.Tensor) -> bool:
    return x.shape[1] <= EXACT_DIMS


def nearest(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centre (L2) of each row of ``x``, in chunks."""
    out = []
    mode = "donot_use_mm_for_euclid_dist" if _exact(x) else "use_mm_for_euclid_dist"
    for start in range(0, len(x), _CHUNK):
        out.append(torch.cdist(x[start : start + _CHUNK], centers, compute_mode=mode).argmin(dim=1))
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


@dataclass
class GaussianMixture:
    """A fitted mixture of Gaussians with diagonal covariances."""

    weights: torch.Tensor  # [k]
    means: torch.Tensor  # [k, d]
    variances: torch.Tensor  # [k, d]
    log_likelihood: float  # total over the fitted points
    n: int

    @property
    def k(self) -> int:
        return len(self.weights)

    @property
    def parameters(self) -> int:
        k, d = self.means.shape
        return (k - 1) + 2 * k * d

    @property
    def bic(self) -> float:
        return -2.0 * self.log_likelihood + self.parameters * math.log(self.n)

    def log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """log(w_k N(x | mu_k, diag var_k)) for every point and component: [N, k]."""
        x = x.to(self.means.dtype)
        precision = 1.0 / self.variances  # [k, d]
        log_det = torch.log(self.variances).sum(1)  # [k]
        # sum_d (x - mu)^2 / var as matrix products (float64: no cancellation worth noting)
        maha = (x * x) @ precision.T - 2.0 * x @ (self.means * precision).T + (self.means**2 * precision).sum(1)[None]
        d = x.shape[1]
        return torch.log(self.weights)[None] - 0.5 * (maha + log_det[None] + d * math.log(2 * math.pi))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_joint(as_points(x)).argmax(1)


def fit_gmm(x: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor, iters: int = EM_ITERS) -> GaussianMixture:
    """EM for a diagonal Gaussian mixture started from a hard partition (e.g. k-means)."""
    x = as_points(x).double()
    n, d = x.shape
    k = len(centers)
    floor = VARIANCE_FLOOR * max(float(x.var(dim=0).mean()) if n > 1 else 1.0, 1e-300)
    resp = torch.zeros(n, k, dtype=torch.float64)
    resp[torch.arange(n), labels] = 1.0
    previous = -math.inf
    gmm = None
    for _ in range(iters):
        counts = resp.sum(0) + 1e-12
        means = resp.T @ x / counts[:, None]
        variances = ((resp.T @ (x * x)) / counts[:, None] - means**2).clamp_min(floor)
        gmm = GaussianMixture(counts / n, means, variances, 0.0, n)
        joint = gmm.log_joint(x)
        total = torch.logsumexp(joint, dim=1)
        gmm.log_likelihood = float(total.sum())
        resp = torch.exp(joint - total[:, None])
        if gmm.log_likelihood / n - previous < EM_TOL:
            break
        previous = gmm.log_likelihood / n
    assert gmm is not None
    return gmm


@dataclass
class Selection:
    """The number of clusters chosen by BIC and the curve it was chosen from."""

    k: int
    ks: list[int] = field(default_factory=list)
    bic: list[float] = field(default_factory=list)
    n_points: int = 0
    max_k: int = 0
    criterion: str = "bic"

    @property
    def at_limit(self) -> bool:
        """True when the minimum sits at the largest k tried: more clusters might fit better."""
        return self.k == self.max_k and self.max_k > 1

    def warn_if_at_limit(self) -> None:
        """Say so when BIC was still falling at the largest count tried (mixture.max_parts)."""
        if self.at_limit:
            warnings.warn(
                f"mixture.parts=auto: BIC was still falling at mixture.max_parts={self.max_k}; "
                "the data may hold more clusters: raise mixture.max_parts",
                stacklevel=3,
            )

    def as_dict(self) -> dict[str, Any]:
        return {
            "criterion": "BIC of a diagonal Gaussian mixture (EM from the best of "
            f"{SELECT_RESTARTS} k-means++ runs), minimised over k = 1..{self.max_k}",
            "chosen": self.k,
            "k": self.ks,
            "bic": [round(b, 3) for b in self.bic],
            "points": self.n_points,
            "at_limit": self.at_limit,
        }


def select_clusters(x: torch.Tensor, max_k: int, seed: int, stream: str = "clusters/select") -> Selection:
    """The number of clusters in ``x`` [N, d] minimising BIC over k = 1..``max_k``."""
    x = as_points(x)
    max_k = max(1, min(max_k, len(x)))
    ks: list[int] = []
    bics: list[float] = []
    best = 1
    for k in range(1, max_k + 1):
        ks.append(k)
        bics.append(fit_gmm(x, *kmeans_best(x, k, seed, SELECT_RESTARTS, f"{stream}/k{k}/")).bic)
        if bics[-1] < bics[best - 1]:
            best = k
        if k - best >= max(PATIENCE_MIN, best // 2):
            break
    return Selection(best, ks, bics, len(x), max_k)
