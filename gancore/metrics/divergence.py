"""KL and Jensen-Shannon divergences between discrete distributions, in nats.

The divergences are strict about their inputs: ``p`` and ``q`` must be probability vectors
(non-negative, summing to 1 within a dtype-dependent tolerance, see ``_validation``). Counts
go through :func:`normalize_histogram` (or :func:`label_histogram`) first; silently normalising
inside ``kl_divergence`` would hide the bug of passing, say, log-probabilities or a half-filled
histogram.

Numerics. The textbook sum ``sum p log(p/q)`` adds terms of both signs, so when ``q`` is close to
``p`` the O(delta) terms cancel down to an O(delta^2) result, and any mismatch between
``sum p`` and ``sum q`` (float rounding: ~1e-16, or ~1e-5 for float32 input) enters at first
order. We evaluate KL of the exactly normalised vectors p/S_p, q/S_q through

    KL = sum_{p>0} (p/S_p) g(w) + sum_{p=0} q/S_q,   g(w) = w - log1p(w) >= 0,
    w = (q/S_q) / (p/S_p) - 1 = ((q - p) - q D / S_q) / p,   D = sum (q - p),

which holds because sum (p/S_p) w = -sum_{p=0} q/S_q. Every term is >= 0, so nothing cancels and
the result is never a tiny negative number; ``q - p`` is exact when q is close to p. g switches to
its Taylor series for |w| < 0.01; elsewhere p g(w) is formed as p w - p log1p(w) with p w taken
without dividing by p, so a denormal p next to a sizeable q gives no inf * 0 = NaN, and where
q/S_q is under a thousandth of p/S_p the log ratio is taken from the logs themselves (1 + w would
have lost its digits: a ratio below 1e-16 rounded w to -1 and a finite KL to inf). Bins with
``p = 0`` contribute 0 log 0 = 0 to KL (their ``q/S_q`` term only balances the identity).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gancore.metrics._validation import as_tensor, check_distributions, check_finite, check_int, check_ndim

if TYPE_CHECKING:  # pragma: no cover
    from gancore.metrics.inputs import MetricInputs

__all__ = ["kl_divergence", "js_divergence", "js_distance", "normalize_histogram", "label_histogram"]

_LOG2 = math.log(2.0)


def _g_series(u: np.ndarray) -> np.ndarray:
    """``u - log1p(u)`` for |u| < 0.01 by its Taylor series, sum_{n>=2} (-1)^n u^n / n.

    Horner form up to u^9: the first omitted term, u^10/10, is 2e-17 of the leading u^2/2 at
    |u| = 0.01; the direct difference would lose ~eps/|u| to cancellation there.
    """
    s = np.zeros_like(u)
    for n in range(9, 1, -1):
        s = (1.0 / n if n % 2 == 0 else -1.0 / n) + u * s
    return u * u * s


def kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p_i / S_p || q_i / S_q) along the last axis for non-negative float64 rows (see module doc).

    ``q`` broadcasts against ``p``; rows need not sum exactly to 1 (they are normalised
    implicitly, without rounding the inputs). Returns +inf where some bin has q = 0 < p.
    numpy rather than torch: these are elementwise passes over [N, K], where numpy's single
    thread beats a thread pool's start-up on a small or busy CPU (measured 200x on a loaded
    2-core box).
    """
    q = np.broadcast_to(q, p.shape)
    s_p = p.sum(axis=-1, keepdims=True)
    s_q = q.sum(axis=-1, keepdims=True)
    diff = q - p
    num = diff - q * (diff.sum(axis=-1, keepdims=True) / s_q)  # = p w
    positive = p > 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        safe_p = np.where(positive, p, 1.0)
        w = num / safe_p
        log_ratio = np.log1p(w)
        # log(q/S_q) - log(p/S_p) directly where w is no use: inf (a denormal p next to a sizeable
        # q), or so close to -1 (q/S_q under a thousandth of p/S_p) that 1 + w has lost its digits
        # to cancellation; w = -1 exactly made a finite KL inf (a denormal p and q, 4.4e-323,
        # in an Inception Score's split).
        direct = ~np.isfinite(w) | (w < -0.999)
        if direct.any():
            q_d, p_d = q[direct], safe_p[direct]
            s_q_d, s_p_d = np.broadcast_to(s_q, p.shape)[direct], np.broadcast_to(s_p, p.shape)[direct]
            log_ratio[direct] = (np.log(q_d) - np.log(s_q_d)) - (np.log(p_d) - np.log(s_p_d))
        p_g = (num - safe_p * log_ratio) / s_p
        small = np.abs(w) < 0.01
        if small.any():
            p_g[small] = safe_p[small] * _g_series(w[small]) / np.broadcast_to(s_p, p.shape)[small]
        terms = np.where(positive, p_g, q / s_q)
    return terms.sum(axis=-1)


def _pair(p: Any, q: Any, smoothing: float = 0.0, renormalise: bool = False) -> tuple[np.ndarray, np.ndarray]:
    pt, qt = as_tensor(p, "p"), as_tensor(q, "q")
    check_ndim(pt, "p", 1, "a probability vector")
    check_ndim(qt, "q", 1, "a probability vector")
    if pt.shape != qt.shape:
        raise ValueError(f"p and q must have the same shape (one probability per bin), got {tuple(pt.shape)} and {tuple(qt.shape)}")
    if qt.device != pt.device:
        qt = qt.to(pt.device)
    p64 = check_distributions(pt, "p", renormalise).cpu().numpy()
    q64 = check_distributions(qt, "q", renormalise).cpu().numpy()
    if smoothing:
        # kl_rows normalises implicitly: this is (p + eps) / (1 + K eps) without rounding p.
        p64, q64 = p64 + smoothing, q64 + smoothing
    return p64, q64


def _check_smoothing(smoothing: Any) -> float:
    try:
        value = float(smoothing)
    except (TypeError, ValueError):
        raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing!r}")
    return value


def kl_divergence(p: Any, q: Any, smoothing: float = 0.0) -> float:
    """KL(p || q) = sum_x p(x) log(p(x) / q(x)) in nats, for two probability vectors over the same bins.

    0 log 0 = 0. The result is ``+inf`` when some bin has ``q(x) = 0 < p(x)`` (p puts mass where q
    has none); that is the divergence's true value, not an error. ``smoothing=eps > 0`` adds
    ``eps`` to every bin of *both* ``p`` and ``q`` and renormalises (``(p + eps) / (1 + K eps)``),
    which makes the result finite and keeps KL(p || p) = 0; it also biases the value towards 0,
    so report the eps used. Not symmetric; 0 iff p = q.

    Raises ``ValueError`` for mismatched shapes, NaN/inf, negative entries, or vectors that do
    not sum to 1 (use :func:`normalize_histogram` for counts).
    """
    eps = _check_smoothing(smoothing)
    p64, q64 = _pair(p, q, eps)
    return float(kl_rows(p64, q64))


def js_divergence(p: Any, q: Any) -> float:
    """Jensen-Shannon divergence in nats: (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2.

    Symmetric, always finite, in [0, log 2] (log 2 exactly for disjoint supports). Same input
    rules as :func:`kl_divergence`. The result is clipped to log 2, which rounding can exceed by
    an ulp.
    """
    # m must be the mixture of the normalised vectors, so normalise first (in float64).
    p64, q64 = _pair(p, q, renormalise=True)
    m = 0.5 * (p64 + q64)
    js = 0.5 * float(kl_rows(p64, m)) + 0.5 * float(kl_rows(q64, m))
    return min(js, _LOG2)


def js_distance(p: Any, q: Any) -> float:
    """sqrt(js_divergence(p, q)): the Jensen-Shannon distance, a metric on distributions, in [0, sqrt(log 2)]."""
    return math.sqrt(js_divergence(p, q))


def normalize_histogram(counts: Any) -> torch.Tensor:
    """Counts (or any non-negative weights) per bin -> float64 probability vector summing to 1.

    Raises ``ValueError`` for negative, non-finite or all-zero counts (an empty histogram is no
    distribution).
    """
    c = as_tensor(counts, "counts")
    check_ndim(c, "counts", 1, "a vector of counts per bin")
    if c.numel() == 0:
        raise ValueError("counts must have at least one bin, got an empty vector")
    check_finite(c, "counts")
    c = c.to(torch.float64)
    if (c < 0).any():
        raise ValueError(f"counts must be >= 0, got a minimum of {float(c.min()):.6g}")
    total = c.sum()
    if total <= 0:
        raise ValueError("counts sum to 0: an empty histogram is no distribution (at least one count must be > 0)")
    return c / total


def label_histogram(labels: Any, num_bins: int, normalize: bool = True) -> torch.Tensor:
    """Histogram of integer labels in ``[0, num_bins)``: float64 probabilities (or counts if ``normalize=False``).

    Every bin is present, including empty ones, so two histograms over the same bins line up
    (e.g. generated mode assignments vs the uniform distribution for a "reverse KL").
    """
    num_bins = check_int(num_bins, "num_bins", 1)
    t = as_tensor(labels, "labels").reshape(-1)
    if t.is_floating_point():
        check_finite(t, "labels")
        if (t != t.round()).any():
            raise ValueError("labels must be integers (class or mode indices), got non-integral values")
    t = t.to(torch.int64)
    if t.numel() and (t.min() < 0 or t.max() >= num_bins):
        raise ValueError(f"labels must lie in [0, {num_bins}) for num_bins={num_bins}, got range [{int(t.min())}, {int(t.max())}]")
    counts = torch.bincount(t, minlength=num_bins).to(torch.float64)
    return normalize_histogram(counts) if normalize else counts


def evaluate(inputs: MetricInputs) -> dict[str, Any]:
    """The registry's adapter (:data:`gancore.figures.METRICS`): KL and JS between the **argmax**
    class histograms of generated and real samples.

    Argmax counts are the mode histogram of the reference protocols (PacGAN/VEEGAN assign each
    sample to one mode; stacked MNIST counts digit triples). KL(generated || real) is +inf when
    generated samples fall in a class no real held-out example hits: then ``kl_divergence`` is
    null and ``kl_divergence_note`` names the classes; JS (at most log 2) carries the comparison.
    """
    gen, real = inputs.generated_probabilities, inputs.real_probabilities
    assert gen is not None and real is not None
    k = gen.shape[1]
    p_gen, p_real = label_histogram(torch.as_tensor(gen).argmax(1), k), label_histogram(torch.as_tensor(real).argmax(1), k)
    unseen = ((p_gen > 0) & (p_real == 0)).nonzero().flatten().tolist()
    if unseen:
        kl, note = (
            None,
            f"KL(generated || real) is +inf: generated samples fall in class(es) {_short_list(unseen)} "
            f"(a share of {float(p_gen[unseen].sum()):.4g} of them) which no real held-out example hits; see js_divergence",
        )
    else:
        kl, note = kl_divergence(p_gen, p_real), None
    return {
        "num_classes": k,
        "classes_generated": int((p_gen > 0).sum()),
        "classes_real": int((p_real > 0).sum()),
        "kl_divergence": kl,
        "kl_divergence_note": note,
        # KL(generated || uniform): the quantity the stacked-MNIST tables report (there the 1000
        # modes are uniform by construction); the 2D tables of PacGAN count only high-quality
        # samples, which `gan diagnose` does.
        "kl_to_uniform": kl_divergence(p_gen, torch.full_like(p_gen, 1.0 / k)),
        "js_divergence": js_divergence(p_gen, p_real),
        "js_distance": js_distance(p_gen, p_real),
    }


def _short_list(items: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")
