"""Input checks shared by the metric functions.

Every check raises ``ValueError`` naming the argument and what would be valid, because a metric
that silently returns NaN (or a plausible wrong number) ends up in a results table.
"""

from __future__ import annotations

import operator
from typing import Any, Optional

import numpy as np
import torch

# Largest |row sum - 1| accepted for a probability vector, by the dtype it arrived in. A softmax
# over K classes rounds each entry to the dtype's epsilon, so the row sum drifts by ~sqrt(K) eps
# (worst case K eps): 1e-6 leaves float64 ten orders of headroom, 1e-4 covers float32 softmax
# outputs over 1000+ classes, 1e-2 half-precision ones. The metrics then normalise the rows in
# float64 (KL implicitly, see divergence.kl_rows), so rounding noise inside the tolerance does
# not bias the result.
SUM_TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def as_tensor(x: Any, name: str, device: Optional[torch.device | str] = None) -> torch.Tensor:
    """``x`` (tensor, numpy array or nested list) as a tensor, keeping its dtype where it is numeric."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise ValueError(f"{name} must be a numeric array, got numpy dtype {x.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        try:
            # Python floats are doubles: keep them so rather than torch's float32 default.
            t = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be a tensor, numpy array or nested list of numbers ({exc})") from None
    if t.is_complex():
        raise ValueError(f"{name} must be real-valued, got dtype {t.dtype}")
    if device is not None:
        t = t.to(device)
    return t


def as_float64(x: Any, name: str, device: Optional[torch.device | str] = None) -> torch.Tensor:
    return as_tensor(x, name, device).to(torch.float64)


def check_ndim(t: torch.Tensor, name: str, ndim: int, what: str) -> None:
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {what} ({ndim}-D), got shape {tuple(t.shape)}")


def check_finite(t: torch.Tensor, name: str) -> None:
    if t.is_floating_point():
        if torch.isnan(t).any():
            raise ValueError(f"{name} contains NaN; all entries must be finite")
        if torch.isinf(t).any():
            raise ValueError(f"{name} contains +-inf; all entries must be finite")


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as a python int >= ``minimum`` (bools and floats are refused, even 3.0)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def check_seed(seed: Any, name: str = "seed") -> Optional[int]:
    """``None`` or an int accepted by ``numpy.random.RandomState`` (0 <= seed < 2**32)."""
    if seed is None:
        return None
    seed = check_int(seed, name, 0)
    if seed >= 2**32:
        raise ValueError(f"{name} must be < 2**32 (numpy RandomState seeds are 32-bit), got {seed}")
    return seed


def check_distributions(p: torch.Tensor, name: str, renormalise: bool = True) -> torch.Tensor:
    """Validate probability vectors along the last dim; return them in float64, renormalised
    unless ``renormalise=False``.

    Raises when an entry is negative or non-finite, or a row's sum is off 1 by more than the
    tolerance for the dtype ``p`` arrived in (see ``SUM_TOLERANCE``).
    """
    check_finite(p, name)
    if p.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one bin/class, got shape {tuple(p.shape)}")
    if (p < 0).any():
        flat = p.reshape(-1, p.shape[-1])
        row = int((flat < 0).any(dim=1).nonzero()[0])
        where = f"row {row} " if p.dim() > 1 else ""
        raise ValueError(f"{name} has a negative probability ({where}min {float(flat[row].min()):.6g}); probabilities must be >= 0")
    tol = SUM_TOLERANCE.get(p.dtype, 1e-6)
    p64 = p.to(torch.float64)
    sums = p64.sum(dim=-1)
    bad = (sums - 1.0).abs() > tol
    if bad.any():
        flat_sums = sums.reshape(-1)
        row = int(bad.reshape(-1).nonzero()[0])
        where = f"row {row} " if p.dim() > 1 else ""
        hint = "normalise counts with normalize_histogram()" if p.dim() == 1 else "pass softmax outputs"
        raise ValueError(
            f"{name} {where}sums to {float(flat_sums[row]):.10g}; each probability vector must sum to 1 "
            f"within {tol:g} for {p.dtype} input ({hint})"
        )
    return p64 / sums.unsqueeze(-1) if renormalise else p64


def check_features(x: Any, name: str, min_rows: int, device=None, float64: bool = True) -> torch.Tensor:
    """A finite ``[N, d]`` feature matrix with ``N >= min_rows``, in float64 unless ``float64=False``
    (callers that convert chunk by chunk, to avoid a float64 copy of a large matrix)."""
    t = as_tensor(x, name, device)
    check_ndim(t, name, 2, "a [N, d] feature matrix")
    if t.shape[1] == 0:
        raise ValueError(f"{name} must have at least one feature column, got shape {tuple(t.shape)}")
    if t.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows (samples), got {t.shape[0]}")
    check_finite(t, name)
    return t.to(torch.float64) if float64 else t


def check_same_dim(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name_a} and {name_b} must have the same feature dimension, got {a.shape[1]} and {b.shape[1]} "
            f"(shapes {tuple(a.shape)} and {tuple(b.shape)})"
        )
