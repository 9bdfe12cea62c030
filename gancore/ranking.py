"""Which of several runs is best: the one rule the remedy flow's comparison and the registry's
``best`` alias share.

A run that the diagnosis calls healthy beats one it does not; then more modes covered (as a share
of the known modes), then a higher high-quality fraction, then a lower mode KL, then a lower FID,
then a higher Inception Score. Missing figures rank last.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Figure:
    """A figure a run reports: where it comes from, its label, which way is better, and whether
    the run's summary (the CLI, the Prefect artifact, the MLflow description) shows it."""

    key: str
    source: str  # "evaluate" or "diagnose"
    label: str
    better: str  # "higher", "lower", "near 1" or "-"
    summary: bool = True


#: The figures a paper prints, in the order runs show them: the one list the MLflow metrics
#: without a prefix, the summaries and the evaluate stage's return value are read from.
FIGURES = (
    Figure("modes_covered", "diagnose", "modes covered", "higher"),
    Figure("modes_total", "diagnose", "modes known", "-", summary=False),
    Figure("high_quality_fraction", "diagnose", "high-quality fraction", "higher"),
    Figure("mode_kl", "diagnose", "mode KL", "lower"),
    Figure("dispersion_ratio", "diagnose", "spread inside modes", "near 1"),
    Figure("duplicate_rate", "diagnose", "near duplicates", "lower", summary=False),
    Figure("copy_c_t", "diagnose", "data copying C_T", "near 0", summary=False),
    Figure("ndb", "diagnose", "NDB", "lower"),
    Figure("ndb_k", "diagnose", "NDB/K", "lower", summary=False),
    Figure("is_mean", "evaluate", "Inception Score", "higher"),
    Figure("is_std", "evaluate", "IS std", "-", summary=False),
    Figure("kl_divergence", "evaluate", "KL divergence", "lower"),
    Figure("js_divergence", "evaluate", "JS divergence", "lower"),
    Figure("fid", "evaluate", "FID", "lower"),
    Figure("fid_infinity", "evaluate", "FID-infinity", "lower"),
    Figure("kid_mean", "evaluate", "KID", "lower", summary=False),
    Figure("precision", "evaluate", "precision", "higher"),
    Figure("recall", "evaluate", "recall", "higher"),
    Figure("density", "evaluate", "density", "near 1"),
    Figure("coverage", "evaluate", "coverage", "higher"),
    Figure("js_lower_bound", "evaluate", "JSD lower bound", "lower", summary=False),
)
HEADLINE_EVALUATE = tuple(f.key for f in FIGURES if f.source == "evaluate")
HEADLINE_DIAGNOSE = tuple(f.key for f in FIGURES if f.source == "diagnose")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def headline(evaluate: Mapping[str, Any] | None, diagnose: Mapping[str, Any] | None) -> dict[str, float]:
    """The headline figures of one run that are numbers."""
    out: dict[str, float] = {}
    for source, keys in ((evaluate or {}, HEADLINE_EVALUATE), (diagnose or {}, HEADLINE_DIAGNOSE)):
        for key in keys:
            value = _number(source.get(key))
            if value is not None:
                out[key] = value
    return out


def rank_key(figures: Mapping[str, Any], verdict: str | None) -> tuple[float, ...]:
    """Sort key, larger is better (see the module doc); ``figures`` as from :func:`headline`."""

    def get(key: str) -> float | None:
        return _number(figures.get(key))

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
