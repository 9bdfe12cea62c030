"""FID without its sample-size bias: FID-infinity (Chong and Forsyth 2020, "Effectively Unbiased
FID and Inception Score and where to find them").

FID computed from N generated samples is biased upwards, by an amount that depends on the model
and shrinks like 1/N. Chong and Forsyth compute FID_N at several N drawn from the generated set
(the real statistics fixed), fit the line FID_N = FID_inf + b / N, and report its intercept: the
FID an infinite sample would give. Here the N are ``points`` sizes evenly spaced in 1/N between
``min_fraction`` of the generated set and all of it, each a seeded random subset; the fit is
ordinary least squares. Compare FID_inf with FID_inf, or FID with FID at the same N.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gancore.metrics.fid import feature_statistics, fid

if TYPE_CHECKING:  # pragma: no cover
    from gancore.metrics.inputs import MetricInputs


def fid_infinity(real: torch.Tensor, fake: torch.Tensor, seed: int = 0, points: int = 7, min_fraction: float = 0.2) -> dict[str, Any]:
    """``fid_infinity`` (the intercept), ``fid_slope`` (b), ``fid_curve`` ([N, FID_N] pairs)."""
    n = len(fake)
    smallest = max(2, int(round(min_fraction * n)))
    if n < 4 or smallest >= n:
        return {"fid_infinity": None, "fid_slope": None, "fid_curve": []}
    inverse = np.linspace(1.0 / smallest, 1.0 / n, points)
    sizes = sorted({int(round(1.0 / v)) for v in inverse})
    gen = torch.Generator().manual_seed(seed)
    real_statistics = feature_statistics(real)  # the same real set at every N
    curve = []
    for size in sizes:
        idx = torch.randperm(n, generator=gen)[:size].to(fake.device)
        curve.append((size, fid(real, fake[idx], real_statistics)))
    x = np.array([1.0 / s for s, _ in curve])
    y = np.array([v for _, v in curve])
    slope, intercept = np.polyfit(x, y, 1)
    return {"fid_infinity": float(intercept), "fid_slope": float(slope), "fid_curve": [[s, v] for s, v in curve]}


def evaluate(inputs: MetricInputs) -> dict[str, Any]:
    """The registry's adapter (:data:`gancore.figures.METRICS`)."""
    return fid_infinity(inputs.real_features, inputs.generated_features, seed=inputs.seed)
