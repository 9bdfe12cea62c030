"""Number of statistically Different Bins (Richardson & Weiss 2018).

Follows eitanrich/gans-n-gmms ``utils/ndb.py``:

1. K-means with K bins on (a seeded subset of) the real training samples; the bin centres are the
   means of their members and the reference proportions are the members' shares (``construct_bins``;
   no whitening, its default).
2. Each generated sample goes to the nearest centre in L2.
3. Per bin a two-proportion z-test with the pooled standard error
   ``p = (p1 n1 + p2 n2) / (n1 + n2)``, ``se = sqrt(p (1 - p) (1/n1 + 1/n2))``, ``z = (p1 - p2) / se``,
   two-sided p-value ``2 Phi(-|z|)`` compared with ``alpha`` (``two_proportions_z_test``).
   A bin empty on both sides (se = 0) is not different (the reference would compare NaN, which is
   also false).
4. NDB = number of different bins; also NDB/K and the JS divergence of the two bin histograms.

Under the null hypothesis (same distribution) about ``alpha * K`` bins come out different by
chance; :func:`false_positive_bound` gives a 3-sigma binomial bound on that count, used to call an
NDB "significant". Our K-means (:func:`gancore.clustering.kmeans`: greedy k-means++ seeding, Lloyd
iterations) is not scikit-learn's code, so bins match the reference in kind, not bit for bit.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from gancore.clustering import kmeans, nearest
from gancore.seeds import generator as seeded_generator

# The reference warns to keep the training set near 500 x K for speed; 10k points with K = 100
# leaves ~100 per bin, enough for the per-bin proportions (relative SE ~ 10 %).
NDB_MAX_REAL = 10_000


def two_proportion_z(p1: torch.Tensor, n1: int, p2: torch.Tensor, n2: int) -> tuple[torch.Tensor, torch.Tensor]:
    """z statistics and two-sided p-values of a pooled two-proportion z-test, bin by bin."""
    p = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = torch.sqrt(p * (1 - p) * (1.0 / n1 + 1.0 / n2))
    z = torch.where(se > 0, (p1 - p2) / torch.where(se > 0, se, torch.ones_like(se)), torch.zeros_like(se))
    # 2 * Phi(-|z|) = erfc(|z| / sqrt 2)
    return z, torch.special.erfc(z.abs() / math.sqrt(2.0))


def proportion_z(p1: float, n1: int, p2: float, n2: int) -> float:
    """The z statistic of :func:`two_proportion_z` for one pair of proportions (0 when both are 0 or 1)."""
    z, _ = two_proportion_z(torch.tensor([p1], dtype=torch.float64), n1, torch.tensor([p2], dtype=torch.float64), n2)
    return float(z[0])


def most_bins_seen(n1: int, n2: int, alpha: float) -> int:
    """The most bins at which a bin of average size (1/K of ``n1`` real examples) that the ``n2``
    generated samples miss entirely is still significant at ``alpha``: about ``n2 / z^2`` (3.84
    samples a bin at 0.05). Above it NDB sees only bins well above average size: 5,000 bins over
    1,000 samples, and it said so nowhere."""

    def seen(k: int) -> bool:
        one = torch.tensor([1.0 / k], dtype=torch.float64)
        return bool(two_proportion_z(one, n1, torch.zeros_like(one), n2)[1][0] < alpha)

    if n1 < 2 or not seen(2):
        return 1
    lo, hi = 2, max(2, n1)  # seen(lo); the test's power falls as K grows
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if seen(mid) else (lo, mid - 1)
    return lo


def false_positive_bound(k: int, alpha: float) -> float:
    """alpha K + 3 sqrt(K alpha (1 - alpha)): at most this many bins differ by chance (3 sigma)."""
    return alpha * k + 3.0 * math.sqrt(k * alpha * (1 - alpha))


def ndb(
    real: Any,
    generated: Any,
    bins: int,
    alpha: float,
    seed: int = 0,
    max_real: int = NDB_MAX_REAL,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """NDB of ``generated`` against ``real`` (both [N, ...], flattened to vectors), computed on ``device``."""
    from gancore.metrics import js_divergence

    r = torch.as_tensor(real).reshape(len(real), -1)
    g = torch.as_tensor(generated).reshape(len(generated), -1)
    if len(r) > max_real:
        r = r[torch.randperm(len(r), generator=seeded_generator(seed, "diagnose/ndb-real"))[:max_real]]
    centers, labels = kmeans(r.to(device), bins, seed)
    n1, n2 = len(r), len(g)
    ref = torch.bincount(labels, minlength=bins).double() / n1
    # Bins ordered by size, largest first, as the reference does (for the plots and the table).
    order = ref.argsort(descending=True, stable=True)
    centers, ref = centers[order], ref[order]
    gen_labels = nearest(g.to(centers.device, centers.dtype), centers)
    ref, centers = ref.cpu(), centers.cpu()
    query = torch.bincount(gen_labels.cpu(), minlength=bins).double() / n2
    z, p_values = two_proportion_z(ref, n1, query, n2)
    different = p_values < alpha
    count = int(different.sum())
    bound = false_positive_bound(bins, alpha)
    seen = most_bins_seen(n1, n2, alpha)
    if bins > seen:
        warnings.warn(
            f"NDB cannot see most bins at diagnose.ndb_bins={bins}: with {n2} generated samples ({n2 / bins:.2g} a bin) and {n1} "
            f"real examples, a bin of average size that the generator misses entirely is not significant at alpha={alpha}; draw "
            f"more samples (sample.n) or use at most {seen} bins",
            stacklevel=2,
        )
    return {
        "ndb": count,
        "ndb_k": count / bins,
        "ndb_js": float(js_divergence(ref.numpy(), query.numpy())),
        "ndb_bins": bins,
        "ndb_alpha": alpha,
        "ndb_false_positive_bound": bound,
        "ndb_significant": count > bound,
        "ndb_bins_seen": seen,
        "ndb_n_real": n1,
        "ndb_n_generated": n2,
        "real_proportions": ref.tolist(),
        "generated_proportions": query.tolist(),
        "z": z.tolist(),
        "different": different.tolist(),
        "centers": centers,
    }
