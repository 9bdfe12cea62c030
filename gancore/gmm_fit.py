"""Fitting a :class:`~gancore.gaussian_mixture.GaussianMixture` by EM from a hard partition
(k-means'), with diagonal or full covariances, and with a uniform background over the data's box
(mclust's noise component) where BIC prefers it. Computed in float64: tight clusters (sigma 0.01)
need the digits.
"""

from __future__ import annotations

import math

import torch

from gancore.clustering import CHUNK, EXACT_DIMS, as_points, kmeans, nearest
from gancore.gaussian_mixture import POINT_MASS_ROWS, GaussianMixture, component_rank, outer_chunks, outer_rows

# EM starts from k-means, near a fixed point already; BIC compares likelihoods that differ by
# hundreds of nats between neighbouring k, so 1e-5 nats per point is far below what could move the
# choice.
EM_ITERS = 50
EM_TOL = 1e-5
# Variance floor of a component, relative to the data's mean per-dimension variance: a cluster of
# repeated points would otherwise have zero variance and unbounded likelihood.
VARIANCE_FLOOR = 1e-6

# Full covariances are a candidate model up to this many dimensions (the exact, float64 regime):
# beyond it their d(d+1)/2 parameters per cluster outgrow the few thousand points BIC is taken on,
# and EM's d x d updates per component outgrow the diagonal ones' cost by d.
FULL_COVARIANCE_DIMS = EXACT_DIMS
COVARIANCE_MODELS = ("diag", "full")
# Stray rows are the fewer: a background holding this share of the rows or more is the data's
# own flat law (a uniform square), not strays. Taken as strays, its rows were no mode, and a
# generator that kept half the square, or only the clusters beside 60 % of flat rows, covered
# every mode. A definition, not a fit: a cliff (45 % flat rows are strays, 55 % are tiled), said
# in the README. The rounded columns' background (gancore.lattice) has the same bound.
STRAY_SHARE_MAX = 0.5
# The most outer-product values EM keeps for its run (256 MB in float64: 1,000,000 rows in 5-D,
# 130,000 in 16-D); beyond, each step computes them chunk by chunk again.
OUTER_CACHE_VALUES = 2**25


def variance_floor(x: torch.Tensor) -> float:
    """:data:`VARIANCE_FLOOR` in ``x``'s units: times its mean per-column variance (1 for
    identical points, where any scale is theirs), so that no choice depends on the data's units."""
    spread = float(x.var(dim=0).mean()) if len(x) > 1 else 0.0
    return VARIANCE_FLOOR * (spread if spread > 0 else 1.0)


def background_box(x: torch.Tensor) -> torch.Tensor:
    """``x``'s bounding box [2, d] (lowest and highest corner), each side at least as wide as a
    uniform spread of the variance floor (widened about its middle)."""
    lo, hi = x.amin(0), x.amax(0)
    width = (hi - lo).clamp_min(math.sqrt(12.0 * variance_floor(x)))
    middle = (lo + hi) / 2
    return torch.stack([middle - width / 2, middle + width / 2])


def fit_gmm(
    x: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor, iters: int = EM_ITERS, covariance: str = "diag", noise: bool = False
) -> GaussianMixture:
    """EM for a Gaussian mixture (``covariance``: diag or full) started from a hard partition
    (e.g. k-means). The variance floor is added to a full covariance's diagonal, as scikit-learn's
    ``reg_covar``, and a covariance that rounding still leaves short of positive definite (a
    component on points that are all the same) has its eigenvalues raised to the floor. EM runs on
    the data centred on their mean (moments about the origin, E[x x^T] - mu mu^T, lose the digits
    the data's offset takes) and the means are moved back.

    ``noise``: one more component, uniform over the data's box, whose weight EM estimates from
    one point's worth. It takes the points no cluster explains (outliers), which otherwise become
    clusters of their own: five stray rows in 20,000 were a sixth, broad component, inside whose
    3 sigma lay 94 % of the clusters' box, so that noise scored as high quality. On Gaussian
    clusters its weight stays near 0 (their tails fall far below a uniform density)."""
    if covariance not in COVARIANCE_MODELS:
        raise ValueError(f"covariance must be one of {', '.join(COVARIANCE_MODELS)}, got {covariance!r}")
    x = as_points(x).double()
    n, d = x.shape
    k = len(centers)
    floor = variance_floor(x)
    box = background_box(x) if noise else None
    background = -float(torch.log(box[1] - box[0]).sum()) if box is not None else 0.0
    offset = x.mean(0)
    x = x - offset
    resp = torch.zeros(n, k, dtype=torch.float64)
    member = labels >= 0  # -1: the background's from the start
    resp[member.nonzero()[:, 0], labels[member]] = 1.0
    share = max(1, int((~member).sum())) / n if noise else None
    outer = outer_chunks(x) if covariance == "full" and n * d * d <= OUTER_CACHE_VALUES else None
    previous = -math.inf
    gmm = None
    for _ in range(iters):
        counts = resp.sum(0) + 1e-12
        means = resp.T @ x / counts[:, None]
        if covariance == "full":
            covariances = _full_covariances(x, resp, counts, means, floor, outer)
            variances = torch.diagonal(covariances, dim1=1, dim2=2).clone()
        else:
            covariances = None
            variances = ((resp.T @ (x * x)) / counts[:, None] - means**2).clamp_min(floor)
        weights = counts / counts.sum() * (1.0 - share) if share is not None else counts / n
        gmm = GaussianMixture(weights, means, variances, 0.0, n, covariances, share, background, floor)
        # logsumexp and the responsibilities from one exp (the E-step's cost is its exps). Below
        # -700 a term is under 1e-304 of the peak's and changes nothing, but exp's underflow path
        # is 15-30x slower than its normal one: clamped, EM on tight 2-D clusters ran 3x faster.
        # the background's column where there is one (share > 0 throughout: it starts at a point's
        # worth, and exp's clamp below keeps it above 1e-305)
        joint = gmm.log_joint_with_background(x, outer)
        peak = joint.amax(1, keepdim=True)
        resp = torch.exp((joint - peak).clamp_min_(-700.0))
        mass = resp.sum(1, keepdim=True)
        gmm.log_likelihood = float((peak + torch.log(mass)).sum())
        resp /= mass
        if share is not None:
            share = float(resp[:, k].sum()) / n
            resp = resp[:, :k]
        if gmm.log_likelihood / n - previous < EM_TOL:
            break
        previous = gmm.log_likelihood / n
    assert gmm is not None
    gmm.means = gmm.means + offset
    gmm.noise_box = box
    return gmm


def fit_with_background(
    x: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor, covariance: str = "diag", seed: int = 0
) -> GaussianMixture:
    """:func:`fit_gmm` with the uniform background where BIC prefers it, as it prefers a count;
    where the background holds less than half a point (Gaussian clusters' tails), the fit is the
    one without it, scored without its parameters, and where it holds :data:`STRAY_SHARE_MAX` of
    the rows or more (flat data: a uniform square was 97 % background beside one component of
    2 %, each row an outlier), the fit without it, whose components tile the flat law. A start
    cell of fewer distinct points than a component needs (:meth:`GaussianMixture.degenerate`)
    starts in the background, and the k cells
    are cut again from the other points: k-means gives a far stray row a cell of its own, EM kept
    it there on the variance floor, and every count whose start did so was refused (one row at
    100 times the spread of ring8's turned its 8 clusters into 1)."""
    x = as_points(x).double()
    k = len(centers)
    background, plain = _without_lone_cells(x, labels, k, component_rank(x.shape[1], covariance), seed)
    gmm = fit_gmm(x, centers, background, covariance=covariance, noise=True)
    assert gmm.noise is not None
    if gmm.noise * gmm.n < 0.5:
        gmm.weights = gmm.weights / gmm.weights.sum()
        gmm.noise, gmm.noise_box = None, None
        gmm.log_likelihood = float(gmm.log_density(x).sum())
        return gmm
    without = fit_gmm(x, centers, plain, covariance=covariance)
    if gmm.noise >= STRAY_SHARE_MAX:
        return without
    return min((gmm, without), key=lambda g: (g.degenerate, g.bic))


def _without_lone_cells(x: torch.Tensor, labels: torch.Tensor, k: int, rank: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(``labels`` with the points of cells of fewer than ``rank`` distinct points at -1, the
    background's, and the k cells cut again by k-means from the rest; the same with those points
    in their nearest cell), for a few rounds (a new cut may leave another stray alone). A cell of
    :data:`POINT_MASS_ROWS` identical rows or more is an atom, a cluster, as
    :meth:`GaussianMixture.degenerate` has it: moved to the background, three integer codes
    beside two blobs were one cluster, and the blobs cut into pieces."""
    lone = torch.zeros(len(x), dtype=torch.bool)
    cells, centres = labels, x[:0]
    for round_ in range(3):
        distinct = torch.unique(torch.cat([cells[:, None].to(x.dtype), x], 1), dim=0)[:, 0].long()
        rows = torch.bincount(cells[cells >= 0], minlength=k)
        small = ((torch.bincount(distinct[distinct >= 0], minlength=k) < rank) & (rows < POINT_MASS_ROWS)).nonzero()[:, 0]
        alone = torch.isin(cells, small) & ~lone
        if not alone.any() or int((~(lone | alone)).sum()) < k * rank:
            break
        lone |= alone
        centres, rest = kmeans(x[~lone], k, seed, stream=f"background/{round_}")
        cells = torch.full_like(labels, -1)
        cells[~lone] = rest
    if not lone.any():
        return labels, labels
    plain = cells.clone()
    plain[lone] = nearest(x[lone], centres.to(x.dtype))  # (k-means works in float32 beyond EXACT_DIMS columns)
    return cells, plain


def _full_covariances(
    x: torch.Tensor, resp: torch.Tensor, counts: torch.Tensor, means: torch.Tensor, floor: float, outer: list[torch.Tensor] | None = None
) -> torch.Tensor:
    """The M-step's covariances [k, d, d] (in row chunks: the outer products are [N, d * d];
    ``outer``: :func:`outer_chunks` of ``x``, where known), symmetric and positive definite."""
    k, d = means.shape
    outers = outer if outer is not None else map(outer_rows, x.split(CHUNK))
    second = sum((r.T @ o for r, o in zip(resp.split(CHUNK), outers)), torch.zeros(k, d * d, dtype=x.dtype))
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
