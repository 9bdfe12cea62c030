"""gan-remedy: run the pipeline, and when the diagnosis is not healthy, run the remedies it names.

1. gan-pipeline on the given parameters (the baseline).
2. When its verdict is not ``healthy``, every remedy the diagnosis lists with parameter settings
   (``diagnose.json``'s ``remedy_settings``: packing with 2 and 4 samples, a mixture of GANs per
   mode, the non-saturating or Wasserstein loss, more steps, ...) runs as one member of a sweep, on
   the sweep's task runner, each a gan-pipeline run with those settings added.
3. A comparison table ranks the baseline and the remedies (:func:`gancore.ranking.rank_key`:
   healthy first, then modes covered, high-quality fraction, mode KL, FID): a Prefect artifact,
   printed, and an MLflow parent run whose children are the member runs. The winner's registered
   model version gets the registry alias ``best`` when it is healthy.

``python -m gancore_flows.remedy -S data.name=grid25 [--runner dask] [--workers 3] [--remedies mixture,longer]``
"""

# No `from __future__ import annotations`: Prefect builds the parameter model from the real
# annotations, also in process-pool workers that receive the flow by value.

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from gancore import tracking
from gancore.layout import find_project_root
from gancore.provenance import differences
from gancore.ranking import headline, rank_key
from gancore.report import comparison_cells, comparison_headers, markdown_table, text_table
from gancore_flows.params import resolve_params, section_parameters
from gancore_flows.pipeline import add_params_arguments, check_params, gan_pipeline
from gancore_flows.runners import RUNNERS, Runner
from gancore_flows.sweep import run_members

# The figures the ranking table shows beside the verdict (labels: gancore.figures.FIGURES).
FIGURES = ("modes_covered", "high_quality_fraction", "mode_kl", "fid", "is_mean", "js_divergence")


def _card(row: dict[str, Any]) -> Optional[dict[str, Any]]:
    return ((row.get("result") or {}).get("evaluate") or {}).get("provenance")


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows best first (failed runs last). A run measured otherwise than the baseline (another
    feature network, weights, resize, sample size, reference split: its provenance card differs)
    is not ranked: it goes last, ``not_comparable`` naming the fields."""
    baseline = _card(rows[0]) if rows else None
    for row in rows[1:]:
        if row.get("result") is not None:
            diff = differences(baseline, _card(row))
            if diff:
                row["not_comparable"] = diff

    def key(row: dict[str, Any]) -> tuple[float, ...]:
        r = row.get("result")
        if r is None:
            return (-2.0,)
        if row.get("not_comparable"):
            return (-1.0,)
        return rank_key(headline(r.get("evaluate"), r.get("diagnose")), (r.get("diagnose") or {}).get("verdict"))

    return sorted(rows, key=key, reverse=True)


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["rank", "remedy", "settings", *comparison_headers(FIGURES), "MLflow run"]
    out = []
    for i, row in enumerate(rows, 1):
        r = row.get("result")
        if r is None:
            out.append([str(i), row["label"], " ".join(row["extra"]) or "-", f"failed: {row.get('error')}", *[""] * len(FIGURES), ""])
            continue
        if row.get("not_comparable"):
            reason = "not ranked, measured otherwise than the baseline: " + "; ".join(row["not_comparable"])
            out.append([str(i), row["label"], " ".join(row["extra"]) or "-", reason, *[""] * len(FIGURES), ""])
            continue
        cells = comparison_cells(r, FIGURES)
        link = f"[{r['mlflow_run_name']}]({r['mlflow_url']})" if r.get("mlflow_url") else ""
        out.append([str(i), row["label"], " ".join(row["extra"]) or "-", *cells, link])
    return headers, out


def _nest(parent: Optional[tracking.PipelineRun], result: Optional[dict[str, Any]]) -> None:
    if parent is not None and result and result.get("mlflow_run_id"):
        parent.client.set_tag(result["mlflow_run_id"], "mlflow.parentRunId", parent.run_id)


@flow(
    name="gan-remedy",
    log_prints=True,
    description="gan-pipeline, then the remedies its diagnosis names as a sweep; a ranked comparison and the registry alias best",
)
@section_parameters
def gan_remedy(
    runner: Runner = "process",
    workers: int = 2,
    address: Optional[str] = None,
    params_file: str = "params.yaml",
    sets: Optional[list[str]] = None,
    remedies: Optional[list[str]] = None,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """The baseline on params.yaml plus the overrides, then its diagnosis's remedies (see the module
    doc); ``remedies``: only these of them, by name (e.g. ``["mixture", "longer"]``; default: all)."""
    check_remedy_names(remedies)
    params_path = Path(params_file).resolve()
    root = find_project_root(params_path)
    params = resolve_params(params_path, overrides, sets)
    parent = None
    if params.tracking.enabled:
        c = tracking.client(root)
        exp = tracking.experiment_id(c, params.tracking.experiment)
        run = c.create_run(
            exp, run_name=f"remedy-{tracking.run_name(params)}", tags={"orchestrator": "prefect", "gancore.flow": "gan-remedy"}
        )
        parent = tracking.PipelineRun(c, run.info.run_id, exp, root)
    try:
        baseline = gan_pipeline.with_options(flow_run_name="baseline")(params_file=params_file, sets=sets, **overrides)
        _nest(parent, baseline)
        rows: list[dict[str, Any]] = [{"label": "baseline", "extra": [], "result": baseline}]
        diagnosis = baseline.get("diagnose") or {}
        plan = [] if diagnosis.get("verdict") == "healthy" else [r for r in diagnosis.get("remedy_settings") or [] if r.get("sets")]
        if remedies is not None:
            skipped = [r["name"] for r in plan if r["name"] not in remedies]
            unproposed = [n for n in remedies if n not in {r["name"] for r in plan}]
            plan = [r for r in plan if r["name"] in remedies]
            if skipped or unproposed:
                print(
                    f"remedies chosen: {', '.join(r['name'] for r in plan) or 'none'}"
                    + (f"; not run: {', '.join(skipped)}" if skipped else "")
                    + (f"; not proposed by this diagnosis: {', '.join(unproposed)}" if unproposed else "")
                )
        if plan:
            members = [
                {"label": r["name"], "extra": list(r["sets"]), "overrides": overrides, "sets": [*(sets or []), *r["sets"]]} for r in plan
            ]
            for m in members:
                resolve_params(params_path, overrides, m["sets"])  # every remedy valid before any runs
            run_members(members, str(params_path), None, runner, workers, address)
            for m in members:
                _nest(parent, m.get("result"))
            rows += members
        ranked = rank(rows)
        headers, cells = table(ranked)
        best = ranked[0].get("result") or {}
        promoted = False
        if parent is not None and best.get("mlflow_run_id") and (best.get("diagnose") or {}).get("verdict") == "healthy":
            from gancore.tracking.models import promote_if_best, registered_model_name

            promoted = promote_if_best(parent.client, registered_model_name(params), best["mlflow_run_id"])
        summary = (
            f"baseline verdict: {diagnosis.get('verdict', 'n/a')}; "
            + (
                f"{len(plan)} remedies tried; "
                if plan
                else "no remedy needed; "
                if diagnosis.get("verdict") == "healthy"
                else "no remedy with settings; "
            )
            + f"best: {ranked[0]['label']}"
            + (" (registry alias @best)" if promoted else "")
        )
        markdown = f"# gan-remedy\n\n{summary}\n\n{markdown_table(headers, cells)}\n"
        create_markdown_artifact(markdown=markdown, key="gan-remedy-comparison", description=summary)
        print(summary)
        print(text_table(headers[:-1], [c[:-1] for c in cells]))
        if parent is not None:
            parent.set_tags(
                {"mlflow.note.content": markdown, "verdict": (best.get("diagnose") or {}).get("verdict"), "remedy.best": ranked[0]["label"]}
            )
            parent.log_metrics(headline(best.get("evaluate"), best.get("diagnose")))
    except BaseException:
        if parent is not None:
            parent.end("FAILED")
        raise
    if parent is not None:
        parent.end("FINISHED")
    return [
        {
            "label": r["label"],
            "settings": r["extra"],
            "verdict": ((r.get("result") or {}).get("diagnose") or {}).get("verdict"),
            "mlflow_run_id": (r.get("result") or {}).get("mlflow_run_id"),
            "error": r.get("error"),
        }
        for r in ranked
    ]


def check_remedy_names(names: Optional[list[str]]) -> None:
    from gancore.diagnostics.remedies import NAMES

    unknown = [n for n in names or [] if n not in NAMES]
    if unknown:
        raise ValueError(f"unknown remedy {', '.join(map(repr, unknown))}; choose from {', '.join(NAMES)}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gancore_flows.remedy", description="Run the gan-remedy flow in this process.")
    add_params_arguments(parser)
    parser.add_argument("--runner", choices=RUNNERS, default="process", help="where the remedies run (default: a local process pool)")
    parser.add_argument("--workers", type=int, default=2, help="remedies run at once (default 2)")
    parser.add_argument("--address", default=None, help="an existing Dask scheduler or Ray cluster")
    parser.add_argument("--remedies", default=None, metavar="A,B", help="only these of the proposed remedies, e.g. mixture,longer")
    args = parser.parse_args(argv)
    remedies = [n.strip() for n in args.remedies.split(",") if n.strip()] if args.remedies is not None else None
    try:
        check_remedy_names(remedies)
    except ValueError as exc:
        print(f"gan-remedy: --remedies: {exc}", file=sys.stderr)
        return 2
    if (code := check_params("gan-remedy", args.params, args.sets)) is not None:
        return code
    from gancore_flows.prefect_api import run_locally

    ranked = run_locally(
        "gan-remedy",
        gan_remedy,
        runner=args.runner,
        workers=args.workers,
        address=args.address,
        params_file=args.params,
        sets=args.sets,
        remedies=remedies,
    )
    if ranked is None:
        return 1
    print("Open the MLflow UI with:  make ui")
    return 0


if __name__ == "__main__":
    sys.exit(main())
