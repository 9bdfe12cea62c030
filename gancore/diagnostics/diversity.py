"""Collapse *inside* modes and copies of the training data: measures calibrated on real data.

Mode coverage and the high-quality share say nothing about the samples inside a mode: a generator
whose every mode is four times too tight scores 100 % high quality, above the 98.9 % a faithful
one reaches. The design notes define mode collapse as samples that differ little; these measures
look for exactly that, each against what real data of the same size score, so that a faithful
generator sits at chance:

* :func:`dispersion`: per mode (or cluster), the spread of the generated samples around their own
  mean over the spread of real ones, pooled as a weighted geometric mean, with its standard error
  (delta method). 1 for a faithful generator, 0.25 for every mode at sigma/4, near 0 for a mode
  reduced to one point.
* :func:`near_duplicates`: the share of generated samples whose nearest other sample is closer than
  the ``quantile`` of real points' nearest-neighbour distances, at equal n. A faithful generator
  scores the quantile itself (5 % by default), repeated samples score near 1. On data with exact
  ties the k-th nearest other sample stands in for the nearest (see the function).
* :func:`data_copying`: Meehan, Chaudhuri and Dasgupta (2020): generated samples' distances to their
  nearest training point against held-out real points', by a Mann-Whitney U test in each cell of a
  k-means partition of the training data (``C_T``, the cells' Z scores averaged with the held-out
  shares as weights; below -3: closer than chance), and the share of generated samples closer to a
  training point than the ``quantile`` of held-out points are (``copy_rate``; chance: the quantile).
  The nearest training point is searched among all of them, as Meehan et al. do: a copy of a
  training point left out of the search is, to the test, a fresh sample (on 2-D data, 5,000
  copies of 128,000 training points scored C_T -1.6 against 10,000 searched and -19 against all).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from gancore.clustering import kmeans, nearest
from gancore.diagnostics.ndb import proportion_z
from gancore.seeds import generator as seeded_generator
from gancore.seeds import subset

# Subset size for the pairwise-distance measures: 2,000 points give 2M pairs, far more than needed
# to pin a mean distance to < 1 %, at a cdist cost of milliseconds.
PAIRWISE_MAX_POINTS = 2000
# A mode's spread is estimated from at least this many samples on each side (else it is left out).
MIN_PER_MODE = 10
# The copy test's cells: Meehan et al. partition the training set by k-means (fitted here on a
# subset of this many training points, every point then assigned); cells need tens of held-out
# points for their U test.
COPY_CELL_POINTS = 20_000
COPY_MAX_GENERATED = 5_000
COPY_MAX_HELD_OUT = 5_000
COPY_CELLS = 20
COPY_MIN_PER_CELL = 20
# Up to this many dimensions nearest neighbours come from a k-d tree (exact); above, from cdist.
KD_TREE_DIMS = 16
_CHUNK = 2048


def _points(x: Any) -> torch.Tensor:
    x = torch.as_tensor(x).reshape(len(x), -1)
    return x.double() if x.shape[1] <= KD_TREE_DIMS else x.float()


def _spread(x: torch.Tensor) -> tuple[float, float]:
    """Mean squared distance to the mean, and the standard error of its log (delta method)."""
    q = (x - x.mean(0)).pow(2).sum(1).double()
    mean = float(q.mean())
    if mean <= 0:  # every point the same: the spread is exactly 0
        return 0.0, 0.0
    se = float(q.std() / (q.mean() * math.sqrt(len(q)))) if len(q) > 1 else math.inf
    return mean, se


def dispersion(generated: Any, real: Any, gen_labels: Any, real_labels: Any, modes: int, labels: list[str] | None = None) -> dict[str, Any]:
    """Within-mode spread of ``generated`` over that of ``real``, mode by mode and pooled.

    ``gen_labels`` / ``real_labels`` give each point's mode (-1: not counted, e.g. not high quality).
    A mode counts when both sides have :data:`MIN_PER_MODE` points in it. ``ratio`` is the spread
    (root mean squared distance to the mode's own mean) over the real one; the pooled ratio is their
    geometric mean weighted by the generated counts, with ``ratio_se_log`` the standard error of its
    logarithm.
    """
    g, r = _points(generated), _points(real)
    gl, rl = torch.as_tensor(gen_labels).long(), torch.as_tensor(real_labels).long()
    per_mode: list[dict[str, Any]] = []
    for k in range(modes):
        gk, rk = g[gl == k], r[rl == k]
        if len(gk) < MIN_PER_MODE or len(rk) < MIN_PER_MODE:
            continue
        (sg, eg), (sr, er) = _spread(gk), _spread(rk)
        if sr <= 0:
            continue
        per_mode.append(
            {
                "mode": labels[k] if labels and k < len(labels) else str(k),
                "n_generated": len(gk),
                "n_real": len(rk),
                "ratio": math.sqrt(sg / sr),
                # log of a square root: half the log variance's error
                "se_log": 0.5 * math.sqrt(eg**2 + er**2),
            }
        )
    if not per_mode:
        return {"dispersion_ratio": None, "dispersion_se_log": None, "dispersion_modes": 0, "dispersion_per_mode": []}
    weights = torch.tensor([m["n_generated"] for m in per_mode], dtype=torch.float64)
    w = weights / weights.sum()
    logs = torch.tensor([math.log(max(m["ratio"], 1e-300)) for m in per_mode], dtype=torch.float64)
    ses = torch.tensor([m["se_log"] for m in per_mode], dtype=torch.float64)
    return {
        "dispersion_ratio": math.exp(float((w * logs).sum())),
        "dispersion_se_log": float((w.square() * ses.square()).sum().sqrt()),
        "dispersion_modes": len(per_mode),
        "dispersion_min": min(m["ratio"] for m in per_mode),
        "dispersion_min_mode": min(per_mode, key=lambda m: m["ratio"])["mode"],
        "dispersion_per_mode": per_mode,
    }


def _nn_distances(x: torch.Tensor, ref: torch.Tensor, exclude_self: bool) -> torch.Tensor:
    """Each row's distance to its nearest row of ``ref`` (itself excluded when ``x`` is ``ref``)."""
    if x.shape[1] <= KD_TREE_DIMS:
        # Few dimensions: a k-d tree finds the exact neighbour in O(n log n), where the full
        # distance matrix costs n x m (2,500 samples against 20,000 training points: 10x slower).
        from scipy.spatial import cKDTree

        tree = cKDTree(ref.double().numpy())
        dist, idx = tree.query(x.double().numpy(), k=2 if exclude_self else 1)
        if exclude_self:
            # Row i's first hit is itself, or a duplicate of it (then at distance 0 all the same).
            own = idx[:, 0] == np.arange(len(x))
            dist = np.where(own, dist[:, 1], dist[:, 0])
        return torch.from_numpy(np.asarray(dist, dtype=np.float64)).to(x.dtype)
    out = []
    for start in range(0, len(x), _CHUNK):
        chunk = x[start : start + _CHUNK]
        d = torch.cdist(chunk, ref, compute_mode="use_mm_for_euclid_dist")
        if exclude_self:
            idx = torch.arange(start, len(chunk) + start)
            d[idx - start, idx] = math.inf
        # The matrix product finds the neighbour; its distance is then taken directly, since
        # |x|^2 + |y|^2 - 2xy in float32 leaves an exact copy up to 1e-2 away in 784 dimensions.
        nearest_row = d.argmin(dim=1)
        out.append((chunk.double() - ref[nearest_row].double()).norm(dim=1).to(x.dtype))
    return torch.cat(out)


def _kth_neighbour_distances(x: torch.Tensor, k: int) -> torch.Tensor:
    """Each row's sorted distances to its ``k`` nearest other rows of ``x`` (n x k)."""
    if x.shape[1] <= KD_TREE_DIMS:
        from scipy.spatial import cKDTree

        # Row i itself is one of the hits at distance 0; whichever it is, dropping one zero from
        # the k + 1 sorted distances leaves the k nearest others'.
        dist, _ = cKDTree(x.double().numpy()).query(x.double().numpy(), k=k + 1)
        return torch.from_numpy(np.asarray(dist, dtype=np.float64).reshape(len(x), k + 1)[:, 1:]).to(x.dtype)
    out = []
    for start in range(0, len(x), _CHUNK):
        chunk = x[start : start + _CHUNK]
        d = torch.cdist(chunk, x, compute_mode="use_mm_for_euclid_dist")
        idx = torch.arange(start, len(chunk) + start)
        d[idx - start, idx] = math.inf
        rows = d.topk(k, dim=1, largest=False).indices
        # exact distances of the candidates, as in _nn_distances (float32 matmul blurs copies)
        exact = torch.stack([(chunk.double() - x[rows[:, j]].double()).norm(dim=1) for j in range(k)], dim=1)
        out.append(exact.sort(dim=1).values.to(x.dtype))
    return torch.cat(out)


def _tie_share(d: torch.Tensor, threshold: float, weight: float) -> float:
    """Share of ``d`` below ``threshold``, a tie at it counting ``weight``."""
    d = d.double()
    return float((d < threshold).double().mean() + weight * (d == threshold).double().mean())


def _calibrate(reference: torch.Tensor, quantile: float) -> tuple[float, float]:
    """The ``quantile`` of ``reference`` distances, and the weight a tie at it counts so that
    ``reference`` itself scores ``quantile`` (the randomised test's rule for ties; 0 without ties)."""
    d = reference.double()
    threshold = float(torch.quantile(d, quantile))
    below, tied = float((d < threshold).double().mean()), float((d == threshold).double().mean())
    return threshold, min(1.0, max(0.0, (quantile - below) / tied)) if tied > 0 else 0.0


def near_duplicates(generated: Any, real: Any, quantile: float, seed: int, max_points: int) -> dict[str, Any]:
    """Near-duplicate rate of ``generated`` calibrated on ``real`` at equal n (see the module doc).

    The real points are split in two halves of n each: the first sets the threshold (its
    ``quantile`` of leave-one-out nearest-neighbour distances), the second is scored like the
    generated samples, so ``real_duplicate_rate`` shows the chance level on data the threshold was
    not taken from. ``duplicate_z``: two-proportion z of generated against that real rate.

    Data with exact ties (rounded or discrete values) are measured the same way, with two changes
    that leave continuous data exactly as above:

    * When ``quantile`` or more of the calibration points have an exact twin, the threshold is 0
      and nothing can be closer, so a generator repeating a handful of points would score 0. The
      neighbour then moves out to the k-th nearest other point, the smallest k whose threshold is
      above 0 (``duplicate_neighbour``; searched up to sqrt(n), the cost bound): data where twins
      are normal are judged on how many copies a sample has.
    * A distance exactly at the threshold counts the share that makes the calibration half score
      ``quantile`` itself (``duplicate_tie_weight``), the randomised test's rule for ties, so
      faithful discrete data sit at chance instead of below it.
    """
    g, r = _points(generated), _points(real)
    n = min(max_points, len(g), len(r) // 2)
    if n < 2:
        raise ValueError(f"need at least 2 generated and 4 real points, got {len(g)} and {len(r)}")
    # A seeded permutation even when every real point is used: the halves of a file sorted by
    # cluster or class would set the threshold on one part of the data and the chance on another.
    r = r[torch.randperm(len(r), generator=seeded_generator(seed, "diagnose/duplicates-real"))[: 2 * n]]
    calibration, control = r[:n], r[n:]
    g = subset(g, n, seed, "diagnose/duplicates-generated")
    k = 1
    d_cal = _nn_distances(calibration, calibration, True).double()
    if float(torch.quantile(d_cal, quantile)) <= 0:
        widest = min(n - 1, math.isqrt(n - 1) + 1)
        kth = _kth_neighbour_distances(calibration, widest).double()
        positive = (torch.quantile(kth, quantile, dim=0) > 0).nonzero()
        k = int(positive[0]) + 1 if len(positive) else widest
        d_cal = kth[:, k - 1]

    def distances(x: torch.Tensor) -> torch.Tensor:
        return _nn_distances(x, x, True) if k == 1 else _kth_neighbour_distances(x, k)[:, k - 1]

    threshold, weight = _calibrate(d_cal, quantile)
    rate = _tie_share(distances(g), threshold, weight)
    real_rate = _tie_share(distances(control), threshold, weight)
    return {
        "duplicate_threshold": threshold,
        "duplicate_quantile": quantile,
        "duplicate_neighbour": k,
        "duplicate_tie_weight": weight,
        "duplicate_rate": rate,
        "real_duplicate_rate": real_rate,
        "duplicate_excess": rate - real_rate,
        "duplicate_z": proportion_z(rate, n, real_rate, n),
        "duplicate_points": n,
    }


def _mann_whitney_z(held_out: torch.Tensor, generated: torch.Tensor) -> float:
    """Z of the U statistic counting pairs where a generated distance exceeds a held-out one (ties
    count half): negative when generated samples sit closer to the training data."""
    m, n = len(held_out), len(generated)
    both = torch.cat([held_out, generated]).double()
    order = both.argsort()
    ranks = torch.empty_like(both)
    ranks[order] = torch.arange(1, len(both) + 1, dtype=torch.float64)
    # average ranks over ties
    values, inverse, counts = torch.unique(both, return_inverse=True, return_counts=True)
    if len(values) < len(both):
        sums = torch.zeros(len(values), dtype=torch.float64).index_add_(0, inverse, ranks)
        ranks = (sums / counts)[inverse]
    u = float(ranks[m:].sum()) - n * (n + 1) / 2
    sd = math.sqrt(m * n * (m + n + 1) / 12)
    return (u - m * n / 2) / sd if sd > 0 else 0.0


def data_copying(generated: Any, train: Any, held_out: Any, quantile: float, seed: int, train_total: int | None = None) -> dict[str, Any]:
    """Meehan et al.'s data-copying test and the copy rate (see the module doc). ``train``: the
    training points searched, all ``train_total`` of them unless the caller had to leave some out
    (``copy_train_share`` says how many it searched)."""
    g, t, p = _points(generated), _points(train), _points(held_out)
    g = subset(g, COPY_MAX_GENERATED, seed, "diagnose/copy-generated")
    p = subset(p, COPY_MAX_HELD_OUT, seed, "diagnose/copy-held-out")
    d_gen, d_held = _nn_distances(g, t, False), _nn_distances(p, t, False)
    cells = max(1, min(COPY_CELLS, len(p) // COPY_MIN_PER_CELL, len(t)))
    centres, _ = kmeans(subset(t, COPY_CELL_POINTS, seed, "diagnose/copy-train"), cells, seed, stream="diagnose/copy-cells")
    cell_g, cell_p = nearest(g.to(centres.dtype), centres), nearest(p.to(centres.dtype), centres)
    z_scores, weights = [], []
    for c in range(cells):
        hg, hp = d_gen[cell_g == c], d_held[cell_p == c]
        if len(hg) >= COPY_MIN_PER_CELL and len(hp) >= COPY_MIN_PER_CELL:
            z_scores.append(_mann_whitney_z(hp, hg))
            weights.append(len(hp))
    total = sum(weights)
    c_t = sum(z * w for z, w in zip(z_scores, weights)) / total if total else None
    # Ties at the threshold (held-out points sitting exactly on a training point, in rounded or
    # discrete data) count the share that puts the held-out points at the quantile: with 5 % of
    # them on a training point the threshold was 0 and verbatim copies scored a copy rate of 0.
    threshold, weight = _calibrate(d_held, quantile)
    copy_rate = _tie_share(d_gen, threshold, weight)
    return {
        "copy_c_t": c_t,
        "copy_cells": len(z_scores),
        "copy_rate": copy_rate,
        "copy_quantile": quantile,
        "copy_exact_share": float((d_gen <= 1e-12 * max(float(d_held.median()), 1e-300)).double().mean()),
        "copy_train_points": len(t),
        "copy_train_share": len(t) / (train_total or len(t)),
        "copy_median_ratio": float(d_gen.median() / d_held.median()) if float(d_held.median()) > 0 else None,
    }


def collapse_measures(generated: Any, real: Any, quantile: float, seed: int = 0, max_points: int = PAIRWISE_MAX_POINTS) -> dict[str, Any]:
    """Pairwise-distance ratio and the calibrated near-duplicate rate of generated vs real points.

    n = min(max_points, N_gen, N_real / 2) of each: nearest-neighbour distances shrink with n, so
    every rate is taken at equal n. ``pairwise_distance_ratio`` = mean distance over generated pairs
    / mean over real pairs (about 1 for a faithful generator, near 0 when every sample is the same);
    the near-duplicate figures are :func:`near_duplicates`'.
    """
    g, r = _points(generated), _points(real)
    n = min(max_points, len(g), len(r) // 2)
    if n < 2:
        raise ValueError(f"need at least 2 generated and 4 real points, got {len(g)} and {len(r)}")
    g_pairs = torch.pdist(subset(g, n, seed, "diagnose/pairwise-generated"))
    r_pairs = torch.pdist(subset(r, n, seed, "diagnose/pairwise-real"))
    real_mean = float(r_pairs.mean())
    return {
        "pairwise_distance_ratio": float(g_pairs.mean()) / real_mean if real_mean > 0 else None,
        "mean_pairwise_generated": float(g_pairs.mean()),
        "mean_pairwise_real": real_mean,
        "pairwise_points": n,
        **near_duplicates(g, r, quantile, seed, max_points),
    }
