"""Mode coverage, sample quality and mode KL for data with known modes, and complete-collapse measures.

Three protocols, one per kind of data, each returning the same keys (:class:`ModeReport`):

* 2D mixtures (ring8, grid25) -- PacGAN ``synthetic_data_experiments``
  (``pacgan/extensions.py``, ``MetricLogger``), which we follow exactly: each generated point is
  assigned to its nearest centre; it is *high quality* when that distance is below 3 sigma (strict
  ``<``, as ``min_dis < dis_thre`` there, with the distance in units of sigma). The mode histogram
  counts **high-quality points only** (``detail_of_coverage`` is incremented only inside the
  threshold), a mode is covered when it holds at least one of them, and the reverse KL is taken on
  that histogram normalised by its own total: KL(generated || real). Against the uniform real
  histogram this is PacGAN's "reverse KL" column.
* Stacked MNIST (1000 modes) -- PacGAN ``stacked_MNIST_experiments``: a digit classifier labels
  each channel; the mode is the triple. Every sample counts (no quality filter): modes = distinct
  triples, KL = sum p log(p / 0.001) over the non-empty bins of the generated histogram.
  ``high_quality_fraction`` is our addition: the share of samples whose three per-channel
  predictions all reach the confidence threshold.
* Labelled image sets -- mode = classifier argmax over all samples (the histogram, as in the
  stacked-MNIST protocol); high quality = max probability >= ``confidence``; a mode is covered
  when at least one high-quality sample falls in it; mode KL = KL(generated || real) with the real
  histogram from the prepared test labels.

Every report also carries the coverage a *perfect* generator would reach with the same number of
counted samples (``modes_expected`` and its standard deviation), because with few samples or
many modes ``modes_covered < modes_total`` is not by itself evidence of a missing mode.

Complete collapse ("nearly all samples the same") and collapse inside modes are measured in
:mod:`gancore.diagnostics.diversity`. The image protocols are in :mod:`gancore.diagnostics.image_modes`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from gancore.diagnostics.coverage import SHORT_LABELS_SHOWN, expected_coverage, short_modes
from gancore.diagnostics.outside import outside_count
from gancore.gaussian_mixture import GaussianMixture, mixture_from_modes

# PacGAN's quality radius, in units of the mixture's sigma (``dis_thre=3`` in MetricLogger).
QUALITY_SIGMAS = 3.0
STACKED_MODES = 1000
STACKED_PROTOCOL = "pacgan_stacked_mnist"
# The mode report's figures the verdict reads (diagnose.json's and the collapse monitor's).
REPORT_FIGURES = (
    "modes_total",
    "modes_covered",
    "modes_expected",
    "modes_expected_sd",
    "modes_short",
    "modes_short_labels",
    "high_quality_fraction",
    "mode_kl",
)
# And where the data have a background (a fitted mixture's): the samples outside every cluster,
# beside the training rows' share, and whether the samples are far short of it (a count of its
# own: the rows outside are no mode, and counted as one, modes_short could exceed modes_total).
OUTSIDE_FIGURES = ("outside_share", "outside_share_real", "outside_short")


def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def histogram(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts, dtype=np.float64)


def mode_kl(gen_counts: np.ndarray, real_hist: np.ndarray) -> float | None:
    """KL(generated histogram || real histogram) in nats, via :func:`gancore.metrics.kl_divergence`.

    ``None`` where it is not defined: no counted generated sample, or generated mass on a mode the
    real histogram never shows (the KL would be infinite).
    """
    from gancore.metrics import kl_divergence

    gen_counts = np.asarray(gen_counts, dtype=np.float64)
    real_hist = np.asarray(real_hist, dtype=np.float64)
    if gen_counts.sum() <= 0 or np.any((gen_counts > 0) & (real_hist <= 0)):
        return None
    return float(kl_divergence(histogram(gen_counts), real_hist / real_hist.sum()))


def _report(
    protocol: str,
    gen_counts: np.ndarray,
    covered_counts: np.ndarray,
    real_hist: np.ndarray,
    high_quality_fraction: float | None,
    kl: float | None,
    n_counted: int,
    labels: Sequence[str],
    coverage_hist: np.ndarray | None = None,
    outside: tuple[int, int, float, bool] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A mode report. ``coverage_hist``: the histogram the counted (covered) samples of a faithful
    generator follow, when it differs from ``real_hist``, the one the reverse KL of all samples
    compares with (labelled images: the real images the classifier is sure of). ``outside``: the
    samples outside every cluster, of how many, the training rows' share outside them, and
    whether that share is tested as a mode's (:func:`~gancore.diagnostics.outside.outside_count`)."""
    reference = real_hist if coverage_hist is None else coverage_hist
    expected, expected_sd = expected_coverage(reference, n_counted)
    tested = outside is not None and outside[3]
    tests = int((np.asarray(reference) > 0).sum()) + tested
    short = short_modes(reference, covered_counts, n_counted, tests=tests)
    short_labels = [str(labels[i]) if i < len(labels) else str(i) for i in short[:SHORT_LABELS_SHOWN]]
    if outside is not None:
        count, n, share, _ = outside
        extra["outside_share"], extra["outside_share_real"] = count / n if n else None, share
        extra["outside_short"] = tested and 0 in short_modes([share, 1.0 - share], [count, n - count], n, tests=tests)
    return {
        "protocol": protocol,
        "modes_total": int(len(gen_counts)),
        "modes_covered": int((covered_counts > 0).sum()),
        "modes_expected": expected,
        "modes_expected_sd": expected_sd,
        "modes_short": len(short),
        "modes_short_labels": short_labels,
        "high_quality_fraction": high_quality_fraction,
        "mode_kl": kl,
        "n_counted": int(n_counted),
        "generated_counts": [int(c) for c in gen_counts],
        "real_histogram": [float(r) for r in real_hist],
        "mode_labels": list(labels),
        **extra,
    }


def assign_2d(points: Any, centers: Any, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of each point and whether it lies within ``QUALITY_SIGMAS`` sigma of it."""
    x = torch.as_tensor(_as_numpy(points), dtype=torch.float64).reshape(-1, 2)
    c = torch.as_tensor(_as_numpy(centers), dtype=torch.float64).reshape(-1, 2)
    # Exact differences (no matrix-product shortcut): distances of 0.01 on coordinates of 4 are
    # where the x^2 + y^2 - 2xy form loses digits.
    dist = torch.cdist(x, c, compute_mode="donot_use_mm_for_euclid_dist")
    nearest_dist, nearest = dist.min(dim=1)
    return nearest.numpy(), (nearest_dist < QUALITY_SIGMAS * sigma).numpy()


def modes_2d(
    points: Any,
    centers: Any,
    sigma: float,
    real_labels: Any | None = None,
    real_points: Any | None = None,
    support: Any | None = None,
) -> dict[str, Any]:
    """PacGAN's 2D protocol on generated ``points`` [N, 2] (see the module docstring).

    The real histogram is that of ``real_labels`` (the index of each real point's generating
    centre) when given, else the same protocol applied to ``real_points``, else uniform (PacGAN),
    over the ``support`` centres only when given (a mixture part's).
    """
    centers = _as_numpy(centers).reshape(-1, 2)
    k = len(centers)
    nearest, good = assign_2d(points, centers, sigma)
    counts = np.bincount(nearest[good], minlength=k).astype(np.int64)
    real_counts: np.ndarray
    if real_labels is not None:
        real_counts = np.bincount(_as_numpy(real_labels).astype(np.int64), minlength=k)
        real_source = "prepared test labels (generating centre)"
    elif real_points is not None:
        r_nearest, r_good = assign_2d(real_points, centers, sigma)
        real_counts = np.bincount(r_nearest[r_good], minlength=k)
        real_source = "high-quality real test points"
    elif support is not None:
        real_counts = np.zeros(k)
        real_counts[np.asarray(list(support), dtype=np.int64)] = 1.0
        real_source = f"uniform over the {len(list(support))} centre(s) of this part's data"
    else:
        real_counts = np.ones(k)
        real_source = "uniform"
    real_hist = histogram(real_counts.astype(np.float64))
    n = len(nearest)
    return _report(
        "pacgan_2d: nearest centre, high quality if distance < 3 sigma; histogram of high-quality samples",
        counts,
        counts,
        real_hist,
        float(good.mean()) if n else None,
        mode_kl(counts, real_hist),
        int(good.sum()),
        [str(i) for i in range(k)],
        real_histogram_source=real_source,
        quality_radius=QUALITY_SIGMAS * sigma,
    )


# PacGAN's 2D quality probability: a sample of a mode's own Gaussian lies within 3 sigma of its
# centre with probability 1 - exp(-9/2) = 98.89 % in 2D.
PACGAN_QUALITY_PROBABILITY = 1.0 - math.exp(-(QUALITY_SIGMAS**2) / 2)


def quality_radius(dims: int, probability: float = PACGAN_QUALITY_PROBABILITY) -> float:
    """The Mahalanobis radius r with P(chi_dims <= r) = ``probability``: PacGAN's 3 sigma carried to
    ``dims`` dimensions (r = 3 exactly for 2D), so that a faithful sample is high quality with the
    same probability in any dimension. Bisection on the chi-square CDF (regularised gamma)."""
    lo, hi = 0.0, 10.0 + 10.0 * math.sqrt(dims)
    half = torch.tensor(dims / 2.0, dtype=torch.float64)
    for _ in range(100):
        mid = (lo + hi) / 2
        if float(torch.special.gammainc(half, torch.tensor(mid * mid / 2, dtype=torch.float64))) < probability:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def assign_gaussian(points: Any, mixture: GaussianMixture) -> tuple[np.ndarray, np.ndarray]:
    """Each point's most probable cluster of ``mixture`` (its components' posteriors summed: a
    cluster may take several components, :mod:`gancore.mode_merging`) and its Mahalanobis distance
    to that cluster's most probable component (diagonal or full covariances): a sample near any
    piece of its cluster is in it. The rule is the fitted mixture's own, which labels the real test
    points: the nearest component in Mahalanobis distance alone gives a wide component a narrow
    one's samples, so a faithful generator's histogram would differ from the real one's."""
    x = torch.as_tensor(_as_numpy(points), dtype=torch.float64).reshape(len(points), -1)
    if not len(x):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    nearest, squared = zip(*(mixture.assign(chunk) for chunk in x.split(4096)))
    return torch.cat(nearest).numpy(), torch.cat(squared).clamp_min(0).sqrt().numpy()


def modes_gaussian(
    points: Any, mixture: GaussianMixture, real_labels: Any | None = None, outside_share: float | None = None
) -> dict[str, Any]:
    """PacGAN's protocol carried to a Gaussian mixture of any dimension with diagonal or full
    covariances (the clusters prepare found in a points file): each sample goes to its most
    probable cluster (:func:`assign_gaussian`), is high quality within :func:`quality_radius` of
    that cluster's most probable component in Mahalanobis distance, and the histogram over the
    clusters counts high-quality samples. In 2D with equal isotropic components of equal weight,
    each its own cluster, this is :func:`modes_2d`.

    ``outside_share``: the training rows' share outside every cluster (the mixture's background
    explains them better: stray or flat rows, no mode), where the mixture has a background. From
    :data:`~gancore.background.STRAY_ROWS_MAX`, a generator far short of it is short as of a mode: beside four
    clusters, one that dropped 20 % to 45 % of flat rows covered every cluster and was called
    healthy. Fewer rows outside are stray rows, which a generator need not make."""
    k, dims = mixture.clusters, mixture.means.shape[1]
    nearest, dist = assign_gaussian(points, mixture)
    radius = quality_radius(dims)
    good = dist < radius
    counts = np.bincount(nearest[good], minlength=k).astype(np.int64)
    if real_labels is not None:
        labels = _as_numpy(real_labels).astype(np.int64)
        real_hist = histogram(np.bincount(labels[labels >= 0], minlength=k).astype(np.float64))
        source = "prepared rows' clusters, those high quality under the same rule (reference_labels)"
    else:
        real_hist, source = np.full(k, 1.0 / k), "uniform"
    return _report(
        f"gaussian_{dims}d ({mixture.covariance} covariances): the most probable cluster, high quality within "
        f"{radius:.4g} of its most probable component "
        f"(P = {PACGAN_QUALITY_PROBABILITY:.4f} for a faithful sample, as PacGAN's 3 sigma in 2D); histogram of high-quality samples",
        counts,
        counts,
        real_hist,
        float(good.mean()) if len(nearest) else None,
        mode_kl(counts, real_hist),
        int(good.sum()),
        [str(i) for i in range(k)],
        real_histogram_source=source,
        quality_radius=radius,
        outside=outside_count(points, mixture, outside_share),
    )


def vector_modes(
    points: Any, modes: dict[str, Any], real_labels: Any | None = None, real_points: Any | None = None, support: Any | None = None
) -> dict[str, Any] | None:
    """The mode report of vector samples against ``modes`` (a prepared ``meta.json``'s ``modes``):
    the PacGAN protocol for known centres (ring8, grid25), its Mahalanobis form for the mixture
    prepare fitted to a points file; None when the data have neither. Known centres are a mixture
    of equal weights, so their reference histogram is uniform, PacGAN's reverse KL (``real_labels``
    and ``real_points`` are not read: a histogram of drawn test labels adds its own sampling noise,
    0.0060 against 0.0048 for a faithful grid25 generator, 2,500 samples, 10,000 test labels,
    mean of 200 draws); a fitted mixture's is that of ``real_labels``, the prepared rows' high
    quality ones (:func:`reference_labels`; -1 is not counted). ``support``: the centres a mixture
    part's data lie at (uniform over those)."""
    mixture = mixture_from_modes(modes)
    if mixture is not None:
        return modes_gaussian(points, mixture, real_labels=real_labels, outside_share=(modes.get("outliers") or {}).get("row_share"))
    if modes.get("centers") and modes.get("sigma"):
        return modes_2d(points, modes["centers"], float(modes["sigma"]), support=support)
    return None


def reference_labels(data: Any) -> torch.Tensor | None:
    """The labels a fitted mixture's reference histogram counts (:func:`modes_gaussian`): each
    prepared row's cluster where the row is high quality under the protocol, -1 elsewhere, so
    that the reference follows what a faithful generator's counted samples follow (up to the
    clusters prepare found among these same rows: a cluster of 0.18 % that growth found held
    0.15 % of the counted rows and 0.05 % of 400,000 fresh draws, and a faithful generator was
    short of it in 3 of 30 draws of 20,000, 21 of 30 before; a review). The prepared
    labels (each row's most probable cluster, :meth:`~gancore.data.prepared.PreparedData.all_labels`)
    count every row: beside 15 % flat rows in 3-D, a cluster of 0.2 % among them was the most
    probable of 16 % of the rows, and a faithful generator, which puts 2 % of its counted samples
    there, was short of it at every sample size. ``data``: a :class:`~gancore.data.prepared.PreparedData`;
    its own labels where its modes are no fitted mixture."""
    modes, labels = data.meta.get("modes") or {}, data.all_labels()
    if mixture_from_modes(modes) is None or labels is None:
        return labels
    return vector_assignments(data.all_rows(), modes)


def vector_assignments(points: Any, modes: dict[str, Any]) -> torch.Tensor:
    """Each point's mode under :func:`vector_modes`' protocol, -1 where it is not high quality."""
    mixture = mixture_from_modes(modes)
    if mixture is not None:
        nearest, dist = assign_gaussian(points, mixture)
        good = dist < quality_radius(mixture.means.shape[1])
    else:
        nearest, good = assign_2d(points, modes["centers"], float(modes["sigma"]))
    return torch.where(torch.from_numpy(good), torch.from_numpy(nearest), -1)
