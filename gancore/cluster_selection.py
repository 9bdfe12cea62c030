"""How many clusters vector data hold, and which covariance model: the Bayesian information
criterion of a Gaussian mixture (:mod:`gancore.gaussian_mixture`) over k = 1..max_k and over
{diagonal, full} (Schwarz 1978; the rule of scikit-learn's ``GaussianMixture.bic``, x-means, and
mclust's joint choice of model and size). Nothing in it knows a data set: the count comes from
the likelihood alone.

Why a Gaussian mixture and BIC: splitting one Gaussian cluster in two never pays under BIC (the
halves' likelihood gain is smaller than the mixing cost), while merging two separated clusters
costs the likelihood of the gap between them; so the criterion has its minimum at the number of
Gaussian-like clusters, with unequal weights and widths allowed. Why both covariance models: a
diagonal mixture is not rotation-invariant. Two elongated clusters at 45 degrees to the axes are
two clusters to a full-covariance mixture and fifty diagonal pieces to a diagonal one (the fifty
were the limit), while axis-aligned or round clusters cost a full model its extra parameters for
nothing, so BIC keeps the diagonal one there. Full covariances are tried up to
:data:`~gancore.gmm_fit.FULL_COVARIANCE_DIMS` dimensions, where their d(d+1)/2
parameters per cluster stay few beside the points.

Where EM starts decides what it finds. K-means cuts an elongated cluster across its long axis and
halves a broad cluster around a tight spike, whatever its seeds, so EM for full covariances also
starts from k-means in whitened coordinates (:func:`starts`), from the best fit of one cluster
fewer with one component split in its own whitened coordinates (:func:`split_start`: a tilted pair
beside another cluster), and from the fit of one cluster more with two components merged
(:func:`merge_start`: the spike). Both models also start from their fit of one cluster fewer with
a cluster added where that fit explains the data least (:func:`grow_start`): a cluster of a few
rows far from the rest, which k-means' cells never isolate. Curved clusters are still cut into
several Gaussian pieces, which for a mixture of GANs only means more, easier parts.

Stray rows are no cluster. Each fit may add a uniform background over the data's box (mclust's
noise component; :func:`~gancore.gmm_fit.fit_with_background`), which BIC keeps where it
pays: five stray rows in 20,000 were otherwise a sixth, broad cluster, and one stray a cluster of
one point on the variance floor. Such one-point components are no candidates at all now.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from gancore.clustering import as_points, centres_of, kmeans, kmeans_best, whitened
from gancore.gaussian_mixture import GaussianMixture, component_rank
from gancore.gmm_fit import covariance_models, fit_with_background, variance_floor

SELECT_RESTARTS = 3
# The scan over k stops once this many k past the best one have not improved on it (at least
# PATIENCE_MIN, and half the best k: a curve that found 30 clusters is allowed a longer search).
PATIENCE_MIN = 5
# The least explained points grow_start tries as a new cluster's centre, beyond the rows the
# background holds (each stray wins only itself): few beside the thousands BIC is taken on, and
# at most GROW_CANDIDATES_MAX in all (data mostly uniform: every row the background's).
GROW_CANDIDATES = 50
GROW_CANDIDATES_MAX = 500
# Newton steps fitting a candidate's weight (the log-likelihood is concave in it), and the
# points x candidates evaluated at once.
GROW_WEIGHT_ITERS = 8
GROW_CHUNK = 4_000_000
RATIO_MAX_LOG = 600.0
# A candidate's density ratio below exp(-40) (4e-18) leaves 1 + w (ratio - 1) at 1 - w in float64
# (for w <= 1/2: half its last bit is 5.5e-17), so such a row's terms are the same for every row.
NEGLIGIBLE_LOG_RATIO = -40.0


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
        _, labels = kmeans_best(whitened(x), k, seed, restarts, f"{stream}/whitened/")
        out.append((centres_of(x, labels, k), labels))
    return out


def _hard_log_likelihood(x: torch.Tensor, labels: torch.Tensor, k: int, floor: float) -> float:
    """The log-likelihood of a hard partition, each part its own full Gaussian at its maximum
    (m points: -m/2 (d log 2 pi + log |S| + d)) and the parts mixed by their shares; up to the
    terms every partition of the same points shares."""
    total = 0.0
    for j in range(k):
        part = x[labels == j]
        m = len(part)
        centred = part - part.mean(0)
        cov = centred.T @ centred / m + floor * torch.eye(x.shape[1], dtype=x.dtype)
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
    floor = variance_floor(x)
    best: tuple[float, torch.Tensor, torch.Tensor] | None = None
    for j in range(gmm.k):
        members = (labels == j).nonzero()[:, 0]
        if len(members) < 2 * (d + 1):
            continue
        points = x[members]
        _, halves = kmeans(whitened(points), 2, seed, stream=f"{stream}split{j}")
        if int(halves.min()) == int(halves.max()):
            continue
        gain = _hard_log_likelihood(points, halves, 2, floor) - _hard_log_likelihood(points, torch.zeros_like(halves), 1, floor)
        if best is None or gain > best[0]:
            best = (gain, members, halves)
    if best is None:
        return None
    _, members, halves = best
    labels = labels.clone()
    labels[members[halves == 1]] = gmm.k
    return centres_of(x, labels, gmm.k + 1), labels


def grow_start(
    x: torch.Tensor, gmm: GaussianMixture, max_weight: float = 0.5, max_candidates: int | None = GROW_CANDIDATES_MAX
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A partition into ``gmm.k + 1`` clusters: ``gmm``'s, and a new one where its clusters explain
    the data least (the insertion step of greedy EM: Vlassis and Likas 2002, Verbeek et al. 2003).
    Each of the :data:`GROW_CANDIDATES` points of lowest density (as many more as the background
    holds: strays are the least explained points of all) is a candidate centre for a component
    shaped as ``gmm``'s tightest. Its weight is fitted with the old mixture held fixed (Verbeek et
    al.'s partial EM, by Newton's method), and the candidate that raises the log-likelihood the most
    is added with the points it is then the most probable component of, if they are enough for a
    component. A weight of one point's share lost to a background holding the rows: 40 rows of a
    real cluster in 20,000, which the background held at its weight of 91 rows, won no row. A
    count of points won chose a stray at a cluster's edge, which took 16 of its tail points, over 8
    rows of a real cluster; a stray row alone gains little against the background that holds it.
    None without such a candidate. K-means' cells lower the summed squared distance, and a few
    rows far from the rest lower it little, so no k-means start gave a real cluster of 8 rows in
    5,000 a cell of its own: its count scored a large cluster split in two instead, or the rows
    went to the background. ``max_weight``: the most a candidate's weight may be fitted to;
    ``max_candidates``: the most candidates tried (None: all the least explained points)."""
    if gmm.degenerate:
        return None
    x = as_points(x)
    n, d = x.shape
    joint = gmm.log_joint(x)
    explained = joint.amax(1)
    total = torch.logsumexp(joint, 1)
    background = gmm.background_log_joint
    outliers = 0 if background is None else int((explained < background).sum())  # gmm.outliers(x), from this joint
    if background is not None:
        explained = explained.clamp_min(background)
        total = torch.logaddexp(total, torch.tensor(background, dtype=total.dtype))
    tried = GROW_CANDIDATES + outliers if max_candidates is None else min(GROW_CANDIDATES + outliers, max_candidates)
    centres = x[total.argsort()[:tried]].to(gmm.means.dtype)
    best: tuple[float, torch.Tensor] | None = None
    for chunk in centres.split(max(1, GROW_CHUNK // n)):
        gain, wins = _inserted(x, gmm, chunk, total, explained, max_weight)
        if best is None or gain > best[0]:
            best = (gain, wins)
    assert best is not None
    wins = best[1]
    if int(wins.sum()) < component_rank(d, gmm.covariance):
        return None
    labels = joint.argmax(1)  # gmm.predict(x)
    labels[wins] = gmm.k
    return centres_of(x, labels, gmm.k + 1), labels


def _inserted(
    x: torch.Tensor, gmm: GaussianMixture, centres: torch.Tensor, total: torch.Tensor, explained: torch.Tensor, max_weight: float
) -> tuple[float, torch.Tensor]:
    """For candidate components at ``centres`` shaped as ``gmm``'s tightest, the one of the largest
    log-likelihood gain at its weight fitted by Newton's method ((1 - w) old + w new, the old mixture
    of log density ``total`` held fixed): its gain, and which points it is then the most probable
    component of against ``explained`` (the old components' and the background's best) [N]."""
    n, d = x.shape
    m = len(centres)
    if gmm.covariances is None:
        tight = int(torch.log(gmm.variances).sum(1).argmin())
        shape: dict[str, Any] = {"variances": gmm.variances[tight].expand(m, d), "covariances": None}
    else:
        tight = int(torch.linalg.slogdet(gmm.covariances)[1].argmin())
        shape = {"variances": gmm.variances[tight].expand(m, d), "covariances": gmm.covariances[tight].expand(m, d, d)}
    density = GaussianMixture(gmm.weights.new_ones(m), centres, log_likelihood=0.0, n=n, **shape).log_joint(x).T  # [m, N]
    log_ratio = density - total[None]  # of the new density over the old one
    # Rows no candidate reaches (ratio under NEGLIGIBLE_LOG_RATIO) enter every sum below with the
    # same terms, -1 / (1 - w), its square and log(1 - w) to the last bit, so they are counted, not
    # summed: a tight candidate reaches a few hundred of 90,000 rows, and the Newton steps over all
    # of them were most of the growth's time (800 stray rows, every one a candidate: 16 s of 19).
    reached = (log_ratio > NEGLIGIBLE_LOG_RATIO).any(0)
    # (capped where the old density is all but zero: a gain underrated)
    ratio = log_ratio[:, reached].clamp_max_(RATIO_MAX_LOG).exp()
    unreached = float(n - ratio.shape[1])
    low, high = 1.0 / n, max(max_weight, 1.0 / n)
    w = ((ratio > 1).double().sum(1, keepdim=True) / n).clamp(low, high).to(ratio.dtype)  # the rows it explains better
    for _ in range(GROW_WEIGHT_ITERS):  # Newton's method on the log-likelihood, concave in w
        slope = (ratio - 1) / (1 - w + w * ratio)
        first = slope.sum(1, keepdim=True) - unreached / (1 - w)
        second = slope.square().sum(1, keepdim=True) + unreached * (1 / (1 - w)).square()
        w = (w + first / second.clamp_min(1e-300)).clamp(low, high)
    gain = torch.log1p(w * (ratio - 1)).sum(1) + unreached * torch.log1p(-w[:, 0])
    best = int(gain.argmax())
    return float(gain[best]), density[best] - explained > torch.log((1 - w[best, 0]) / w[best, 0])


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
    cost = ww * torch.linalg.slogdet(merged + variance_floor(x) * torch.eye(d, dtype=cov.dtype))[1] - wa * logdet[a] - wb * logdet[b]
    pick = int(cost.argmin())
    keep, drop = int(a[pick]), int(b[pick])
    labels = gmm.predict(x)
    labels = torch.where(labels == drop, keep, labels)
    labels = labels - (labels > drop).long()
    return centres_of(x, labels, gmm.k - 1), labels


def fit_mixture(
    x: torch.Tensor, k: int, seed: int, restarts: int, stream: str, covariance: str = "auto", start: GaussianMixture | None = None
) -> GaussianMixture:
    """The mixture of ``k`` components on ``x`` of lowest BIC: ``covariance`` diag or full, or
    ``auto`` for either. The diagonal model starts from k-means in the data's axes, the full one
    also from the other :func:`starts`, and both from ``start``'s partition of ``x`` (the fit the
    count was chosen with, on a subset: a cluster no k-means start finds, found there, is kept)."""
    x = as_points(x)
    models = covariance_models(x) if covariance == "auto" else (covariance,)
    partitions = starts(x, k, seed, restarts, stream, models)
    chosen = [(start.means.to(x.dtype), start.predict(x))] if start is not None and start.k == k else []
    fits = [
        fit_with_background(x, *p, covariance=model, seed=seed)
        for model in models
        for p in (partitions if model == "full" else partitions[:1]) + chosen
    ]
    usable = [g for g in fits if not g.degenerate] or [fit_with_background(x, *partitions[0], covariance="diag", seed=seed)]
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
            "criterion": f"BIC of a Gaussian mixture ({' or '.join(self.curves)} covariances, and a uniform background "
            f"where it holds stray points; EM from the best of "
            f"{SELECT_RESTARTS} k-means++ runs and from the fit of one cluster fewer grown where it explains the data least, "
            "full covariances also from whitened k-means, split and merged fits), "
            f"minimised over k = 1..{self.max_k} and the covariance model",
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
    :data:`~gancore.gmm_fit.FULL_COVARIANCE_DIMS` dimensions) minimising BIC over
    k = 1..``max_k``. At each k the diagonal model starts from k-means in the data's axes; the full
    one also from the other :func:`starts` and :func:`split_start`; both from :func:`grow_start` on
    their own fit of k - 1; each keeps its best fit, and a downward pass starts each full fit of k
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
            grown = grow_start(x, fits[model][-1]) if fits[model] else None
            tried = tried + ([grown] if grown else [])
            fits[model].append(min((fit_with_background(x, *p, covariance=model, seed=seed) for p in tried), key=_criterion))
            if model == "full":
                previous = None if fits[model][-1].degenerate else fits[model][-1]
        best = min(ks, key=lambda j: min(_criterion(fits[m][j - 1]) for m in models))
        if k - best >= max(PATIENCE_MIN, best // 2):
            break
    if "full" in models:
        # Downwards: each full fit of k clusters, with the two components merged that lose the
        # least likelihood by it, starts EM at k - 1 (a tight spike inside a broad cluster: k-means
        # halves the broad one, and only the fit with three, spike found, merges into the right
        # two). Not for the diagonal model: its fits may keep one-point clusters (an outlier is
        # one), and merging from them finds better-scored fits with more such clusters: 30 points
        # in 3 clusters became 4 to 6.
        for k in reversed(ks[1:]):
            merged = merge_start(x, fits["full"][k - 1])
            if merged is not None:
                fit = fit_with_background(x, *merged, covariance="full", seed=seed)
                if _criterion(fit) < _criterion(fits["full"][k - 2]):
                    fits["full"][k - 2] = fit
    curves = {model: [_criterion(f) for f in fits[model]] for model in models}
    best, best_model = min(((k, m) for k in ks for m in models), key=lambda km: (curves[km[1]][km[0] - 1], km[0]))
    return Selection(best, ks, curves, len(x), max_k, best_model, mixture=fits[best_model][best - 1])
