"""Which of several runs is best: the one rule the remedy flow's comparison and the registry's
``best`` alias share.

A run that the diagnosis calls healthy beats one it does not; then more modes covered (as a share
of the known modes), then a higher high-quality fraction, then a lower mode KL, then a lower FID,
then a higher Inception Score. Missing figures rank last. Runs of one configuration over several
training seeds rank by the same rule on their share of healthy runs and their mean figures
(:func:`group_rank_key`), which for one run is its own key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from gancore.figures import HEADLINE_DIAGNOSE, HEADLINE_EVALUATE

# The figures themselves are registered in gancore.figures (the evaluation's metrics and the diagnosis's).


def finite_number(value: Any) -> float | None:
    """``value`` as a float where it is a finite number (not a bool), else None."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def headline(evaluate: Mapping[str, Any] | None, diagnose: Mapping[str, Any] | None) -> dict[str, float]:
    """The headline figures of one run that are numbers."""
    out: dict[str, float] = {}
    for source, keys in ((evaluate or {}, HEADLINE_EVALUATE), (diagnose or {}, HEADLINE_DIAGNOSE)):
        for key in keys:
            value = finite_number(source.get(key))
            if value is not None:
                out[key] = value
    return out


def rank_key(figures: Mapping[str, Any], verdict: str | None) -> tuple[float, ...]:
    """Sort key, larger is better (see the module doc); ``figures`` as from :func:`headline`."""

    def get(key: str) -> float | None:
        return finite_number(figures.get(key))

    covered, total = get("modes_covered"), get("modes_total")
    coverage = covered / total if covered is not None and total else -math.inf
    hq, kl, fid, is_mean = get("high_quality_fraction"), get("mode_kl"), get("fid"), get("is_mean")
    return (
        1.0 if verdict == "healthy" else 0.0,
        coverage,
        hq if hq is not None else -math.inf,
        -kl if kl is not None else -math.inf,
        -fid if fid is not None else -math.inf,
        is_mean if is_mean is not None else -math.inf,
    )


def mean_figures(runs: Sequence[tuple[Mapping[str, Any], str | None]]) -> dict[str, float]:
    """Runs of one configuration (each ``(figures, verdict)``): each figure's mean over the runs
    that have it as a finite number, and ``healthy_share``, the share of them called healthy."""
    means: dict[str, float] = {}
    for key in sorted({k for figures, _ in runs for k in figures}):
        values = [v for figures, _ in runs if (v := finite_number(figures.get(key))) is not None]
        if values:
            means[key] = math.fsum(values) / len(values)
    return {**means, "healthy_share": sum(verdict == "healthy" for _, verdict in runs) / len(runs)} if runs else means


def group_rank_key(runs: Sequence[tuple[Mapping[str, Any], str | None]]) -> tuple[float, ...]:
    """:func:`rank_key` of runs of one configuration (each ``(figures, verdict)``): the share of
    them called healthy first, then each figure's mean over the runs that have it."""
    if not runs:
        return (-math.inf,)
    means = mean_figures(runs)
    return (means.pop("healthy_share"), *rank_key(means, None)[1:])
