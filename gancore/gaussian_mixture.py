"""A Gaussian mixture with diagonal or full covariances, fitted by EM from a hard partition
(k-means'; :mod:`gancore.gmm_fit`), and read back from a prepared ``meta.json``'s ``modes``.

Full covariances hold a tilted or correlated cluster as one component, where a diagonal mixture
(not rotation-invariant) needs many; :mod:`gancore.cluster_selection` lets BIC choose between
them. Computed in float64: tight clusters (sigma 0.01) need the digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch

from gancore.clustering import CHUNK, as_points

# The fewest identical rows that are a cluster (an atom of discrete data), not stray rows: the
# diagnosis' fewest points to measure a mode by (gancore.diagnostics.diversity.MIN_PER_MODE).
POINT_MASS_ROWS = 10
# The background's box is widened by this share of its size (see GaussianMixture.outliers).
BOX_SLACK = 1e-6


def component_rank(dims: int, covariance: str) -> int:
    """The fewest distinct points a component stands on without the floor alone holding it up:
    d + 1 for a full covariance, 2 for a diagonal one."""
    return dims + 1 if covariance == "full" else 2


def outer_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row's outer product with itself, flattened: [N, d * d]."""
    return (x[:, :, None] * x[:, None, :]).reshape(len(x), -1)


def outer_chunks(x: torch.Tensor) -> list[torch.Tensor]:
    """:func:`outer_rows` of ``x`` in the row chunks the full-covariance E- and M-steps take them
    in. EM's points do not change from one iteration to the next, and recomputing them every
    step was a seventh of prepare's time on skewed clusters (33,000 calls in one file)."""
    return [outer_rows(c) for c in x.split(CHUNK)]


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
    # The weight of a uniform background over the data's box (:func:`background_box`; mclust's
    # noise component: Banfield and Raftery 1993), which takes the outliers: ``weights`` then sum
    # to 1 - ``noise``. None: no background.
    noise: float | None = None
    noise_log_density: float = 0.0
    floor: float = 0.0  # the variance floor EM held the components up with (0: not fitted here)
    # Each component's cluster (gancore.mode_merging): a skewed or flat cluster takes several
    # components, and a mode is a cluster. None: each component is one.
    groups: torch.Tensor | None = None
    # The background's box [2, d] (lowest and highest corner, :func:`background_box`): outside it,
    # a point is not the background's either (far garbage is no stray row). None: not known.
    noise_box: torch.Tensor | None = None

    @property
    def k(self) -> int:
        return len(self.weights)

    @property
    def clusters(self) -> int:
        """How many clusters (modes) the components form."""
        return self.k if self.groups is None else int(self.groups.max()) + 1

    def cluster_log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """log(sum of w_k N(x | mu_k, Sigma_k) over each cluster's components): [N, clusters]."""
        return self._by_cluster(self.log_joint(x))

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """log of the mixture's density at each point (the background's left out): [N]."""
        return torch.logsumexp(self.log_joint(x), 1)

    @property
    def covariance(self) -> str:
        return "diag" if self.covariances is None else "full"

    @property
    def parameters(self) -> int:
        k, d = self.means.shape
        # the background: its weight, and its box's 2d sides, estimated from the data's extremes
        background = 1 + 2 * d if self.noise is not None else 0
        return (k - 1) + k * d + (k * d * (d + 1) // 2 if self.covariances is not None else k * d) + background

    @property
    def bic(self) -> float:
        return -2.0 * self.log_likelihood + self.parameters * math.log(self.n)

    def squared_mahalanobis(self, x: torch.Tensor) -> torch.Tensor:
        """(x - mu_k)^T Sigma_k^-1 (x - mu_k) for every point and component: [N, k]."""
        return self._mahalanobis_and_log_det(x)[0]

    def _mahalanobis_and_log_det(self, x: torch.Tensor, outer: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The squared Mahalanobis distances [N, k] and log |Sigma_k| [k], from one Cholesky
        factorisation of the covariances (``outer``: :func:`outer_chunks` of ``x``, where known)."""
        x = x.to(self.means.dtype)
        if self.covariances is None:
            precision = 1.0 / self.variances  # [k, d]
            # sum_d (x - mu)^2 / var as matrix products (float64: no cancellation worth noting)
            maha = (x * x) @ precision.T - 2.0 * x @ (self.means * precision).T + (self.means**2 * precision).sum(1)[None]
            return maha, torch.log(self.variances).sum(1)
        # x^T P x - 2 x^T P mu + mu^T P mu as matrix products, as the diagonal case: the [k, d, N]
        # triangular solves' strided sums were most of EM's time
        # (in row chunks: the outer products are [N, d * d])
        k, d = self.means.shape
        chol = torch.linalg.cholesky(self.covariances)
        precision = torch.cholesky_inverse(chol).reshape(k, d * d)
        pm = (precision.reshape(k, d, d) @ self.means[:, :, None])[:, :, 0]  # [k, d]
        chunks = x.split(CHUNK)
        outers = outer if outer is not None else map(outer_rows, chunks)
        rows = [o @ precision.T - 2.0 * c @ pm.T for o, c in zip(outers, chunks)]
        maha = (torch.cat(rows) if rows else x.new_zeros(0, k)) + (self.means * pm).sum(1)[None]
        return maha, 2.0 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)

    @property
    def degenerate(self) -> bool:
        """A full covariance estimated from fewer points than d + 1, or a diagonal one from fewer
        than 2, is singular: only the floor holds it up, and the likelihood it buys (a component
        on one or two points of 30 in 2-D) outbids BIC's price, which counts parameters, not the
        points they stand on. A lone outlier is the background's (:func:`fit_with_background`), not
        a cluster; so are a few identical rows (a logger's sentinel value: three were a cluster):
        a component with no spread of its own beyond the floor is one only from
        :data:`POINT_MASS_ROWS` rows, where an atom of discrete data (a points file of codes, a
        value repeated 300 times) is a mode."""
        rank = component_rank(self.means.shape[1], self.covariance)
        if self.n <= 0:
            return False
        counts = self.weights * self.n
        point_mass = (self.variances <= 2 * self.floor).all(1) & (counts < POINT_MASS_ROWS)  # none where floor is 0
        return bool(point_mass.any()) or float(counts.min()) < rank

    def log_joint(self, x: torch.Tensor, outer: list[torch.Tensor] | None = None) -> torch.Tensor:
        """log(w_k N(x | mu_k, Sigma_k)) for every point and component: [N, k] (``outer``:
        :func:`outer_chunks` of ``x``, where known)."""
        return self._log_joint_and_mahalanobis(x, outer)[0]

    def _log_joint_and_mahalanobis(self, x: torch.Tensor, outer: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        maha, log_det = self._mahalanobis_and_log_det(x, outer)
        return torch.log(self.weights)[None] - 0.5 * (maha + log_det[None] + x.shape[1] * math.log(2 * math.pi)), maha

    def assign(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each point's most probable cluster (:meth:`cluster_log_joint`) and its squared
        Mahalanobis distance to that cluster's most probable component."""
        joint, maha = self._log_joint_and_mahalanobis(x)
        cluster = self._by_cluster(joint).argmax(1)
        if self.groups is not None:
            joint = joint.masked_fill(self.groups.to(x.device)[None] != cluster[:, None], -math.inf)
        best = joint.argmax(1)
        return cluster, maha.gather(1, best[:, None])[:, 0]

    def _by_cluster(self, joint: torch.Tensor) -> torch.Tensor:
        """``joint`` [N, k] summed (in exp) over each cluster's components: [N, clusters]."""
        if self.groups is None:
            return joint
        peak = joint.amax(1, keepdim=True)
        summed = joint.new_zeros(len(joint), self.clusters).index_add_(1, self.groups.to(joint.device), torch.exp(joint - peak))
        return torch.log(summed) + peak

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Each point's most probable component."""
        return self.log_joint(as_points(x)).argmax(1)

    def predict_cluster(self, x: torch.Tensor) -> torch.Tensor:
        """Each point's most probable cluster (its components' posteriors summed): the domain
        classifier's argmax (:class:`~gancore.classifiers.domain_networks.GaussianPosterior`)."""
        return self.cluster_log_joint(as_points(x)).argmax(1)

    def to(self, device: str | torch.device) -> GaussianMixture:
        cov = None if self.covariances is None else self.covariances.to(device)
        groups = None if self.groups is None else self.groups.to(device)
        box = None if self.noise_box is None else self.noise_box.to(device)
        return replace(
            self,
            weights=self.weights.to(device),
            means=self.means.to(device),
            variances=self.variances.to(device),
            covariances=cov,
            groups=groups,
            noise_box=box,
        )

    @property
    def background_log_joint(self) -> float | None:
        """log(noise x the background's density), every point's under the background (None without one)."""
        return math.log(self.noise) + self.noise_log_density if self.noise else None

    def log_joint_with_background(self, x: torch.Tensor, outer: list[torch.Tensor] | None = None) -> torch.Tensor:
        """:meth:`log_joint` with the background's as a last column where there is one: [N, k (+ 1)]."""
        joint = self.log_joint(x, outer)
        background = self.background_log_joint
        return joint if background is None else torch.cat([joint, joint.new_full((len(joint), 1), background)], 1)

    def outliers(self, x: torch.Tensor) -> torch.Tensor:
        """Which points of ``x`` the background explains better than every cluster, inside its
        box where known: [N] bool."""
        background = self.background_log_joint
        if background is None:
            return torch.zeros(len(x), dtype=torch.bool)
        x = as_points(x)
        outside = self.log_joint(x).amax(1) < background
        if self.noise_box is None:
            return outside
        # the data stored as float32 (prepared storage) round their extremes by up to 6e-8 of
        # their size: the box is widened by 1e-6 of it, so that its own rows stay inside
        box = self.noise_box.double()
        slack = BOX_SLACK * (box.abs().amax(0) + (box[1] - box[0]))
        inside = ((x >= box[0] - slack) & (x <= box[1] + slack)).all(1)
        return outside & inside

    def as_modes(self) -> dict[str, Any]:
        """The mixture as ``meta.json``'s ``modes`` keys (``covariances`` only for a full one; ``groups``,
        each component's cluster, where components were grouped): the components, their weights
        summing to 1 (the background's outliers are no mode)."""
        weights = self.weights / self.weights.sum()
        out: dict[str, Any] = {"weights": weights.tolist(), "means": self.means.tolist(), "variances": self.variances.tolist()}
        if self.covariances is not None:
            out["covariances"] = self.covariances.tolist()
        if self.groups is not None:
            out["groups"] = self.groups.tolist()
        return out


def mixture_problem(
    weights: torch.Tensor,
    means: torch.Tensor,
    variances: torch.Tensor,
    covariances: torch.Tensor | None,
    groups: torch.Tensor | None = None,
) -> str | None:
    """What makes these a mixture's parameters no longer (a hand-edited ``meta.json``), or None."""
    if means.dim() != 2 or not len(means):
        return f"means must be [K, d], got {list(means.shape)}"
    k, d = means.shape
    if weights.shape != (k,) or not bool((weights > 0).all()):
        return f"weights must be [K] = [{k}] and positive, got {list(weights.shape)}"
    if variances.shape != (k, d) or not bool((variances > 0).all()):
        return f"variances must be [K, d] = {[k, d]} and positive, got {list(variances.shape)}"
    if groups is not None:
        used = torch.unique(groups)
        if groups.shape != (k,) or not torch.equal(used, torch.arange(len(used))):
            return f"groups must be [K] = [{k}] cluster indices 0..m-1, each used, got {groups.tolist()}"
    if covariances is not None:
        if covariances.shape != (k, d, d):
            return f"covariances must be [K, d, d] = {[k, d, d]}, got {list(covariances.shape)}"
        if not torch.allclose(covariances, covariances.transpose(1, 2)) or bool(torch.linalg.cholesky_ex(covariances).info.any()):
            return "covariances must be symmetric and positive definite"
    return None


def mixture_from_modes(modes: dict[str, Any]) -> GaussianMixture | None:
    """The fitted mixture a ``meta.json``'s ``modes`` record (``means`` with ``variances``, and
    ``covariances`` when full; uniform weights when none are given; the background of
    ``outliers``, its ``share`` and ``log_density``, where one was fitted); None for known
    centres. Raises ValueError naming what is malformed."""
    if not (modes.get("means") and modes.get("variances")):
        return None
    means = torch.as_tensor(modes["means"], dtype=torch.float64)
    k = len(means)
    variances = torch.as_tensor(modes["variances"], dtype=torch.float64)
    weights = modes.get("weights")
    w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    cov = modes.get("covariances")
    covariances = None if cov is None else torch.as_tensor(cov, dtype=torch.float64)
    groups = None if modes.get("groups") is None else torch.as_tensor(modes["groups"], dtype=torch.long)
    problem = mixture_problem(w, means, variances, covariances, groups)
    if problem:
        raise ValueError(f"meta.json modes: {problem}; run `gan prepare` again")
    outliers = modes.get("outliers") or {}
    share, log_density = outliers.get("share") or 0.0, outliers.get("log_density")
    if not share or log_density is None:
        return GaussianMixture(w, means, variances, 0.0, 0, covariances, groups=groups)
    if not (0.0 < share < 1.0 and math.isfinite(log_density)):
        raise ValueError(
            f"meta.json modes.outliers: share must be in (0, 1) and log_density finite, got {share}, {log_density}; run `gan prepare` again"
        )
    box = None if outliers.get("box") is None else torch.as_tensor(outliers["box"], dtype=torch.float64)
    if box is not None and not (box.shape == (2, means.shape[1]) and bool((box[0] <= box[1]).all())):
        raise ValueError(
            f"meta.json modes.outliers.box must be [lowest corner, highest corner] of {means.shape[1]} columns each; run `gan prepare` again"
        )
    # the clusters' weights are stored summing to 1 (as_modes); beside the background, to 1 - share
    return GaussianMixture(
        w / w.sum() * (1.0 - share),
        means,
        variances,
        0.0,
        0,
        covariances,
        noise=share,
        noise_log_density=log_density,
        noise_box=box,
        groups=groups,
    )
