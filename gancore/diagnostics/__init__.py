"""The diagnose stage: mode collapse, NDB, training dynamics and a verdict.

Reads ``samples/samples.pt``, ``data/prepared/`` (and its domain classifier for images) and, when
present, ``metrics/train_log.csv``. Writes ``metrics/diagnose.json``, ``metrics/diagnosis.md``,
``metrics/mode_histogram.csv`` (one row per mode; only the header for data without known modes)
and, under ``plots/``, ``mode_histogram.png`` (data with known modes), ``ndb.png`` and
``dynamics.png`` (when there is a training log).

Which space each measure works in: :mod:`gancore.diagnostics.spaces`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gancore.config import Params
from gancore.data.prepared import PreparedData, load_prepared
from gancore.diagnostics import memorisation
from gancore.diagnostics.dynamics import analyse_dynamics, read_train_log, with_parts
from gancore.diagnostics.modes import OUTSIDE_FIGURES, REPORT_FIGURES, STACKED_PROTOCOL
from gancore.diagnostics.spaces import measure
from gancore.diagnostics.verdict import decide
from gancore.errors import EvaluationError, ParamsError
from gancore.heldout import steering_problem
from gancore.io import read_json, write_json, write_text
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
        raise ParamsError(
            [
                (
                    "diagnose.ndb_bins",
                    f"{cfg.ndb_bins} exceeds the {len(data.train)} prepared training examples; use at most {len(data.train)} bins",
                )
            ]
        )
    device = resolve_device(params.device)

    report, ndb_result, measured = measure(params, data, samples, layout, device)

    log = read_train_log(layout.train_log)
    dynamics = analyse_dynamics(log, params.loss.name) if log is not None and len(log["step"]) else None
    if layout.mixture.is_file():  # judged part by part too: the average can hide one part's problem
        logs = [(int(p["index"]), read_train_log(layout.part(int(p["index"])).train_log)) for p in read_json(layout.mixture)["parts"]]
        parts = [(index, analyse_dynamics(each, params.loss.name)) for index, each in logs if each is not None and len(each["step"])]
        dynamics = with_parts(dynamics, parts)
    overfitting = memorisation.measure(params, layout, device)
    if overfitting is not None:
        dynamics = {**(dynamics or {}), "discriminator_overfitting": overfitting}

    figures = {
        **_coverage_figures(layout),
        "dataset": data.meta.get("name", params.data.name),
        "kind": data.kind,
        "n_samples": int(len(samples)),
        **figures_from(report, measured, ndb_result),
        "high_quality_definition": _hq_definition(data, report, cfg.confidence),
        "confidence": cfg.confidence if data.kind == "image" else None,
    }
    decision = without_refused_remedies(params, decide(figures, dynamics, params.loss.name, remedy_context(params, figures, layout)))
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


def _coverage_figures(layout: Layout) -> dict[str, Any]:
    """Precision and coverage beside a faithful generator's, from ``evaluate.json`` when the
    evaluate stage ran (the variety the samples cover; see the verdict's coverage rule)."""
    if not layout.evaluate_json.is_file():
        return {}
    evaluation = read_json(layout.evaluate_json)
    keys = ("precision", "coverage", "precision_faithful", "coverage_faithful", "knn_n")
    return {f"evaluate_{k}": evaluation.get(k) for k in keys}


def _held_out_usable(params: Params, layout: Layout) -> bool:
    """Whether training could steer augmentation by held-out examples: every trained D (each
    mixture part's) has test examples of its own, a packed batch of them in the half that steers."""
    layouts = [layout.part(int(p["index"])) for p in read_json(layout.mixture)["parts"]] if layout.mixture.exists() else [layout]
    need = params.train.batch_size * params.model.pack
    metas = [read_json(each.prepared_meta) for each in layouts if each.prepared_meta.is_file()]
    return all(steering_problem(m, m.get("count_test"), need) is None for m in metas)


def without_refused_remedies(params: Params, decision: dict[str, Any]) -> dict[str, Any]:
    """``decision`` without the remedies whose settings this run's configuration would refuse,
    listed under ``remedies_refused`` with the reason: a proposal must run as printed (gan-remedy
    tries every one after the baseline; one refused setting failed the whole flow)."""
    import copy

    from gancore.config import validate
    from gancore.params_tree import apply_overrides

    tree = params.model_dump(mode="json")
    kept, refused = [], []
    for text, setting in zip(decision["remedies"], decision["remedy_settings"]):
        sets = list(setting.get("sets") or [])
        try:
            if sets:
                validate(apply_overrides(copy.deepcopy(tree), sets), "the remedy's settings")
        except ParamsError as exc:
            refused.append({**setting, "problems": [f"{key}: {message}" for key, message in exc.problems]})
            continue
        kept.append((text, setting))
    return {**decision, "remedies": [t for t, _ in kept], "remedy_settings": [s for _, s in kept], "remedies_refused": refused}


def remedy_context(params: Params, figures: dict[str, Any], layout: Layout) -> dict[str, Any]:
    """What the remedies' settings depend on (see :func:`gancore.diagnostics.remedies.plan`)."""
    from gancore.config_checks import monitored_steps
    from gancore.partition import one_cluster, part_steps
    from gancore.registry import architectures

    reg = architectures().get(params.model.arch)
    options = {**(reg.architecture.defaults if reg else {}), **params.model.options}
    t = params.train
    # A mixture's parts train mixture.steps: "train longer" must lengthen those (and train.steps,
    # which its rows outside every cluster train, where they are a part: mixture.part_steps).
    manifest = read_json(layout.mixture) if layout.mixture.exists() else None
    listed = manifest["parts"] if manifest is not None else []
    # (the sole part of data found to be one cluster trains at least train.steps, as one GAN would)
    whole = manifest is not None and one_cluster(manifest)
    parts = manifest is not None and params.mixture.steps is not None and not whole
    flat = parts and any(p.get("background") for p in listed)
    steps = params.mixture.steps if parts else part_steps(params, whole=True) if whole else t.steps
    return {
        "pack": params.model.pack,
        "batch_size": t.batch_size,
        "steps": steps,
        "steps_key": "mixture.steps" if parts else "train.steps",
        # what the configuration checks train.monitor_every against (it cannot know the partition)
        "monitor_steps": monitored_steps(params)[0],
        "flat_part_steps": t.steps if flat else None,
        "lr_g": t.lr_g,
        "lr_d": t.lr_d,
        "n_critic": t.n_critic,
        "monitor_every": t.monitor_every,
        "mixture": manifest is not None,
        "mixture_parts": len(listed) if manifest is not None else None,
        "partition_method": manifest.get("method") if manifest is not None else None,
        "modes_total": figures.get("modes_total"),
        "kind": params.data_kind,
        "augment_policy": params.augment.policy,
        "augment_adaptive": params.augment.adaptive,
        "augment_target": params.augment.target,
        "augment_signal": params.augment.signal,
        "held_out_usable": _held_out_usable(params, layout),
        "probe": params.probe.enabled,
        "arch_options": sorted(options),
        "batch_norm": bool(options.get("batch_norm")),
        "d_batch_norm": bool(options.get("d_batch_norm")),
    }


def figures_from(report: dict[str, Any] | None, measured: dict[str, Any], ndb_result: dict[str, Any]) -> dict[str, Any]:
    """The flat figures of ``diagnose.json`` (and of :func:`~gancore.diagnostics.verdict.decide`)
    from a mode report (None: no known modes), the distance measures
    (:func:`gancore.diagnostics.spaces.measure`: collapse, dispersion, copying) and :func:`ndb`."""

    def mode(key: str) -> Any:
        return report.get(key) if report else None

    return {
        **{k: mode(k) for k in REPORT_FIGURES + OUTSIDE_FIGURES},
        "mode_samples_counted": mode("n_counted"),
        "mode_protocol": mode("protocol"),
        "real_histogram_source": mode("real_histogram_source"),
        **{
            k: ndb_result[k]
            for k in ("ndb", "ndb_k", "ndb_js", "ndb_bins", "ndb_alpha", "ndb_false_positive_bound", "ndb_significant", "ndb_bins_seen")
        },
        **measured,
    }


def _hq_definition(data: PreparedData, report: dict[str, Any] | None, confidence: float) -> str | None:
    if report is None:
        return None
    if data.kind == "vector" and (data.meta.get("modes") or {}).get("estimated"):
        return f"Mahalanobis distance to the most probable fitted component < {report['quality_radius']:.4g} (PacGAN's 3 sigma carried to {data.shape[0]}-D)"
    if data.kind == "vector":
        return f"distance to the nearest centre < 3 sigma ({report['quality_radius']:.4g})"
    if report["protocol"].startswith(STACKED_PROTOCOL):
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
        *(
            [("samples outside every cluster (training rows)", f"{fmt(r['outside_share'])} ({fmt(r['outside_share_real'])})")]
            if r.get("outside_share_real") is not None
            else []
        ),
        *(
            [
                (
                    "cells outside every cluster short of samples",
                    f"{r['outside_cells_short']} of {r['outside_cells']} ({fmt(r.get('outside_cells_short_share'))} of the training rows)",
                )
            ]
            if r.get("outside_cells") is not None
            else []
        ),
        *(
            [
                (
                    "near-duplicate rate outside every cluster (training rows there, same n)",
                    f"{fmt(r['outside_duplicate_rate'])} ({fmt(r['outside_real_duplicate_rate'])}; chance {fmt(r.get('outside_duplicate_quantile'))})"
                    + (
                        f"; neighbour {r['outside_duplicate_neighbour']}, the rows repeat values"
                        if (r.get("outside_duplicate_neighbour") or 1) > 1
                        else ""
                    ),
                )
            ]
            if r.get("outside_duplicate_rate") is not None
            else []
        ),
        (
            "mode KL (generated \\|\\| reference)",
            fmt(r["mode_kl"]) + (f" (reference: {r['real_histogram_source']})" if r.get("real_histogram_source") else ""),
        ),
        ("NDB / K", f"{r['ndb']} / {r['ndb_bins']} (JS {fmt(r['ndb_js'])})"),
        ("pairwise-distance ratio", fmt(r["pairwise_distance_ratio"])),
        (
            "spread inside modes / the data's",
            fmt(r.get("dispersion_ratio"))
            + (
                f" (lowest: mode {r.get('dispersion_min_mode')}, {fmt(r.get('dispersion_min'))})"
                if r.get("dispersion_min") is not None
                else ""
            ),
        ),
        (
            "near-duplicate rate (real data, same n)",
            f"{fmt(r['duplicate_rate'])} ({fmt(r['real_duplicate_rate'])}; chance {fmt(r.get('duplicate_quantile'))})"
            # Data with exact ties are judged at the k-th neighbour (see diversity.near_duplicates).
            + (f"; neighbour {r['duplicate_neighbour']}, the data repeat values" if (r.get("duplicate_neighbour") or 1) > 1 else ""),
        ),
        (
            "data copying: C_T (copy rate)",
            f"{fmt(r.get('copy_c_t'))} ({fmt(r.get('copy_rate'))}; chance {fmt(r.get('copy_quantile'))})"
            # Copies of training points left out of the search read as fresh samples.
            + (f"; {r['copy_train_share']:.0%} of training points searched" if (r.get("copy_train_share") or 1.0) < 1.0 else ""),
        ),
    ]
    dyn = r.get("dynamics") or {}
    if (dyn.get("equilibrium") or {}).get("applicable"):  # D(x) = 1/2, V = -log 4: sigmoid D only
        eq = dyn["equilibrium"]
        rows.append(("late D(x) / D(G(z))", f"{fmt(eq['d_real_mean'])} / {fmt(eq['d_fake_mean'])}"))
        rows.append(("late V(D,G) (equilibrium -log 4 = -1.386)", fmt(eq["value_mean"])))
    if dyn.get("discriminator_overfitting"):
        m = dyn["discriminator_overfitting"]
        if m.get("called_real_train") is not None:  # a critic without a decision boundary calls nothing real
            rows.append(
                (
                    "D calls real: training / held-out data (r_t)",
                    f"{fmt(m['called_real_train'])} / {fmt(m['called_real_heldout'])} ({fmt(m['r_t_train'])})",
                )
            )
        if m.get("auc") is not None:
            rows.append(("D's logits, training above held-out (AUC; 0.5: cannot tell them apart)", fmt(m["auc"])))
    lines = [f"# Diagnosis: {r['verdict']}", "", r["explanation"], "", "| figure | value |", "|---|---|"]
    lines += [f"| {a} | {b} |" for a, b in rows]
    if r["remedies"]:
        lines += ["", "## Remedies", ""] + [f"- {x}" for x in r["remedies"]]
    if r.get("remedies_refused"):
        lines += ["", "Not proposed, as this run's configuration refuses their settings:", ""]
        lines += [f"- {x['name']} ({', '.join(x['sets'])}): {'; '.join(x['problems'])}" for x in r["remedies_refused"]]
    return "\n".join(lines) + "\n"
