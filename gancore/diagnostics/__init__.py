"""The diagnose stage: mode collapse, NDB, training dynamics and a verdict.

Reads ``samples/samples.pt``, ``data/prepared/`` (and its domain classifier for images) and, when
present, ``metrics/train_log.csv``. Writes ``metrics/diagnose.json``, ``metrics/diagnosis.md``,
``metrics/mode_histogram.csv`` (one row per mode; only the header for data without known modes)
and, under ``plots/``, ``mode_histogram.png`` (data with known modes), ``ndb.png`` and
``dynamics.png`` (when there is a training log).

Which space each measure works in:

* mode protocols: the mixture centres for 2D data, the domain classifier's probabilities for
  images (see :mod:`gancore.diagnostics.modes`);
* complete-collapse distances: raw coordinates for 2D data, the domain classifier's features for
  images (flattened pixels when the data set has no classifier);
* NDB: raw coordinates / flattened pixels, as the NDB paper does.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from gancore.config import Params
from gancore.data.prepared import PreparedData, load_prepared, to_model_range
from gancore.diagnostics.dynamics import analyse_dynamics, read_train_log
from gancore.diagnostics.modes import PAIRWISE_MAX_POINTS, STACKED_MODES, collapse_measures, modes_2d, modes_labelled, modes_stacked, subset
from gancore.diagnostics.ndb import NDB_MAX_REAL, ndb
from gancore.diagnostics.verdict import decide
from gancore.errors import EvaluationError
from gancore.io import write_json, write_text
from gancore.layout import Layout
from gancore.report import fmt

__all__ = ["diagnose", "figures_from"]


def _clean(obj: Any) -> Any:
    """JSON-safe: numpy scalars to python, non-finite floats to None (``null``: not applicable)."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        obj = float(obj)
        return obj if math.isfinite(obj) else None
    return obj


def _mode_analysis(params: Params, data: PreparedData, samples: torch.Tensor, layout: Layout, device) -> dict[str, Any]:
    """Mode report (or None), generated/real points for the distance measures, and their space."""
    meta = data.meta
    modes_meta = meta.get("modes") or {}
    cfg = params.diagnose
    n_pair = min(PAIRWISE_MAX_POINTS, len(samples), len(data.test))
    real_pair = subset(data.test, n_pair, params.seed, "diagnose/pairwise-real")
    if data.kind == "vector":
        report = None
        if modes_meta.get("centers") and modes_meta.get("sigma"):
            report = modes_2d(
                samples, modes_meta["centers"], float(modes_meta["sigma"]), real_labels=data.test_labels, real_points=data.test_float()
            )
        return {"report": report, "generated": samples, "real": to_model_range(real_pair), "space": "coordinates"}

    if not meta.get("classifier"):
        # Without a domain classifier there are no mode assignments; distances fall back to pixels.
        return {
            "report": None,
            "generated": samples.flatten(1),
            "real": to_model_range(real_pair).flatten(1),
            "space": "pixels (no domain classifier in data/prepared)",
        }
    from gancore.classifiers import classify, load_classifier

    classifier = load_classifier("domain", layout, device)
    bs = params.evaluate.batch_size
    probs, feats = classify(classifier, samples, bs, device)
    _, real_feats = classify(classifier, real_pair, bs, device)
    count = modes_meta.get("count")
    report = None
    if count == STACKED_MODES and classifier.num_classes == STACKED_MODES:
        report = modes_stacked(probs, cfg.confidence)
    elif count and data.test_labels is not None and classifier.num_classes == count:
        report = modes_labelled(probs, data.test_labels, cfg.confidence, modes_meta.get("labels"))
    return {"report": report, "generated": feats, "real": real_feats, "space": f"domain classifier features ({classifier.feature_dim}-D)"}


def diagnose(params: Params, layout: Layout) -> dict[str, Any]:
    """Run every diagnostic, write the outputs listed in the module docstring, return a summary."""
    from gancore.device import resolve_device
    from gancore.diagnostics import plots
    from gancore.sampling import load_samples

    data = load_prepared(layout.prepared)
    samples = load_samples(layout)
    if tuple(samples.shape[1:]) != data.shape:
        raise EvaluationError(
            f"samples have shape {list(samples.shape[1:])} but the prepared data {list(data.shape)}: "
            "run `gan sample` with the parameters that prepared the data"
        )
    cfg = params.diagnose
    if len(data.train) < cfg.ndb_bins:
        raise EvaluationError(
            f"diagnose.ndb_bins={cfg.ndb_bins} exceeds the {len(data.train)} prepared training examples; use at most {len(data.train)} bins"
        )
    device = resolve_device(params.device)

    modes = _mode_analysis(params, data, samples, layout, device)
    report = modes["report"]
    collapse = collapse_measures(modes["generated"], modes["real"], cfg.duplicate_fraction, params.seed)
    ndb_real = to_model_range(subset(data.train, NDB_MAX_REAL, params.seed, "diagnose/ndb-real"))
    # Pixels on the accelerator; 2D points stay on the CPU (cheap, and float64, which MPS lacks).
    ndb_result = ndb(ndb_real, samples, cfg.ndb_bins, cfg.ndb_alpha, params.seed, device=device if data.kind == "image" else "cpu")

    log = read_train_log(layout.train_log)
    dynamics = analyse_dynamics(log, params.loss.name) if log is not None and len(log["step"]) else None

    figures = {
        "dataset": data.meta.get("name", params.data.name),
        "kind": data.kind,
        "n_samples": int(len(samples)),
        **figures_from(report, collapse, ndb_result),
        "high_quality_definition": _hq_definition(data, report, cfg.confidence),
        "confidence": cfg.confidence if data.kind == "image" else None,
        "distance_space": modes["space"],
    }
    decision = decide(figures, dynamics, params.loss.name, remedy_context(params, figures, layout))
    result = _clean({**figures, **decision, "dynamics": dynamics})

    # Pictures and tables first, the JSON last: diagnose.json existing means the stage finished.
    if report:
        gen_share = np.asarray(report["generated_counts"], dtype=np.float64)
        gen_share = (gen_share / gen_share.sum() if gen_share.sum() > 0 else gen_share).tolist()
        plots.write_mode_histogram_csv(layout.mode_histogram_csv, report["mode_labels"], gen_share, report["real_histogram"])
        plots.plot_mode_histogram(
            layout.plots / "mode_histogram.png",
            report["mode_labels"],
            gen_share,
            report["real_histogram"],
            f"{figures['dataset']}: {report['modes_covered']}/{report['modes_total']} modes covered",
        )
    else:
        # No known modes: a header-only table and a picture saying so, so that nothing stale from
        # an earlier run survives (and every picture dvc.yaml names exists).
        plots.write_mode_histogram_csv(layout.mode_histogram_csv, [], [], [])
        plots.plot_not_applicable(
            layout.plots / "mode_histogram.png",
            "mode histogram",
            f"{figures['dataset']} has no known modes (no labels, no domain classifier)",
        )
    plots.plot_ndb(layout.plots / "ndb.png", ndb_result)
    if log is not None and dynamics is not None:
        plots.plot_dynamics(layout.plots / "dynamics.png", log, params.loss.name)
    else:
        plots.plot_not_applicable(layout.plots / "dynamics.png", "training dynamics", f"no training log at {layout.train_log}")
    write_text(layout.diagnosis_md, _markdown(result))
    write_json(layout.diagnose_json, result)

    return {
        "verdict": result["verdict"],
        "modes_covered": result["modes_covered"],
        "modes_total": result["modes_total"],
        "high_quality_fraction": result["high_quality_fraction"],
        "mode_kl": result["mode_kl"],
        "ndb": result["ndb"],
    }


def remedy_context(params: Params, figures: dict[str, Any], layout: Layout) -> dict[str, Any]:
    """What the remedies' settings depend on (see :func:`gancore.diagnostics.verdict.remedy_plan`)."""
    from gancore.registry import architectures

    reg = architectures().get(params.model.arch)
    options = {**(reg.architecture.defaults if reg else {}), **params.model.options}
    return {
        "pack": params.model.pack,
        "batch_size": params.train.batch_size,
        "steps": params.train.steps,
        "mixture": layout.mixture.exists(),
        "modes_total": figures.get("modes_total"),
        "kind": params.data_kind,
        "arch_options": sorted(options),
        "batch_norm": bool(options.get("batch_norm")),
    }


def figures_from(report: dict[str, Any] | None, collapse: dict[str, Any], ndb_result: dict[str, Any]) -> dict[str, Any]:
    """The flat figures of ``diagnose.json`` (and of :func:`~gancore.diagnostics.verdict.decide`)
    from a mode report (None: no known modes), :func:`collapse_measures` and :func:`ndb`."""

    def mode(key: str) -> Any:
        return report.get(key) if report else None

    return {
        **{k: mode(k) for k in ("modes_total", "modes_covered", "modes_expected", "modes_expected_sd", "high_quality_fraction", "mode_kl")},
        "mode_samples_counted": mode("n_counted"),
        "mode_protocol": mode("protocol"),
        "real_histogram_source": mode("real_histogram_source"),
        **{k: ndb_result[k] for k in ("ndb", "ndb_k", "ndb_js", "ndb_bins", "ndb_alpha", "ndb_false_positive_bound", "ndb_significant")},
        **collapse,
    }


def _hq_definition(data: PreparedData, report: dict[str, Any] | None, confidence: float) -> str | None:
    if report is None:
        return None
    if data.kind == "vector":
        return f"distance to the nearest centre < 3 sigma ({report['quality_radius']:.4g})"
    if report["modes_total"] == STACKED_MODES:
        return f"each channel's digit probability (marginal of the 1000-way probabilities) >= {confidence}"
    return f"classifier max probability >= {confidence}"


def _markdown(r: dict[str, Any]) -> str:
    rows = [
        (
            "modes covered",
            f"{fmt(r['modes_covered'])} / {fmt(r['modes_total'])}"
            + (
                f" (a faithful generator with as many counted samples, {r['mode_samples_counted']}: {r['modes_expected']:.1f})"
                if r.get("modes_expected") is not None
                else ""
            ),
        ),
        ("high-quality fraction", fmt(r["high_quality_fraction"])),
        (
            "mode KL (generated \\|\\| reference)",
            fmt(r["mode_kl"]) + (f" (reference: {r['real_histogram_source']})" if r.get("real_histogram_source") else ""),
        ),
        ("NDB / K", f"{r['ndb']} / {r['ndb_bins']} (JS {fmt(r['ndb_js'])})"),
        ("pairwise-distance ratio", fmt(r["pairwise_distance_ratio"])),
        ("near-duplicate rate (real)", f"{fmt(r['duplicate_rate'])} ({fmt(r['real_duplicate_rate'])})"),
    ]
    dyn = r.get("dynamics")
    if dyn:
        eq = dyn["equilibrium"]
        rows.append(("late D(x) / D(G(z))", f"{fmt(eq['d_real_mean'])} / {fmt(eq['d_fake_mean'])}"))
        rows.append(("late V(D,G) (equilibrium -log 4 = -1.386)", fmt(eq["value_mean"])))
    lines = [f"# Diagnosis: {r['verdict']}", "", r["explanation"], "", "| figure | value |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    if r["remedies"]:
        lines += ["", "## Remedies", ""] + [f"- {x}" for x in r["remedies"]]
    return "\n".join(lines) + "\n"
