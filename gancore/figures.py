"""Every figure a run reports, registered once: the evaluation's metrics (name, the function that
computes them, which way is better, headline or not) and the diagnosis's figures.

The ``evaluate`` stage runs :data:`METRICS` in order; the MLflow metrics without a prefix, the
run summaries (CLI, Prefect artifact, MLflow description), the figures the ranking of runs
collects, ``gan metrics`` and the README's metric table are read from :data:`FIGURES` (the
ranking's order of precedence is its own rule, :func:`gancore.ranking.rank_key`). Adding a metric is one new module
(``gancore/metrics/<name>.py``: the function and an ``evaluate(inputs)`` adapter, see
:class:`gancore.metrics.inputs.MetricInputs`) and one :class:`Metric` entry here.

Light on purpose (no torch): the CLI's help and the flows' reports import it. A metric's function
is named as ``"module:function"`` and imported when ``evaluate`` runs it; :mod:`gancore.codedeps`
reads the same names, so the stage's DVC dependencies include it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from gancore.lazy import by_name, modules, resolve

Better = Literal["higher", "lower", "near 1", "near 0", "-"]


@dataclass(frozen=True)
class Figure:
    """A figure a run reports: where it comes from, its label, which way is better, and whether
    the run's summary (the CLI, the Prefect artifact, the MLflow description) shows it."""

    key: str
    source: str  # "evaluate" or "diagnose"
    label: str
    better: Better
    summary: bool = True


@dataclass(frozen=True)
class Metric:
    """One metric of the ``evaluate`` stage: what it needs, the function computing it, and the
    headline figures among what it returns (the rest go to ``evaluate.json`` only)."""

    name: str
    compute: str  # "module:function"; function(inputs: MetricInputs) -> dict of figures
    needs: Literal["probabilities", "features"]  # class probabilities, or features of one space
    figures: tuple[Figure, ...]
    summary: str  # one line: what it measures, and its reference
    absent: tuple[str, ...] = ()  # more keys set to null when its inputs are missing

    def function(self) -> Callable[..., dict[str, Any]]:
        found: Callable[..., dict[str, Any]] = resolve(self.compute)
        return found

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f.key for f in self.figures) + self.absent


def _evaluate(key: str, label: str, better: Better, summary: bool = True) -> Figure:
    return Figure(key, "evaluate", label, better, summary)


METRICS: dict[str, Metric] = by_name(
    Metric(
        "inception_score",
        "gancore.metrics.inception_score:evaluate",
        "probabilities",
        (_evaluate("is_mean", "Inception Score", "higher"), _evaluate("is_std", "IS std", "-", summary=False)),
        "exp E KL(p(y|x) || p(y)) over splits, generated and real (Salimans et al. 2016; torch-fidelity's protocol)",
        absent=("is_real_mean", "is_real_std"),
    ),
    Metric(
        "class_divergence",
        "gancore.metrics.divergence:evaluate",
        "probabilities",
        (_evaluate("kl_divergence", "KL divergence", "lower"), _evaluate("js_divergence", "JS divergence", "lower")),
        "KL and JS between the argmax class histograms of generated and real samples (VEEGAN/PacGAN mode histograms)",
        absent=("num_classes", "classes_generated", "classes_real", "kl_divergence_note", "kl_to_uniform", "js_distance"),
    ),
    Metric(
        "fid",
        "gancore.metrics.fid:evaluate_fid",
        "features",
        (_evaluate("fid", "FID", "lower"),),
        "Frechet distance of the feature Gaussians (Heusel et al. 2017)",
    ),
    Metric(
        "fid_infinity",
        "gancore.metrics.fid_infinity:evaluate",
        "features",
        (_evaluate("fid_infinity", "FID-infinity", "lower"),),
        "FID extrapolated to infinitely many samples, free of FID's 1/N bias (Chong & Forsyth 2020)",
    ),
    Metric(
        "kid",
        "gancore.metrics.fid:evaluate_kid",
        "features",
        (_evaluate("kid_mean", "KID", "lower", summary=False),),
        "unbiased polynomial-kernel MMD^2 over subsets (Binkowski et al. 2018)",
    ),
    Metric(
        "precision_recall",
        "gancore.metrics.prdc:evaluate_precision_recall",
        "features",
        (_evaluate("precision", "precision", "higher"), _evaluate("recall", "recall", "higher")),
        "improved precision and recall, k-NN manifolds at equal n (Kynkaanniemi et al. 2019)",
    ),
    Metric(
        "density_coverage",
        "gancore.metrics.prdc:evaluate_density_coverage",
        "features",
        (_evaluate("density", "density", "near 1"), _evaluate("coverage", "coverage", "higher")),
        "density and coverage at equal n (Naeem et al. 2020)",
    ),
    Metric(
        "js_lower_bound",
        "gancore.evaluation_jsd:evaluate",
        "features",
        (_evaluate("js_lower_bound", "JSD lower bound", "lower", summary=False),),
        "a lower bound on JSD(real || generated) from a freshly trained discriminator (Goodfellow et al. 2014's identity)",
    ),
)

_DIAGNOSE = (
    Figure("modes_covered", "diagnose", "modes covered", "higher"),
    Figure("modes_total", "diagnose", "modes known", "-", summary=False),
    Figure("high_quality_fraction", "diagnose", "high-quality fraction", "higher"),
    Figure("mode_kl", "diagnose", "mode KL", "lower"),
    Figure("dispersion_ratio", "diagnose", "spread inside modes", "near 1"),
    Figure("duplicate_rate", "diagnose", "near duplicates", "lower", summary=False),
    Figure("copy_c_t", "diagnose", "data copying C_T", "near 0", summary=False),
    Figure("ndb", "diagnose", "NDB", "lower"),
    Figure("ndb_k", "diagnose", "NDB/K", "lower", summary=False),
)
#: The figures a paper prints, in the order runs show them: the diagnosis's, then each metric's.
FIGURES: tuple[Figure, ...] = _DIAGNOSE + tuple(f for m in METRICS.values() for f in m.figures)
HEADLINE_EVALUATE = tuple(f.key for f in FIGURES if f.source == "evaluate")
HEADLINE_DIAGNOSE = tuple(f.key for f in FIGURES if f.source == "diagnose")


def compute_modules() -> tuple[str, ...]:
    """The modules the metrics' functions live in (what ``evaluate`` imports by name)."""
    return modules(m.compute for m in METRICS.values())
