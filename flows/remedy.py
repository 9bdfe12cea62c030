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
from gancore.config import SEED_LIMIT
from gancore.layout import find_project_root
from gancore.provenance import differences
from gancore.ranking import group_rank_key, headline, mean_figures, rank_key
from gancore.report import comparison_cells, comparison_headers, markdown_table, seeds_cells, seeds_headers, text_table
from gancore_flows.params import Repeats, Workers, resolve_params, section_parameters
from gancore_flows.pipeline import add_params_arguments, check_params, gan_pipeline
from gancore_flows.runners import Runner, add_runner_arguments, check_cluster, check_runner_arguments
from gancore_flows.sweep import run_members

# The figures the ranking table shows beside the verdict (labels: gancore.figures.FIGURES).
FIGURES = ("modes_covered", "high_quality_fraction", "mode_kl", "fid", "is_mean", "js_divergence")


def _card(row: dict[str, Any]) -> Optional[dict[str, Any]]:
    return ((row.get("result") or {}).get("evaluate") or {}).get("provenance")


def _figures(result: dict[str, Any]) -> tuple[dict[str, float], Optional[str]]:
    return headline(result.get("evaluate"), result.get("diagnose")), (result.get("diagnose") or {}).get("verdict")


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows best first, each with its ``rank``: the configurations (a remedy, or the baseline)
    by :func:`gancore.ranking.group_rank_key` over their runs on every training seed (a failed run
    counts as not healthy; a configuration none of whose runs finished goes last), and each one's
    runs best first. A run measured otherwise than the baseline (another feature network, weights,
    resize, sample size, reference split: its provenance card differs) is not ranked: its
    configuration goes last but one, ``not_comparable`` naming the fields."""
    baseline = _card(rows[0]) if rows else None
    for row in rows[1:]:
        if row.get("result") is not None:
            diff = differences(baseline, _card(row))
            if diff:
                row["not_comparable"] = diff

    def group_key(members: list[dict[str, Any]]) -> tuple[float, ...]:
        if all(m.get("result") is None for m in members):
            return (-2.0,)
        if any(m.get("not_comparable") for m in members):
            return (-1.0,)
        return group_rank_key([_figures(m["result"]) if m.get("result") else ({}, None) for m in members])

    def run_key(row: dict[str, Any]) -> tuple[float, ...]:
        return rank_key(*_figures(row["result"])) if row.get("result") else (-2.0,)

    ranked = []
    for i, members in enumerate(sorted(_configurations(rows), key=group_key, reverse=True), 1):
        for row in sorted(members, key=run_key, reverse=True):
            ranked.append({**row, "rank": i})
    return ranked


def _configurations(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The rows by configuration (their label: a remedy, or the baseline), in first-seen order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["label"], []).append(row)
    return list(groups.values())


def _seeded(rows: list[dict[str, Any]]) -> bool:
    return len({row.get("train_seed") for row in rows}) > 1


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """One row per run (ranked rows, as :func:`rank` returns them); a train.seed column where they ran on several."""
    seeded = _seeded(rows)
    headers = ["rank", "remedy", "settings", *(["train.seed"] if seeded else []), *comparison_headers(FIGURES), "MLflow run"]
    out = []
    for row in rows:
        first = [str(row["rank"]), row["label"], " ".join(row["extra"]) or "-", *([str(row.get("train_seed"))] if seeded else [])]
        r = row.get("result")
        if r is None:
            out.append([*first, f"failed: {row.get('error')}", *[""] * len(FIGURES), ""])
            continue
        if row.get("not_comparable"):
            reason = "not ranked, measured otherwise than the baseline: " + "; ".join(row["not_comparable"])
            out.append([*first, reason, *[""] * len(FIGURES), ""])
            continue
        link = f"[{r['mlflow_run_name']}]({r['mlflow_url']})" if r.get("mlflow_url") else ""
        out.append([*first, *comparison_cells(r, FIGURES), link])
    return headers, out


def seeds_table(rows: list[dict[str, Any]]) -> Optional[tuple[list[str], list[list[str]]]]:
    """One row per configuration over its training seeds (mean ± s.e.), in rank order; None when
    every configuration ran once."""
    if not _seeded(rows):
        return None
    out = []
    for members in _configurations(rows):
        first = [str(members[0]["rank"]), members[0]["label"], " ".join(members[0]["extra"]) or "-"]
        if any(m.get("not_comparable") for m in members):
            out.append([*first, "not ranked, measured otherwise than the baseline", *[""] * (len(FIGURES) + 1)])
            continue
        out.append([*first, *seeds_cells([m.get("result") for m in members], FIGURES)])
    return ["rank", "remedy", "settings", *seeds_headers(FIGURES)], out


def remedy_members(
    plan: Optional[list[dict[str, Any]]], seeds: list[int], overrides: dict[str, Any], sets: Optional[list[str]]
) -> list[dict[str, Any]]:
    """Every remedy of ``plan`` on every training seed, and, where ``plan`` is None, the baseline on
    the seeds after the first (which it ran on already). With one seed each remedy runs once, with
    the run's own train.seed."""
    several = len(seeds) > 1

    def member(label: str, extra: list[str], seed: int) -> dict[str, Any]:
        return {
            "label": label,
            "run_label": f"{label}-trainseed{seed}" if several else label,
            "extra": list(extra),
            "train_seed": seed,
            "overrides": overrides,
            "sets": [*(sets or []), *extra, *([f"train.seed={seed}"] if several else [])],
        }

    if plan is None:
        return [member("baseline", [], s) for s in seeds[1:]]
    return [member(r["name"], r["sets"], s) for r in plan for s in seeds]


def _verdict(row: dict[str, Any]) -> Optional[str]:
    return ((row.get("result") or {}).get("diagnose") or {}).get("verdict")


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
    workers: Workers = 2,
    address: Optional[str] = None,
    params_file: str = "params.yaml",
    sets: Optional[list[str]] = None,
    remedies: Optional[list[str]] = None,
    repeats: Repeats = 1,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """The baseline on params.yaml plus the overrides, then its diagnosis's remedies (see the module
    doc); ``remedies``: only these of them, by name (e.g. ``["mixture", "longer"]``; default: all).
    ``repeats``: training seeds each remedy and the baseline run on (train.seed, train.seed + 1,
    ...; the data stay the same), ranked by their share of healthy runs and their mean figures."""
    check_remedy_names(remedies)
    check_repeats(repeats)
    check_cluster(runner, address)  # before the baseline trains
    params_path = Path(params_file).resolve()
    root = find_project_root(params_path)
    params = resolve_params(params_path, overrides, sets)
    check_seeds(params.training_seed, repeats, seed_setting(params))
    seeds = [params.training_seed + i for i in range(repeats)]
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
        rows: list[dict[str, Any]] = [{"label": "baseline", "extra": [], "train_seed": seeds[0], "result": baseline}]
        if repeats > 1:  # the baseline on every seed first: one healthy draw is not a healthy configuration
            again = remedy_members(None, seeds, overrides, sets)
            run_members(again, str(params_path), None, runner, workers, address)
            for m in again:
                _nest(parent, m.get("result"))
            rows += again
        # the remedies of the first run not called healthy (each run's diagnosis proposes them for itself)
        first = next((r for r in rows if r.get("result") and _verdict(r) != "healthy"), rows[0])
        diagnosis = first["result"].get("diagnose") or {}
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
            members = remedy_members(plan, seeds, overrides, sets)
            for m in members:
                resolve_params(params_path, overrides, m["sets"])  # every remedy valid before any runs
            run_members(members, str(params_path), None, runner, workers, address)
            for m in members:
                _nest(parent, m.get("result"))
            rows += members
        ranked = rank(rows)
        headers, cells = table(ranked)
        over_seeds = seeds_table(ranked)
        best = ranked[0].get("result") or {}
        promoted = False
        if parent is not None and best.get("mlflow_run_id") and (best.get("diagnose") or {}).get("verdict") == "healthy":
            from gancore.tracking.models import promote_if_best, registered_model_name

            promoted = promote_if_best(parent.client, registered_model_name(params), best["mlflow_run_id"])
        baselines = [_verdict(r) for r in rows if r["label"] == "baseline"]
        summary = (
            (
                f"baseline healthy on {baselines.count('healthy')} of {len(baselines)} training seeds; "
                if repeats > 1
                else f"baseline verdict: {diagnosis.get('verdict', 'n/a')}; "
            )
            + (
                f"{len(plan)} remedies tried; "
                if plan
                else "no remedy needed; "
                if diagnosis.get("verdict") == "healthy"
                else "no remedy with settings; "
            )
            + f"best: {ranked[0]['label']}"
            + (f" over {repeats} training seeds" if over_seeds else "")
            + (" (registry alias @best)" if promoted else "")
        )
        tables = markdown_table(headers, cells)
        if over_seeds:
            tables = f"{markdown_table(*over_seeds)}\n\nEvery run:\n\n{tables}"
        markdown = f"# gan-remedy\n\n{summary}\n\n{tables}\n"
        create_markdown_artifact(markdown=markdown, key="gan-remedy-comparison", description=summary)
        print(summary)
        if over_seeds:
            print(text_table(*over_seeds))
        print(text_table(headers[:-1], [c[:-1] for c in cells]))
        if parent is not None:
            parent.set_tags(
                {"mlflow.note.content": markdown, "verdict": (best.get("diagnose") or {}).get("verdict"), "remedy.best": ranked[0]["label"]}
            )
            if over_seeds:  # what the ranking read: the best configuration's mean figures and healthy share
                parent.log_metrics(mean_figures([_figures(r["result"]) for r in ranked if r["rank"] == 1 and r.get("result")]))
            else:
                parent.log_metrics(headline(best.get("evaluate"), best.get("diagnose")))
    except BaseException as exc:
        if parent is not None:
            parent.end(tracking.ended_status(exc))
        raise
    if parent is not None:
        parent.end("FINISHED")
    return [
        {
            "label": r["label"],
            "rank": r["rank"],
            "train_seed": r.get("train_seed"),
            "settings": r["extra"],
            "verdict": _verdict(r),
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


def check_repeats(repeats: int) -> None:
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a whole number of training seeds, 1 or more (got {repeats!r})")


def seed_setting(params: Any) -> str:
    """The setting training's seed comes from: ``train.seed``, or ``seed`` while it is null."""
    return "train.seed" if params.train.seed is not None else "seed"


def check_seeds(first: int, repeats: int, setting: str = "train.seed") -> None:
    """The training seeds first, first + 1, ... must stay seeds (below SEED_LIMIT), checked before the
    baseline trains; ``setting`` is the one that set ``first`` (``seed`` while train.seed is null)."""
    if first + repeats - 1 >= SEED_LIMIT:
        raise ValueError(f"repeats={repeats} from {setting} {first} runs past the largest seed, {SEED_LIMIT - 1}: set a lower {setting}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gancore_flows.remedy", description="Run the gan-remedy flow in this process.")
    add_params_arguments(parser)
    add_runner_arguments(parser, "remedies")
    parser.add_argument("--remedies", default=None, metavar="A,B", help="only these of the proposed remedies, e.g. mixture,longer")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        metavar="N",
        help="training seeds each remedy and the baseline run on (default 1; 3 gives mean ± s.e.)",
    )
    args = parser.parse_args(argv)
    remedies = [n.strip() for n in args.remedies.split(",") if n.strip()] if args.remedies is not None else None
    try:
        check_remedy_names(remedies)
    except ValueError as exc:
        print(f"gan-remedy: --remedies: {exc}", file=sys.stderr)
        return 2
    try:
        check_repeats(args.repeats)
    except ValueError as exc:
        print(f"gan-remedy: --repeats: {exc}", file=sys.stderr)
        return 2
    if (code := check_params("gan-remedy", args.params, args.sets)) is not None:
        return code
    if (code := check_runner_arguments("gan-remedy", args)) is not None:
        return code
    try:
        resolved = resolve_params(args.params, {}, args.sets)
        check_seeds(resolved.training_seed, args.repeats, seed_setting(resolved))
    except ValueError as exc:
        print(f"gan-remedy: --repeats: {exc}", file=sys.stderr)
        return 2
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
        repeats=args.repeats,
    )
    if ranked is None:
        return 1
    print("Open the MLflow UI with:  make ui")
    return 0


if __name__ == "__main__":
    sys.exit(main())
