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

Complete collapse ("nearly all samples the same") is measured without modes, see
:func:`collapse_measures`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from gancore.seeds import generator as seeded_generator

# PacGAN's quality radius, in units of the mixture's sigma (``dis_thre=3`` in MetricLogger).
QUALITY_SIGMAS = 3.0
STACKED_MODES = 1000
# Subset size for the pairwise-distance measures: 2,000 points give 2M pairs, far more than needed
# to pin a mean distance to < 1 %, at a cdist cost of milliseconds.
PAIRWISE_MAX_POINTS = 2000


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


def expected_coverage(real_hist: np.ndarray, n: int) -> tuple[float, float]:
    """Mean and standard deviation of the number of modes hit by ``n`` draws from ``real_hist``.

    Mode i is missed with probability q_i = (1 - p_i)^n; the missed count has mean sum q_i and
    variance sum_i q_i (1 - q_i) + sum_{i != j} [(1 - p_i - p_j)^n - q_i q_j].
    """
    p = np.asarray(real_hist, dtype=np.float64)
    p = p[p > 0] / p.sum()
    if n <= 0 or p.size == 0:
        return 0.0, 0.0
    q = np.exp(n * np.log1p(-np.minimum(p, 1 - 1e-15)))
    both = np.clip(1.0 - p[:, None] - p[None, :], 0.0, 1.0)
    with np.errstate(divide="ignore"):
        qq = np.where(both > 0, np.exp(n * np.log(np.where(both > 0, both, 1.0))), 0.0)
    cov = qq - np.outer(q, q)
    np.fill_diagonal(cov, q * (1 - q))
    # Rounding leaves ~1e-70 where the true variance is 0 (every mode certain to be hit).
    var = float(cov.sum())
    return float(p.size - q.sum()), math.sqrt(var) if var > 1e-18 else 0.0


def _report(
    protocol: str,
    gen_counts: np.ndarray,
    covered_counts: np.ndarray,
    real_hist: np.ndarray,
    high_quality_fraction: float | None,
    kl: float | None,
    n_counted: int,
    labels: Sequence[str],
    **extra: Any,
) -> dict[str, Any]:
    expected, expected_sd = expected_coverage(real_hist, n_counted)
    return {
        "protocol": protocol,
        "modes_total": int(len(gen_counts)),
        "modes_covered": int((covered_counts > 0).sum()),
        "modes_expected": expected,
        "modes_expected_sd": expected_sd,
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
) -> dict[str, Any]:
    """PacGAN's 2D protocol on generated ``points`` [N, 2] (see the module docstring).

    The real histogram is that of ``real_labels`` (the index of each real point's generating
    centre) when given, else the same protocol applied to ``real_points``, else uniform (PacGAN).
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


def stacked_channel_probs(probs: Any) -> torch.Tensor:
    """[N, 1000] triple probabilities -> [N, 3, 10] per-channel marginals (mode = d0*100 + d1*10 + d2)."""
    p = torch.as_tensor(_as_numpy(probs), dtype=torch.float64)
    if p.dim() != 2 or p.shape[1] != STACKED_MODES:
        raise ValueError(f"stacked MNIST probabilities must be [N, {STACKED_MODES}], got {list(p.shape)}")
    cube = p.reshape(-1, 10, 10, 10)
    return torch.stack([cube.sum((2, 3)), cube.sum((1, 3)), cube.sum((1, 2))], dim=1)


def modes_stacked(probs: Any, confidence: float) -> dict[str, Any]:
    """PacGAN's stacked-MNIST protocol on the classifier's 1000-way probabilities [N, 1000]."""
    channel = stacked_channel_probs(probs)
    conf, digits = channel.max(dim=2)
    triples = (digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]).numpy()
    counts = np.bincount(triples, minlength=STACKED_MODES).astype(np.int64)
    n = len(triples)
    uniform = np.full(STACKED_MODES, 1.0 / STACKED_MODES)
    good = (conf >= confidence).all(dim=1)
    return _report(
        "pacgan_stacked_mnist: per-channel argmax triple over all samples; KL vs uniform over 1000",
        counts,
        counts,
        uniform,
        float(good.double().mean()) if n else None,
        mode_kl(counts, uniform),
        n,
        [f"{i:03d}" for i in range(STACKED_MODES)],
        confidence=confidence,
        real_histogram_source="uniform over 1000 triples (protocol)",
    )


def modes_labelled(
    probs: Any,
    real_labels: Any,
    confidence: float,
    label_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Classifier-argmax modes for a labelled image set; ``probs`` [N, K], ``real_labels`` test labels."""
    p = torch.as_tensor(_as_numpy(probs), dtype=torch.float64)
    k = p.shape[1]
    conf, pred = p.max(dim=1)
    pred_np, good = pred.numpy(), (conf >= confidence).numpy()
    counts = np.bincount(pred_np, minlength=k).astype(np.int64)
    covered = np.bincount(pred_np[good], minlength=k)
    real_hist = histogram(np.bincount(_as_numpy(real_labels).astype(np.int64), minlength=k).astype(np.float64))
    n = len(pred_np)
    names = list(label_names) if label_names and len(label_names) == k else [str(i) for i in range(k)]
    return _report(
        "classifier_argmax: histogram of all samples; covered by a sample with max prob >= confidence",
        counts,
        covered,
        real_hist,
        float(good.mean()) if n else None,
        mode_kl(counts, real_hist),
        int(good.sum()),
        names,
        confidence=confidence,
        real_histogram_source="prepared test labels",
    )


# -- complete collapse ----------------------------------------------------------------------------
def subset(x: torch.Tensor, n: int, seed: int, stream: str) -> torch.Tensor:
    """A seeded random subset of ``n`` rows (all rows, in order, when there are no more than ``n``)."""
    if len(x) <= n:
        return x
    idx = torch.randperm(len(x), generator=seeded_generator(seed, stream))[:n]
    return x[idx]


def _distances(x: torch.Tensor) -> torch.Tensor:
    # Low-dimensional points are compared exactly in float64 (tight 2D modes); features in float32
    # through the matrix-product form, whose rounding is negligible at feature-space scales.
    if x.shape[1] <= 16:
        x = x.double()
        return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist")
    return torch.cdist(x.float(), x.float()).clamp_min_(0)


def _pair_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances over unordered pairs i < j, and each point's distance to its nearest other point."""
    d = _distances(x)
    iu = torch.triu_indices(len(x), len(x), offset=1)
    pairs = d[iu[0], iu[1]]
    d.fill_diagonal_(float("inf"))
    return pairs, d.min(dim=1).values


def collapse_measures(
    generated: Any,
    real: Any,
    duplicate_fraction: float,
    seed: int = 0,
    max_points: int = PAIRWISE_MAX_POINTS,
) -> dict[str, Any]:
    """Pairwise-distance ratio and near-duplicate rate of generated vs real points (or features).

    Both sets are cut to the same seeded subset size n = min(max_points, N_gen, N_real), since
    nearest-neighbour distances shrink with n.

    * ``pairwise_distance_ratio`` = mean distance over generated pairs / mean over real pairs
      (about 1 for a faithful generator, near 0 when every sample is the same).
    * ``duplicate_rate`` = share of generated points whose nearest *other* generated point is
      closer than ``duplicate_fraction`` x the median real pairwise distance
      (``duplicate_threshold``). ``real_duplicate_rate`` is the same rule applied to the real
      subset: data with tight modes (ring8's sigma is 1 % of its radius) are "near duplicates" by
      this rule too, so only the excess over the real rate speaks of collapse.
    """
    g = torch.as_tensor(_as_numpy(generated)).reshape(len(generated), -1)
    r = torch.as_tensor(_as_numpy(real)).reshape(len(real), -1)
    n = min(max_points, len(g), len(r))
    if n < 2:
        raise ValueError(f"need at least 2 generated and 2 real points, got {len(g)} and {len(r)}")
    g = subset(g, n, seed, "diagnose/pairwise-generated")
    r = subset(r, n, seed, "diagnose/pairwise-real")
    g_pairs, g_nn = _pair_stats(g)
    r_pairs, r_nn = _pair_stats(r)
    real_mean, real_median = float(r_pairs.mean()), float(r_pairs.median())
    threshold = duplicate_fraction * real_median
    dup = float((g_nn < threshold).double().mean())
    real_dup = float((r_nn < threshold).double().mean())
    return {
        "pairwise_distance_ratio": float(g_pairs.mean()) / real_mean if real_mean > 0 else None,
        "mean_pairwise_generated": float(g_pairs.mean()),
        "mean_pairwise_real": real_mean,
        "median_pairwise_real": real_median,
        "duplicate_threshold": threshold,
        "duplicate_rate": dup,
        "real_duplicate_rate": real_dup,
        "duplicate_excess": dup - real_dup,
        "pairwise_points": n,
    }
