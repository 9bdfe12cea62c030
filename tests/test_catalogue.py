"""The lists people read (the README's tables, ``gan datasets|metrics|losses``, the summaries) are
read from the registries: none can drift from the code."""

from __future__ import annotations

import dataclasses
import re

import pytest

from gancore import catalogue
from gancore.cli import main
from gancore.datasets import REGISTRY as DATASETS
from gancore.evaluation import HEADLINE
from gancore.figures import FIGURES, METRICS, Figure, Metric
from gancore.losses import REGISTRY as LOSSES
from gancore.report import HEADLINE as SUMMARY
from helpers import REPO

README = (REPO / "README.md").read_text()


def test_the_readme_tables_are_the_registries():
    assert catalogue.render_readme(README) == README, "run: python -m gancore.catalogue --write"
    for name in (*DATASETS, *LOSSES):
        assert f"| `{name}` |" in README
    for metric in METRICS.values():
        assert f"| {metric.name} |" in README


def test_a_new_registration_reaches_the_readme_table(monkeypatch):
    spec = dataclasses.replace(DATASETS["ring8"], name="spiral3", summary="three spiral arms", modes=3)
    monkeypatch.setitem(DATASETS, "spiral3", spec)
    rendered = catalogue.render_readme(README)
    assert rendered != README
    assert re.search(r"\| `spiral3` \| vector \| 2 \| 3 \| 2,500 \| generated \| three spiral arms \|", rendered)


def test_a_readme_without_the_markers_is_refused():
    with pytest.raises(ValueError, match="no <!-- catalogue:datasets -->"):
        catalogue.render_readme("# a README\n")


@pytest.mark.parametrize(("command", "names"), [("datasets", DATASETS), ("metrics", METRICS), ("losses", LOSSES)])
def test_gan_lists_each_registry(command, names, capsys):
    assert main([command]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines()[2:]]
    assert listed == list(names)


def test_the_headline_figures_follow_the_metric_registry(monkeypatch):
    evaluate = [f.key for f in FIGURES if f.source == "evaluate"]
    assert list(HEADLINE) == evaluate == [f.key for m in METRICS.values() for f in m.figures]
    assert [(f.label, f.source, f.key) for f in FIGURES if f.summary] == list(SUMMARY)
    # Every figure a run reports is explained in "What the numbers mean".
    undocumented = [f.key for f in FIGURES if f"`{f.key}`" not in README]
    assert not undocumented


def test_a_metric_registration_is_run_by_evaluate(monkeypatch):
    """One entry in METRICS: evaluate runs its function on the same inputs and the figure is headline."""
    import torch

    from gancore.evaluation import run_metrics
    from gancore.metrics.inputs import MetricInputs

    extra = Metric("mean_gap", "metric_example:evaluate", "features", (Figure("mean_gap", "evaluate", "mean gap", "lower"),), "-")
    monkeypatch.setitem(METRICS, "mean_gap", extra)
    gen_ = torch.Generator().manual_seed(0)
    real, gen = torch.randn(200, 2, generator=gen_), torch.randn(200, 2, generator=gen_) + 1
    inputs = MetricInputs(real, gen, None, None, type("S", (), {"pr_k": 3, "dc_k": 5, "splits": 2})(), 0, lambda n: real[:n])
    out = run_metrics(inputs)
    expected = float((real.double().mean(0) - gen.double().mean(0)).norm())
    assert out["mean_gap"] == pytest.approx(expected, rel=1e-12)
    assert out["is_mean"] is None and out["kl_divergence"] is None  # no classifier: null, not absent
    # Equal covariances (both ~I), means 1 apart per coordinate: FID ~ |mu_r - mu_g|^2 = expected^2.
    assert out["fid"] == pytest.approx(expected**2, abs=0.1)


def test_a_run_without_class_probabilities_writes_the_same_keys_as_with_them():
    """Without a classifier's probabilities (the pixel space, features-only Inception) a metric's
    figures are null, never absent: evaluate.json left out kl_to_uniform, num_classes and
    classes_*, and a script reading them met a KeyError (a review)."""
    import torch

    from gancore.evaluation import run_metrics
    from gancore.metrics.inputs import MetricInputs

    gen_ = torch.Generator().manual_seed(0)
    real, gen = torch.randn(200, 2, generator=gen_), torch.randn(200, 2, generator=gen_) + 1
    real_probs, gen_probs = (torch.randn(200, 4, generator=gen_).softmax(1).numpy() for _ in range(2))
    settings = type("S", (), {"pr_k": 3, "dc_k": 5, "splits": 2})()
    with_probs = run_metrics(MetricInputs(real, gen, real_probs, gen_probs, settings, 0, lambda n: real[:n]))
    without = run_metrics(MetricInputs(real, gen, None, None, settings, 0, lambda n: real[:n]))
    assert set(without) == set(with_probs)
    assert with_probs["num_classes"] == 4 and without["num_classes"] is None
    for metric in METRICS.values():
        assert set(metric.keys) <= set(with_probs), metric.name
