"""Clustering shared by the mixture's partition (prepare), NDB's bins and the diagnosis (diagnose).

* :func:`kmeans`: k-means++ seeding, then Lloyd iterations (NDB's bins; the mixture's parts);
* :func:`nearest`: each point's nearest centre;
* :func:`fit_gmm`: a Gaussian mixture with diagonal or full covariances, fitted by EM from k-means;
* :func:`select_clusters`: how many clusters the data hold, and which covariance model, by the
  Bayesian information criterion over k = 1..max_k (Schwarz 1978; the rule of scikit-learn's
  ``GaussianMixture.bic``, x-means, and mclust's joint choice of model and size). Nothing in it
  knows a data set: the count comes from the likelihood alone.

Why a Gaussian mixture and BIC: splitting one Gaussian cluster in two never pays under BIC (the
halves' likelihood gain is smaller than the mixing cost), while merging two separated clusters
costs the likelihood of the gap between them; so the criterion has its minimum at the number of
Gaussian-like clusters, with unequal weights and widths allowed. Why both covariance models: a
diagonal mixture is not rotation-invariant. Two elongated clusters at 45 degrees to the axes are
two clusters to a full-covariance mixture and fifty diagonal pieces to a diagonal one (the fifty
were the limit), while axis-aligned or round clusters cost a full model its extra parameters for
nothing, so BIC keeps the diagonal one there. EM for full covariances also starts from k-means in
whitened coordinates, and from the best fit of one cluster fewer with one component split in its
own whitened coordinates (:func:`split_start`: a tilted pair beside another cluster). Full
covariances are tried up to :data:`FULL_COVARIANCE_DIMS` dimensions, where their d(d+1)/2
parameters per cluster stay few beside the points. Curved clusters are still cut into several Gaussian pieces, which for a
mixture of GANs only means more, easier parts.
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
# Full covariances are a candidate model up to this many dimensions (the exact, float64 regime):
# beyond it their d(d+1)/2 parameters per cluster outgrow the few thousand points BIC is taken on,
# and EM's d x d updates per component outgrow the diagonal ones' cost by d.
FULL_COVARIANCE_DIMS = EXACT_DIMS
COVARIANCE_MODELS = ("diag", "full")
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


def outer_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row's outer product with itself, flattened: [N, d * d]."""
    return (x[:, :, None] * x[:, None, :]).reshape(len(x), -1)


@dataclass
class GaussianMixture:
    """A fitted mixture of Gaussians: diagonal covariances (``variances``), or full ones
    (``covariances`` [k, d, d], whose diagonals ``variances`` then hold)."""

    weights: torch.Tensor  # [k]
    means: torch.Tensor  # [k, d]
    variances: torch.Tensor  # [k, d]
    log_likelihood: float  # total over the fitted points
    n: int
    covariances: torch.Tensor | None = None  # [k, d, d] for a full-covariance mixture

    @property
    def k(self) -> int:
        return len(self.weights)

    @property
    def covariance(self) -> str:
        return "diag" if self.covariances is None else "full"

    @property
    def parameters(self) -> int:
        k, d = self.means.shape
        return (k - 1) + k * d + (k * d * (d + 1) // 2 if self.covariances is not None else k * d)

    @property
    def bic(self) -> float:
        return -2.0 * self.log_likelihood + self.parameters * math.log(self.n)

    def squared_mahalanobis(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mu_k)^T Sigma_k^-1 (x - mu_k) for every point and component: [N, k]."""
        x = x.to(self.means.dtype)
        if self.covariances is None:
            precision = 1.0 / self.variances  # [k, d]
            # sum_d (x - mu)^2 / var as matrix products (float64: no cancellation worth noting)
            return (x * x) @ precision.T - 2.0 * x @ (self.means * precision).T + (self.means**2 * precision).sum(1)[None]
        # x^T P x - 2 x^T P mu + mu^T P mu as matrix products, as the diagonal case: the [k, d, N]
        # triangular solves' strided sums were most of EM's time
        # (in row chunks: the outer products are [N, d * d])
        k, d = self.means.shape
        precision = torch.cholesky_inverse(torch.linalg.cholesky(self.covariances)).reshape(k, d * d)
        pm = (precision.reshape(k, d, d) @ self.means[:, :, None])[:, :, 0]  # [k, d]
        rows = [outer_rows(c) @ precision.T - 2.0 * c @ pm.T for c in x.split(_CHUNK)]
        return (torch.cat(rows) if rows else x.new_zeros(0, k)) + (self.means * pm).sum(1)[None]

    @property
    def degenerate(self) -> bool:
        """A full covariance estimated from fewer points than d + 1 is singular: only the floor
        holds it up, and the likelihood it buys (a component on one or two points of 30 in 2-D)
        outbids BIC's price, which counts parameters, not the points they stand on."""
        d = self.means.shape[1]
        return self.covariances is not None and self.n > 0 and float(self.weights.min()) * self.n < d + 1

    def log_det(self) -> torch.Tensor:
        """log |Sigma_k| per component: [k]."""
        if self.covariances is None:
            return torch.log(self.variances).sum(1)
        return 2.0 * torch.log(torch.diagonal(torch.linalg.cholesky(self.covariances), dim1=1, dim2=2)).sum(1)

    def log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """log(w_k N(x | mu_k, Sigma_k)) for every point and component: [N, k]."""
        d = x.shape[1]
        maha = self.squared_mahalanobis(x)
        return torch.log(self.weights)[None] - 0.5 * (maha + self.log_det()[None] + d * math.log(2 * math.pi))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_joint(as_points(x)).argmax(1)

    def to(self, device: str | torch.device) -> GaussianMixture:
        cov = None if self.covariances is None else self.covariances.to(device)
        return GaussianMixture(self.weights.to(device), self.means.to(device), self.variances.to(device), self.log_likelihood, self.n, cov)

    def as_modes(self) -> dict[str, Any]:
        """The mixture as ``meta.json``'s ``modes`` keys (``covariances`` only for a full one)."""
        out: dict[str, Any] = {"weights": self.weights.tolist(), "means": self.means.tolist(), "variances": self.variances.tolist()}
        if self.covariances is not None:
            out["covariances"] = self.covariances.tolist()
        return out


def mixture_problem(weights: torch.Tensor, means: torch.Tensor, variances: torch.Tensor, covariances: torch.Tensor | None) -> str | None:
    """What makes these a mixture's parameters no longer (a hand-edited ``meta.json``), or None."""
    if means.dim() != 2 or not len(means):
        return f"means must be [K, d], got {list(means.shape)}"
    k, d = means.shape
    if weights.shape != (k,) or not bool((weights > 0).all()):
        return f"weights must be [K] = [{k}] and positive, got {list(weights.shape)}"
    if variances.shape != (k, d) or not bool((variances > 0).all()):
        return f"variances must be [K, d] = {[k, d]} and positive, got {list(variances.shape)}"
    if covariances is not None:
        if covariances.shape != (k, d, d):
            return f"covariances must be [K, d, d] = {[k, d, d]}, got {list(covariances.shape)}"
        if not torch.allclose(covariances, covariances.transpose(1, 2)) or bool(torch.linalg.cholesky_ex(covariances).info.any()):
            return "covariances must be symmetric and positive definite"
    return None


def mixture_from_modes(modes: dict[str, Any]) -> GaussianMixture | None:
    """The fitted mixture a ``meta.json``'s ``modes`` record (``means`` with ``variances``, and
    ``covariances`` when full; uniform weights when none are given); None for known centres.
    Raises ValueError naming what is malformed."""
    if not (modes.get("means") and modes.get("variances")):
        return None
    means = torch.as_tensor(modes["means"], dtype=torch.float64)
    k = len(means)
    variances = torch.as_tensor(modes["variances"], dtype=torch.float64)
    weights = modes.get("weights")
    w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    cov = modes.get("covariances")
    covariances = None if cov is None else torch.as_tensor(cov, dtype=torch.float64)
    problem = mixture_problem(w, means, variances, covariances)
    if problem:
        raise ValueError(f"meta.json modes: {problem}; run `gan prepare` again")
    return GaussianMixture(w, means, variances, 0.0, 0, covariances)


def fit_gmm(
    x: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor, iters: int = EM_ITERS, covariance: str = "diag"
) -> GaussianMixture:
    """EM for a Gaussian mixture (``covariance``: diag or full) started from a hard partition
    (e.g. k-means). The variance floor is added to a full covariance's diagonal, as scikit-learn's
    ``reg_covar``, and a covariance that rounding still leaves short of positive definite (a
    component on points that are all the same) has its eigenvalues raised to the floor. EM runs on
    the data centred on their mean (moments about the origin, E[x x^T] - mu mu^T, lose the digits
    the data's offset takes) and the means are moved back."""
    if covariance not in COVARIANCE_MODELS:
        raise ValueError(f"covariance must be one of {', '.join(COVARIANCE_MODELS)}, got {covariance!r}")
    x = as_points(x).double()
    n, d = x.shape
    k = len(centers)
    spread = float(x.var(dim=0).mean()) if n > 1 else 0.0
    floor = VARIANCE_FLOOR * (spread if spread > 0 else 1.0)  # identical points: any scale is theirs
    offset = x.mean(0)
    x = x - offset
    resp = torch.zeros(n, k, dtype=torch.float64)
    resp[torch.arange(n), labels] = 1.0
    previous = -math.inf
    gmm = None
    for _ in range(iters):
        counts = resp.sum(0) + 1e-12
        means = resp.T @ x / counts[:, None]
        if covariance == "full":
            covariances = _full_covariances(x, resp, counts, means, floor)
            gmm = GaussianMixture(counts / n, means, torch.diagonal(covariances, dim1=1, dim2=2).clone(), 0.0, n, covariances)
        else:
            variances = ((resp.T @ (x * x)) / counts[:, None] - means**2).clamp_min(floor)
            gmm = GaussianMixture(counts / n, means, variances, 0.0, n)
        # logsumexp and the responsibilities from one exp (the E-step's cost is its exps). Below
        # -700 a term is under 1e-304 of the peak's and changes nothing, but exp's underflow path
        # is 15-30x slower than its normal one: clamped, EM on tight 2-D clusters ran 3x faster.
        joint = gmm.log_joint(x)
        peak = joint.amax(1, keepdim=True)
        resp = torch.exp((joint - peak).clamp_min_(-700.0))
        mass = resp.sum(1, keepdim=True)
        gmm.log_likelihood = float((peak + torch.log(mass)).sum())
        resp /= mass
        if gmm.log_likelihood / n - previous < EM_TOL:
            break
        previous = gmm.log_likelihood / n
    assert gmm is not None
    gmm.means = gmm.means + offset
    return gmm


def _full_covariances(x: torch.Tensor, resp: torch.Tensor, counts: torch.Tensor, means: torch.Tensor, floor: float) -> torch.Tensor:
    """The M-step's covariances [k, d, d] (in row chunks: the outer products are [N, d * d]),
    symmetric and positive definite."""
    k, d = means.shape
    second = sum((r.T @ outer_rows(c) for r, c in zip(resp.split(_CHUNK), x.split(_CHUNK))), torch.zeros(k, d * d, dtype=x.dtype))
    eye = torch.eye(d, dtype=x.dtype)
    cov = (second / counts[:, None]).reshape(k, d, d) - means[:, :, None] * means[:, None, :] + floor * eye
    cov = (cov + cov.transpose(1, 2)) / 2
    bad = torch.linalg.cholesky_ex(cov).info != 0
    if bad.any():
        values, vectors = torch.linalg.eigh(cov[bad])
        cov[bad] = vectors @ torch.diag_embed(values.clamp_min(floor)) @ vectors.transpose(1, 2)
        cov[bad] = (cov[bad] + cov[bad].transpose(1, 2)) / 2
    return cov


def covariance_models(x: torch.Tensor) -> tuple[str, ...]:
    """The covariance models worth trying on ``x``: full ones only where they differ from diagonal
    ones (d >= 2) and stay affordable (d <= :data:`FULL_COVARIANCE_DIMS`)."""
    return COVARIANCE_MODELS if 2 <= x.shape[1] <= FULL_COVARIANCE_DIMS else ("diag",)


def whitened(x: torch.Tensor) -> torch.Tensor:
    """``x`` in coordinates where its covariance is the identity (the principal axes, each scaled
    to unit spread; a direction without spread stays unscaled)."""
    x = as_points(x)
    centred = x - x.mean(0)
    values, vectors = torch.linalg.eigh(centred.T @ centred / max(len(x) - 1, 1))
    scale = torch.where(values > values.max() * 1e-12, values.clamp_min(1e-300).rsqrt(), torch.ones_like(values))
    return centred @ vectors * scale


def starts(
    x: torch.Tensor, k: int, seed: int, restarts: int, stream: str, models: tuple[str, ...]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The hard partitions EM starts from: the best k-means run in the data's coordinates and,
    where full covariances are tried, in whitened ones. K-means cuts elongated clusters across
    their long axis; whitening turns a tilted pair into the axis-aligned pair it is up to an
    affine map, which a full-covariance mixture does not see, so its start no longer depends on
    the data's orientation."""
    out = [kmeans_best(x, k, seed, restarts, stream)]
    if "full" in models and k > 1:
        _, labels = kmeans_best(whitened(x), k, seed, restarts, f"{stream}whitened/")
        counts = torch.bincount(labels, minlength=k).clamp_min(1)
        out.append((torch.zeros(k, x.shape[1], dtype=x.dtype).index_add_(0, labels, x) / counts[:, None].to(x.dtype), labels))
    return out


def _centres(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    counts = torch.bincount(labels, minlength=k).clamp_min(1)
    return torch.zeros(k, x.shape[1], dtype=x.dtype).index_add_(0, labels, x) / counts[:, None].to(x.dtype)


def _hard_log_likelihood(x: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """The log-likelihood of a hard partition, each part its own full Gaussian at its maximum
    (m points: -m/2 (d log 2 pi + log |S| + d)) and the parts mixed by their shares; up to the
    terms every partition of the same points shares."""
    total = 0.0
    for j in range(k):
        part = x[labels == j]
        m = len(part)
        centred = part - part.mean(0)
        cov = centred.T @ centred / m + VARIANCE_FLOOR * torch.eye(x.shape[1], dtype=x.dtype)
        total += m * math.log(m / len(x)) - 0.5 * m * float(torch.linalg.slogdet(cov)[1])
    return total


def split_start(x: torch.Tensor, gmm: GaussianMixture, seed: int, stream: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A partition into ``gmm.k + 1`` clusters: ``gmm``'s, with the one component cut in two that
    gains most likelihood by it, cut by 2-means in that component's own whitened coordinates.
    Whitening the whole data set fixes the start of one tilted pair, not of a tilted pair beside
    another cluster (the global covariance is then the clusters' layout, and k-means still cuts
    the pair across); each component's own covariance is the pair's."""
    labels = gmm.predict(x)
    d = x.shape[1]
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    for j in range(gmm.k):
        members = (labels == j).nonzero()[:, 0]
        if len(members) < 2 * (d + 1):
            continue
        points = x[members]
        _, halves = kmeans(whitened(points), 2, seed, stream=f"{stream}split{j}")
        if int(halves.min()) == int(halves.max()):
            continue
        gain = _hard_log_likelihood(points, halves, 2) - _hard_log_likelihood(points, torch.zeros_like(halves), 1)
        if best is None or gain > best[0]:
            best = (gain, members, halves)
    if best is None:
        return None
    _, members, halves = best
    labels = labels.clone()
    labels[members[halves == 1]] = gmm.k
    return _centres(x, labels, gmm.k + 1), labels


def merge_start(x: torch.Tensor, gmm: GaussianMixture) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A partition into ``gmm.k - 1`` clusters: ``gmm``'s, with the two components merged whose
    moment-matched merger loses the least likelihood, n/2 (w log|S| - w_a log|S_a| - w_b log|S_b|)
    (the merge cost of Runnalls 2007 and of mclust's hierarchical merging); None for one
    component or a degenerate fit."""
    if gmm.k < 2 or gmm.degenerate:
        return None
    d = gmm.means.shape[1]
    cov = gmm.covariances if gmm.covariances is not None else torch.diag_embed(gmm.variances)
    w, mu = gmm.weights, gmm.means
    a, b = torch.triu_indices(gmm.k, gmm.k, 1)
    wa, wb = w[a], w[b]
    ww = wa + wb
    mean = (wa[:, None] * mu[a] + wb[:, None] * mu[b]) / ww[:, None]
    second = lambda i, wi: wi[:, None, None] * (cov[i] + mu[i][:, :, None] * mu[i][:, None, :])  # noqa: E731
    merged = (second(a, wa) + second(b, wb)) / ww[:, None, None] - mean[:, :, None] * mean[:, None, :]
    if gmm.covariances is None:
        merged = torch.diag_embed(torch.diagonal(merged, dim1=1, dim2=2))
    logdet = torch.linalg.slogdet(cov)[1]
    cost = ww * torch.linalg.slogdet(merged + VARIANCE_FLOOR * torch.eye(d, dtype=cov.dtype))[1] - wa * logdet[a] - wb * logdet[b]
    pick = int(cost.argmin())
    keep, drop = int(a[pick]), int(b[pick])
    labels = gmm.predict(x)
    labels = torch.where(labels == drop, keep, labels)
    labels = labels - (labels > drop).long()
    return _centres(x, labels, gmm.k - 1), labels


def fit_mixture(
    x: torch.Tensor, k: int, seed: int, restarts: int, stream: str, covariance: str = "auto", start: GaussianMixture | None = None
) -> GaussianMixture:
    """The mixture of ``k`` components on ``x`` of lowest BIC, EM from each of :func:`starts`
    (and from ``start``'s partition of ``x``: the fit the count was chosen with, on a subset):
    ``covariance`` diag or full, or ``auto`` for either."""
    x = as_points(x)
    models = covariance_models(x) if covariance == "auto" else (covariance,)
    partitions = starts(x, k, seed, restarts, stream, models)
    if start is not None and start.k == k:
        partitions.append((start.means.to(x.dtype), start.predict(x)))
    fits = [fit_gmm(x, *p, covariance=model) for model in models for p in (partitions if model == "full" else partitions[:1])]
    usable = [g for g in fits if not g.degenerate] or [fit_gmm(x, *partitions[0], covariance="diag")]
    return min(usable, key=lambda g: g.bic)


def _criterion(gmm: GaussianMixture) -> float:
    return math.inf if gmm.degenerate else gmm.bic


@dataclass
class Selection:
    """The number of clusters and the covariance model chosen by BIC, and the curves they were
    chosen from (``curves``: one BIC per k for each model tried; ``bic``: the chosen model's)."""

    k: int
    ks: list[int] = field(default_factory=list)
    curves: dict[str, list[float]] = field(default_factory=dict)
    n_points: int = 0
    max_k: int = 0
    covariance: str = "diag"
    criterion: str = "bic"
    mixture: GaussianMixture | None = field(default=None, repr=False, compare=False)  # the chosen fit

    @property
    def bic(self) -> list[float]:
        return self.curves.get(self.covariance, [])

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
            "criterion": f"BIC of a Gaussian mixture ({' or '.join(self.curves)} covariances; EM from the best of "
            f"{SELECT_RESTARTS} k-means++ runs), minimised over k = 1..{self.max_k} and the covariance model",
            "chosen": self.k,
            "covariance": self.covariance,
            "k": self.ks,
            "bic": _rounded(self.bic),
            "curves": {model: _rounded(curve) for model, curve in self.curves.items()},
            "points": self.n_points,
            "at_limit": self.at_limit,
        }


def _rounded(curve: list[float]) -> list[float | None]:
    """A BIC curve for JSON: None where the fit was degenerate (not a candidate)."""
    return [round(b, 3) if math.isfinite(b) else None for b in curve]


def select_clusters(x: torch.Tensor, max_k: int, seed: int, stream: str = "clusters/select") -> Selection:
    """The number of clusters in ``x`` [N, d] and their covariance model (diagonal, or full up to
    :data:`FULL_COVARIANCE_DIMS` dimensions) minimising BIC over k = 1..``max_k``. At each k both
    models start from the same partitions (:func:`starts`; the full one also from
    :func:`split_start`), each keeps its best fit, and a downward pass starts each full fit of k
    from the full fit of k + 1 with two components merged (:func:`merge_start`)."""
    x = as_points(x)
    max_k = max(1, min(max_k, len(x)))
    models = covariance_models(x)
    ks: list[int] = []
    fits: dict[str, list[GaussianMixture]] = {model: [] for model in models}
    best = 1
    previous: GaussianMixture | None = None  # the best full fit at k - 1, which split_start cuts
    for k in range(1, max_k + 1):
        ks.append(k)
        partitions = starts(x, k, seed, SELECT_RESTARTS, f"{stream}/k{k}/", models)
        split = split_start(x, previous, seed, f"{stream}/k{k}/") if previous is not None else None
        for model in models:
            # a diagonal model is fitted in the data's own axes: the whitened and split starts serve the full one
            tried = partitions + ([split] if split else []) if model == "full" else partitions[:1]
            fits[model].append(min((fit_gmm(x, *p, covariance=model) for p in tried), key=_criterion))
            if model == "full":
                previous = None if fits[model][-1].degenerate else fits[model][-1]
        best = min(ks, key=lambda j: min(_criterion(fits[m][j - 1]) for m in models))
        if k - best >= max(PATIENCE_MIN, best // 2):
            break
    if "full" in models:
        # Downwards: each full fit of k clusters with its two closest components merged starts EM
        # at k - 1 (a tight spike inside a broad cluster: k-means halves the broad one, and only
        # the fit with three, spike found, merges into the right two). Not for the diagonal model:
        # its fits may keep one-point clusters (an outlier is one), and merging from them finds
        # better-scored fits with more such clusters: 30 points in 3 clusters became 4 to 6.
        for k in reversed(ks[1:]):
            merged = merge_start(x, fits["full"][k - 1])
            if merged is not None:
                fit = fit_gmm(x, *merged, covariance="full")
                if _criterion(fit) < _criterion(fits["full"][k - 2]):
                    fits["full"][k - 2] = fit
    curves = {model: [_criterion(f) for f in fits[model]] for model in models}
    best, best_model = min(((k, m) for k in ks for m in models), key=lambda km: (curves[km[1]][km[0] - 1], km[0]))
    return Selection(best, ks, curves, len(x), max_k, best_model, mixture=fits[best_model][best - 1])
