"""Inception Score, with torch-fidelity's protocol (``torch_fidelity/metric_isc.py``).

IS = exp(E_x KL(p(y|x) || p(y))), p(y) the marginal of p(y|x) over the samples. The field's
protocol (openai/improved-gan, torch-fidelity) estimates it per split and reports mean and std:

1. shuffle the N rows with ``numpy.random.RandomState(seed).permutation(N)`` (torch-fidelity's
   exact RNG call, so equal seeds give equal permutations; its default seed is 2020, ours 0;
   ``seed=None`` keeps the given order);
2. cut into ``splits`` contiguous chunks, chunk i = rows [i*N//splits, (i+1)*N//splits) (sizes
   differ by at most one; torchmetrics' ``chunk`` cuts differently);
3. per chunk: p(y) = mean of the chunk's rows (taken as their sum, normalised inside the KL, so
   that no probability underflows to 0), score = exp(mean_x KL(p(y|x) || p(y)));
4. mean and *population* std (ddof=0, numpy's default) of the chunk scores.

Everything runs in float64 (numpy, on the CPU: see ``divergence.kl_rows``). For a classifier
with K classes 1 <= IS <= K, and IS = K is reached by as few as K confident samples, one per
class: the score rewards confident, evenly spread predictions, not diversity within a class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from gancore.metrics._validation import (
    as_tensor,
    check_distributions,
    check_finite,
    check_int,
    check_ndim,
    check_seed,
)
from gancore.metrics.divergence import kl_rows

if TYPE_CHECKING:  # pragma: no cover
    from gancore.metrics.inputs import MetricInputs

__all__ = ["inception_score", "inception_score_from_logits"]


def _prepare(x: torch.Tensor, name: str, splits: Any, seed: Any) -> tuple[int, Optional[int]]:
    check_ndim(x, name, 2, "a [N, K] matrix with one row per sample")
    splits = check_int(splits, "splits", 1)
    seed = check_seed(seed)
    n = x.shape[0]
    if n < splits:
        # Several libraries return NaN here (an empty split's mean); an error is better.
        raise ValueError(f"inception_score needs at least `splits` samples, got {n} < {splits}; pass more samples or splits <= {n}")
    return splits, seed


def _permute(p: np.ndarray, seed: Optional[int]) -> np.ndarray:
    if seed is None:
        return p
    return p[np.random.RandomState(seed).permutation(p.shape[0])]


def _split_scores(p: np.ndarray, splits: int) -> np.ndarray:
    n = p.shape[0]
    scores = np.empty(splits)
    for i in range(splits):
        chunk = p[i * n // splits : (i + 1) * n // splits]
        # p(y) as the column sums, which kl_rows normalises implicitly: their mean rounded a
        # denormal probability (4e-323, from a confident classifier) to 0 below a positive row,
        # and KL = inf made IS inf and its std NaN. A sum is never below any of its terms.
        scores[i] = np.exp(kl_rows(chunk, chunk.sum(axis=0, keepdims=True)).mean())
    return scores


def _mean_std(scores: np.ndarray) -> tuple[float, float]:
    return float(np.mean(scores)), float(np.std(scores))


def inception_score(probs: Any, splits: int = 10, seed: Optional[int] = 0) -> tuple[float, float]:
    """Inception Score (mean, std over splits) of class probabilities ``probs`` [N, K].

    ``probs`` rows are p(y|x) (softmax outputs of any classifier: Inception for the usual IS, a
    domain classifier for an "MNIST score"). Rows must be non-negative and sum to 1 (within 1e-6
    for float64, 1e-4 for float32 input); they are renormalised in float64. See the module doc
    for the protocol; for strictly positive probs it equals torch-fidelity's
    ``isc_features_to_metric(log(probs), splits, rng_seed=seed)`` (which turns exact zeros into
    NaN via 0 * log 0; here 0 log 0 = 0).

    ``seed`` drives the shuffle exactly as torch-fidelity's ``rng_seed`` does (its default is 2020:
    pass ``seed=2020`` to reproduce its default numbers); ``None`` keeps the given order.

    Raises ``ValueError`` if N < splits (no empty splits, no NaN), for invalid probabilities,
    or a seed outside [0, 2**32).
    """
    t = as_tensor(probs, "probs")
    splits, seed = _prepare(t, "probs", splits, seed)
    p = check_distributions(t, "probs").cpu().numpy()
    return _mean_std(_split_scores(_permute(p, seed), splits))


def inception_score_from_logits(logits: Any, splits: int = 10, seed: Optional[int] = 0) -> tuple[float, float]:
    """Inception Score from classifier logits [N, K]: softmax in float64, then :func:`inception_score`.

    This is torch-fidelity's input (it feeds Inception's unbiased logits and applies the softmax
    in float64); use it where logits are at hand, so float32 softmax rounding never enters.
    """
    t = as_tensor(logits, "logits")
    splits, seed = _prepare(t, "logits", splits, seed)
    check_finite(t, "logits")
    p = torch.softmax(t.to(torch.float64), dim=1).cpu().numpy()
    return _mean_std(_split_scores(_permute(p, seed), splits))


def evaluate(inputs: MetricInputs) -> dict[str, Any]:
    """The registry's adapter (:data:`gancore.figures.METRICS`): IS of the generated and of the
    real set (the real one is the ceiling this classifier allows)."""
    assert inputs.generated_probabilities is not None and inputs.real_probabilities is not None
    splits, seed = inputs.settings.splits, inputs.seed
    is_mean, is_std = inception_score(inputs.generated_probabilities, splits=splits, seed=seed)
    is_real_mean, is_real_std = inception_score(inputs.real_probabilities, splits=splits, seed=seed)
    return {"is_mean": is_mean, "is_std": is_std, "is_real_mean": is_real_mean, "is_real_std": is_real_std}
