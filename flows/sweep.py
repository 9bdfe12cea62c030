"""gan-sweep: gan-pipeline over every combination of architectures, losses and seeds, in parallel.

Each combination is one gan-pipeline flow run (its own output directory and MLflow run), started
by a task, so the flow's task runner decides where the members run (:mod:`gancore_flows.runners`):
a local process pool by default, not threads, because the stages are not thread-safe together
(training seeds torch's global RNG when it builds models, and matplotlib's text rendering fails
when two diagnoses plot at once: seen with a thread pool); or a Dask or Ray cluster, local or at
``--address``. Every member reports to the sweep's Prefect API. The sweep ends with a comparison
table (a Prefect markdown artifact, also printed).

``python -m gancore_flows.sweep --arch mlp --loss non_saturating --loss hinge --seed 0 --seed 1 [-S ...]``
"""

# No `from __future__ import annotations`: Prefect builds the parameter model from the real
# annotations, also in process-pool workers that receive the flow by value.

import argparse
import itertools
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, get_args

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from pydantic import Field

from gancore import progress, tracking
from gancore.config import ParamsError
from gancore.layout import find_project_root
from gancore.names import LossName
from gancore.provenance import differences
from gancore.report import comparison_cells, comparison_headers, markdown_table, seeds_cells, seeds_headers
from gancore_flows.params import Seeds, Workers, member_overrides, resolve_params, section_parameters
from gancore_flows.pipeline import add_params_arguments, check_params, gan_pipeline
from gancore_flows.runners import (
    Runner,
    add_runner_arguments,
    check_cluster,
    check_member_host,
    check_runner_arguments,
    member_context,
    members_pool,
    threads_per_member,
)

# The figures the comparison table shows beside the verdict (labels: gancore.figures.FIGURES).
FIGURES = ("modes_covered", "high_quality_fraction", "mode_kl", "kl_divergence", "js_divergence", "fid", "precision", "recall")


@task(name="pipeline-run", task_run_name="{label}")
def pipeline_member(
    label: str,
    overrides: dict[str, Any],
    params_file: str,
    sets: Optional[list[str]] = None,
    threads: int = 1,
    context: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """One member of the sweep: a gan-pipeline flow run (nested under the sweep)."""
    import torch

    if context:
        check_member_host(context)
    torch.set_num_threads(threads)
    return gan_pipeline.with_options(flow_run_name=label)(params_file=params_file, sets=sets, **overrides)


def run_members(
    members: list[dict[str, Any]],
    params_file: str,
    sets: Optional[list[str]],
    runner: str = "process",
    workers: int = 2,
    address: Optional[str] = None,
) -> int:
    """Run every member on ``runner``, wait for all, put ``result`` (or ``error``) in each; return
    the number that failed."""
    context = member_context(params_file)
    threads = threads_per_member(min(workers, len(members)))
    failures = 0
    with members_pool(runner, workers, address) as pool:
        futures = [
            pool.submit(
                pipeline_member,
                parameters={
                    "label": m.get("run_label", m["label"]),
                    "overrides": m["overrides"],
                    # absolute: a worker of an existing cluster resolves a relative path in its
                    # own working directory, another project's params.yaml
                    "params_file": str(Path(params_file).resolve()),
                    "sets": m.get("sets", sets),
                    "threads": threads,
                    "context": context,
                },
            )
            for m in members
        ]
        # In submission order: the bar may lag a member that finished early, never run ahead.
        with progress.bar(len(members), "sweep members", "run") as bar:
            for m, future in zip(members, futures):
                future.wait()
                if future.state.is_completed():
                    m["result"] = future.result()
                else:
                    failures += 1
                    exc = future.state.result(raise_on_failure=False)
                    m["result"], m["error"] = None, (str(exc).splitlines() or [future.state.name])[0][:200]
                bar.update()
                bar.set_postfix(failed=failures)
    return failures


def comparison_rows(
    members: list[dict[str, Any]], keys: tuple[str, ...] = ("arch", "loss", "seed"), seed_key: str = "seed"
) -> tuple[list[str], list[list[str]]]:
    headers = [*(seed_key if k == "seed" else k for k in keys), *comparison_headers(FIGURES), "MLflow run"]
    rows = []
    for m in members:
        r = m.get("result")
        ident = [str(m[k]) for k in keys]
        if r is None:
            rows.append([*ident, f"failed: {m['error']}", *[""] * len(FIGURES), ""])
            continue
        cells = comparison_cells(r, FIGURES)
        link = f"[{r['mlflow_run_name']}]({r['mlflow_url']})" if r.get("mlflow_url") else ""
        rows.append([*ident, *cells, link])
    return headers, rows


def over_seeds(members: list[dict[str, Any]], seed_key: str = "seed") -> Optional[str]:
    """Each (arch, loss) over its seeds, the figures as mean ± s.e. (markdown), or None when no
    configuration ran on more than one seed: one run of a GAN is one draw, and a sweep over seeds
    is there to say how far a configuration's figures spread."""
    groups: dict[tuple[str, str], list[Optional[dict[str, Any]]]] = {}
    for m in members:
        groups.setdefault((m["arch"], m["loss"]), []).append(m.get("result"))
    if not any(len(results) > 1 for results in groups.values()):
        return None
    rows = [[arch, loss, *seeds_cells(results, FIGURES)] for (arch, loss), results in groups.items()]
    caption = f"Over {seed_key} (mean ± standard error of the runs that finished):"
    return caption + "\n\n" + markdown_table(["arch", "loss", *seeds_headers(FIGURES)], rows)


# What the seeds set: the seed (each member draws its own data, and trains, samples and evaluates
# with it), or only training's (``train.seed``: one prepared data set, one set of sample latents
# and evaluation subsets, so the members differ by training's randomness alone).
SeedKey = Literal["seed", "train.seed"]
SEED_KEYS: tuple[str, ...] = get_args(SeedKey)


def swept_keys(seed_key: str = "seed") -> tuple[str, ...]:
    """The keys each member sets for itself: its architecture, loss and seed."""
    return ("model.arch", "loss.name", seed_key)


def check_sets(sets: Optional[list[str]], seed_key: str = "seed") -> None:
    """-S settings apply after a member's own: one on a swept axis would make every member the
    same run under different labels."""
    keys = swept_keys(seed_key)
    swept = [s for s in sets or () if s.split("=", 1)[0].strip() in keys]
    if swept:
        named = sorted({s.split("=", 1)[0].strip() for s in swept}, key=keys.index)
        them = "it" if len(named) == 1 else "them"
        problem = f"{', '.join(swept)} would override the swept {', '.join(named)}; sweep {them} with archs, losses and seeds"
        raise ParamsError([("sets", problem)])


def sweep_members(
    archs: list[str],
    losses: list[str],
    seeds: list[int],
    params_file: str,
    sets: Optional[list[str]],
    base: dict[str, Any],
    seed_key: str = "seed",
) -> list[dict[str, Any]]:
    """Every (arch, loss, seed) with its overrides and its parameters, each validated (a bad one
    raises ``ParamsError`` before any member runs). ``seed_key``: what the seeds set (:data:`SeedKey`)."""
    # a value twice is the same run twice: two "seeds" that are one would halve the s.e. of nothing
    axes: tuple[tuple[str, list[Any]], ...] = (("archs", list(archs)), ("losses", list(losses)), ("seeds", list(seeds)))
    repeated = [(name, sorted({str(v) for v in values if values.count(v) > 1})) for name, values in axes]
    problems = [(name, f"{', '.join(twice)} given more than once; give each once") for name, twice in repeated if twice]
    if problems:
        raise ParamsError(problems)
    members = []
    mark = "trainseed" if seed_key == "train.seed" else "seed"
    for arch, loss_name, seed in itertools.product(archs, losses, seeds):
        member = member_overrides(base, **{"model.arch": arch, "loss.name": loss_name, seed_key: seed})
        members.append(
            {
                "arch": arch,
                "loss": loss_name,
                "seed": seed,
                "overrides": member,
                "params": resolve_params(params_file, member, sets),
                "label": f"{arch}-{loss_name}-{mark}{seed}",
            }
        )
    return members


DEFAULT_ARCHS: list[str] = ["mlp"]
DEFAULT_LOSSES: list[LossName] = ["non_saturating", "hinge"]
DEFAULT_SEEDS: list[int] = [0]


@flow(
    name="gan-sweep",
    log_prints=True,
    description="gan-pipeline over architectures x losses x seeds, in parallel; ends with a comparison table",
)
@section_parameters
def gan_sweep(
    archs: Annotated[list[str], Field(min_length=1)] = DEFAULT_ARCHS,  # noqa: B006 - Prefect copies parameter defaults
    losses: Annotated[list[LossName], Field(min_length=1)] = DEFAULT_LOSSES,  # noqa: B006
    seeds: Seeds = DEFAULT_SEEDS,  # noqa: B006
    seed_key: SeedKey = "seed",
    runner: Runner = "process",
    workers: Workers = 2,
    address: Optional[str] = None,
    params_file: str = "params.yaml",
    sets: Optional[list[str]] = None,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Every (arch, loss, seed) on params.yaml plus the shared overrides; a table compares them.

    ``seed_key``: what the seeds set: ``seed`` (data, training and evaluation) or ``train.seed``
    (training alone, on one prepared data set). ``runner``: where the members run (a local process
    pool, Dask or Ray), ``workers`` at once; ``address``: an existing Dask scheduler or Ray cluster
    (without it a local one starts).
    """
    check_sets(sets, seed_key)
    check_cluster(runner, address)
    base = {k: v for k, v in overrides.items() if k != seed_key}
    members = sweep_members(archs, losses, seeds, params_file, sets, base, seed_key)
    if not members:
        raise ValueError("empty sweep: give at least one architecture, one loss and one seed")
    if members[0]["params"].tracking.enabled:
        # One store and experiment, created before members race to create them.
        tracking.ensure_experiment(members[0]["params"].tracking.experiment, find_project_root(params_file))
    failures = run_members(members, params_file, sets, runner, workers, address)
    headers, rows = comparison_rows(members, seed_key=seed_key)
    table = markdown_table(headers, rows)
    summary = over_seeds(members, seed_key)
    if summary:
        table += "\n\n" + summary
    cards = [((m.get("result") or {}).get("evaluate") or {}).get("provenance") for m in members if m.get("result")]
    apart = sorted({d for c in cards[1:] for d in differences(cards[0], c)})
    if apart:  # numbers measured otherwise do not sit in one table without a warning
        table += "\n\nNot comparable as they stand (their provenance cards differ): " + "; ".join(apart)
    create_markdown_artifact(
        markdown=f"# gan-sweep\n\n{table}\n", key="gan-sweep-comparison", description=f"gan-sweep over {len(members)} configurations"
    )
    print(table)
    if failures:
        raise RuntimeError(f"{failures} of {len(members)} sweep members failed; see the table above")
    return [{k: v for k, v in m.items() if k not in ("overrides", "params")} for m in members]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gancore_flows.sweep", description="Run the gan-sweep flow in this process.")
    parser.add_argument("--arch", action="append", dest="archs", metavar="NAME", help="architecture (repeatable; default mlp)")
    parser.add_argument("--loss", action="append", dest="losses", metavar="NAME", help="loss (repeatable; default non_saturating, hinge)")
    parser.add_argument("--seed", action="append", dest="seeds", type=int, metavar="N", help="seed (repeatable; default 0)")
    parser.add_argument(
        "--seed-key",
        choices=SEED_KEYS,
        default="seed",
        help="what --seed sets: seed (each member its own data; the default) or train.seed (training alone, on one data set)",
    )
    add_params_arguments(parser)
    add_runner_arguments(parser)
    args = parser.parse_args(argv)
    if (code := check_params("gan-sweep", args.params, args.sets)) is not None:
        return code
    try:
        check_sets(args.sets, args.seed_key)
        # every member valid before Prefect starts: a bad --arch, --loss or --seed exits 2, not
        # with the flow's traceback
        seeds = args.seeds or DEFAULT_SEEDS
        sweep_members(args.archs or DEFAULT_ARCHS, args.losses or DEFAULT_LOSSES, seeds, args.params, args.sets, {}, args.seed_key)
    except ParamsError as exc:
        print(f"gan-sweep: {exc}", file=sys.stderr)
        return 2
    if (code := check_runner_arguments("gan-sweep", args)) is not None:
        return code
    kwargs: dict[str, Any] = {
        "params_file": args.params,
        "sets": args.sets,
        "runner": args.runner,
        "workers": args.workers,
        "address": args.address,
        "seed_key": args.seed_key,
    }
    for name in ("archs", "losses", "seeds"):
        if getattr(args, name):
            kwargs[name] = getattr(args, name)
    from gancore_flows.prefect_api import run_locally

    if run_locally("gan-sweep", gan_sweep, **kwargs) is None:
        return 1
    print("Open the MLflow UI with:  make ui")
    return 0


if __name__ == "__main__":
    sys.exit(main())
