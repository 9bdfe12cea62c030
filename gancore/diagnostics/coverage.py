"""How many modes a faithful generator covers, and which modes are short of it.

* :func:`expected_coverage`: the mean and sd of the number of modes ``n`` faithful draws hit;
* :func:`short_modes`: modes with no counted sample or under a quarter of their share, where a
  faithful generator would have more with probability below ``alpha`` / K.

Both take the reference histogram of the modes (what a faithful generator's counted samples
follow) and the number of counted samples.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# A short mode is evidence on its own when a faithful generator would fall that short on it, and
# on every other mode together, with probability below this: the 3-sd two-sided tail, the count
# rule's own level (findings.MISSING_MODES_SDS).
SHORT_MODE_ALPHA = 0.0027
# A mode with under this share of its expected count is short: far below, not merely unbalanced
# (the reverse KL measures balance).
SHORT_SHARE = 0.25
SHORT_LABELS_SHOWN = 10


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


def short_modes(real_hist: Any, covered_counts: Any, n: int, alpha: float = SHORT_MODE_ALPHA, tests: int | None = None) -> list[int]:
    """Modes whose counted samples fall under :data:`SHORT_SHARE` of the ``n`` p_i a faithful
    generator places there, where such a generator would have that few with probability
    (binomial) below ``alpha`` / K (Bonferroni: all K together at most ``alpha``; ``tests``: K
    and the other tests taken beside them, where there are any).

    The count rule (at least max(1, 3 sd) modes missing against the expected count) cannot see one
    dropped mode when any mode is rare: the expected count is then K - e, and K - 1 covered falls
    short by 1 - e < 1 (999 of Stacked MNIST's 1,000 triples, or a class of 1 % dropped). Nor can it
    see a class the generator no longer draws while the classifier's errors put a few samples
    there: MNIST without 7s "covered" 7 with 3 of the 248 samples it was due."""
    from scipy import stats

    p = np.asarray(real_hist, dtype=np.float64)
    total = p.sum()
    covered = np.asarray(covered_counts, dtype=np.float64)
    if n <= 0 or total <= 0 or len(covered) != len(p):
        return []
    p = p / total
    level = alpha / max(1, tests or int((p > 0).sum()))
    below = (p > 0) & (covered < SHORT_SHARE * n * p)
    tail = stats.binom.cdf(covered, n, np.clip(p, 0.0, 1.0))
    return [int(i) for i in np.flatnonzero(below & (tail < level))]
