"""gan-sweep: gan-pipeline over every combination of architectures, losses and seeds, in parallel.

Each combination is one gan-pipeline flow run (its own output directory and MLflow run), started
by a task, so the flow's task runner decides where the members run: locally a process pool, not
threads, because the stages are not thread-safe together (training seeds torch's global RNG when
it builds models, and matplotlib's text rendering fails when two diagnoses plot at once: seen
with a thread pool). Beyond one machine, swap the task runner
(``prefect-dask``'s ``DaskTaskRunner``, ``prefect-ray``'s ``RayTaskRunner``) or run the members as
deployment runs on a Kubernetes/Docker work pool; see the README. The sweep ends with a comparison
table (a Prefect markdown artifact, also printed).

``python -m flows.sweep --arch mlp --loss non_saturating --loss hinge --seed 0 --seed 1 [-S ...]``
"""

# No `from __future__ import annotations`: Prefect builds the parameter model from the real
# annotations, also in process-pool workers that receive the flow by value.

import argparse
import itertools
import os
import sys
from pathlib import Path
from typing import Any, Optional

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ProcessPoolTaskRunner

import gancore.tracking as gtracking
from flows.params import (
    DataOverrides,
    DiagnoseOverrides,
    EvaluateOverrides,
    LossOverrides,
    ModelOverrides,
    SampleOverrides,
    TrackingOverrides,
    TrainOverrides,
    member_overrides,
    resolve_params,
)
from flows.pipeline import fmt, gan_pipeline, markdown_table
from gancore.config import LossName, ParamsError

COLUMNS = (
    ("verdict", "diagnose", "verdict"),
    ("modes", "diagnose", "modes_covered"),
    ("high quality", "diagnose", "high_quality_fraction"),
    ("mode KL", "diagnose", "mode_kl"),
    ("KL", "evaluate", "kl_divergence"),
    ("JS", "evaluate", "js_divergence"),
    ("FID", "evaluate", "fid"),
    ("precision", "evaluate", "precision"),
    ("recall", "evaluate", "recall"),
)


def limit_threads(threads: int) -> None:
    """Process-pool initializer: members share the cores instead of each spinning up one
    intra-op thread per core (oversubscribed, torch slows down several-fold)."""
    import torch

    torch.set_num_threads(threads)


def process_pool(workers: int) -> ProcessPoolTaskRunner:
    threads = max(1, (os.cpu_count() or 1) // workers)
    return ProcessPoolTaskRunner(max_workers=workers, initializer=limit_threads, initargs=(threads,))


@task(name="pipeline-run", task_run_name="{label}")
def pipeline_member(label: str, overrides: dict[str, Any], params_file: str, sets: Optional[list[str]] = None) -> dict[str, Any]:
    """One member of the sweep: a gan-pipeline flow run (nested under the sweep)."""
    return gan_pipeline.with_options(flow_run_name=label)(params_file=params_file, sets=sets, **overrides)


def comparison_rows(members: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = ["arch", "loss", "seed", *(c[0] for c in COLUMNS), "MLflow run"]
    rows = []
    for m in members:
        r = m.get("result")
        if r is None:
            rows.append([m["arch"], m["loss"], str(m["seed"]), f"failed: {m['error']}", *[""] * (len(COLUMNS) - 1), ""])
            continue
        cells = []
        for _, source, key in COLUMNS:
            value = (r.get(source) or {}).get(key)
            if key == "modes_covered":
                cells.append(f"{fmt(value)}/{fmt(r['diagnose'].get('modes_total'))}")
            else:
                cells.append(fmt(value))
        link = f"[{r['mlflow_run_name']}]({r['mlflow_url']})" if r.get("mlflow_url") else ""
        rows.append([m["arch"], m["loss"], str(m["seed"]), *cells, link])
    return headers, rows


@flow(name="gan-sweep", log_prints=True, task_runner=process_pool(2),
      description="gan-pipeline over architectures x losses x seeds, in parallel; ends with a comparison table")
def gan_sweep(
    archs: list[str] = ["mlp"],  # noqa: B006 - Prefect copies parameter defaults
    losses: list[LossName] = ["non_saturating", "hinge"],  # noqa: B006
    seeds: list[int] = [0],  # noqa: B006
    data: DataOverrides = DataOverrides(),
    model: ModelOverrides = ModelOverrides(),
    loss: LossOverrides = LossOverrides(),
    train: TrainOverrides = TrainOverrides(),
    sample: SampleOverrides = SampleOverrides(),
    evaluate: EvaluateOverrides = EvaluateOverrides(),
    diagnose: DiagnoseOverrides = DiagnoseOverrides(),
    tracking: TrackingOverrides = TrackingOverrides(),
    device: Optional[str] = None,
    params_file: str = "params.yaml",
    sets: Optional[list[str]] = None,
) -> list[dict[str, Any]]:
    """Every (arch, loss, seed) on params.yaml plus the shared overrides; a table compares them."""
    base = {"data": data, "model": model, "loss": loss, "train": train, "sample": sample,
            "evaluate": evaluate, "diagnose": diagnose, "tracking": tracking, "device": device}
    members = []
    for arch, loss_name, seed in itertools.product(archs, losses, seeds):
        overrides = member_overrides(base, **{"model.arch": arch, "loss.name": loss_name, "seed": seed})
        params = resolve_params(params_file, overrides, sets)  # every member valid before any runs
        members.append({"arch": arch, "loss": loss_name, "seed": seed, "overrides": overrides, "params": params})
    if not members:
        raise ValueError("empty sweep: give at least one architecture, one loss and one seed")
    if members[0]["params"].tracking.enabled:
        # One store and experiment, created before members race to create them.
        gtracking.ensure_experiment(members[0]["params"].tracking.experiment, Path(params_file).resolve().parent)

    futures = [
        pipeline_member.submit(f"{m['arch']}-{m['loss']}-seed{m['seed']}", m["overrides"], params_file, sets)
        for m in members
    ]
    failures = 0
    for m, future in zip(members, futures):
        future.wait()
        if future.state.is_completed():
            m["result"] = future.result()
        else:
            failures += 1
            exc = future.state.result(raise_on_failure=False)
            m["result"], m["error"] = None, (str(exc).splitlines() or [future.state.name])[0][:200]
        del m["params"]
    headers, rows = comparison_rows(members)
    table = markdown_table(headers, rows)
    create_markdown_artifact(markdown=f"# gan-sweep\n\n{table}\n", key="gan-sweep-comparison",
                             description=f"gan-sweep over {len(members)} configurations")
    print(table)
    if failures:
        raise RuntimeError(f"{failures} of {len(members)} sweep members failed; see the table above")
    return [{k: v for k, v in m.items() if k != "overrides"} for m in members]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.sweep", description="Run the gan-sweep flow in this process.")
    parser.add_argument("--arch", action="append", dest="archs", metavar="NAME", help="architecture (repeatable; default mlp)")
    parser.add_argument("--loss", action="append", dest="losses", metavar="NAME", help="loss (repeatable; default non_saturating, hinge)")
    parser.add_argument("--seed", action="append", dest="seeds", type=int, metavar="N", help="seed (repeatable; default 0)")
    parser.add_argument("--params", default="params.yaml", metavar="FILE")
    parser.add_argument("-S", "--set", dest="sets", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument("--workers", type=int, default=2, help="members run at once (default 2)")
    args = parser.parse_args(argv)
    try:
        resolve_params(args.params, sets=args.sets)
    except ParamsError as exc:
        print(f"gan-sweep: {exc}", file=sys.stderr)
        return 2
    runner = process_pool(args.workers)
    kwargs: dict[str, Any] = {"params_file": args.params, "sets": args.sets}
    for name in ("archs", "losses", "seeds"):
        if getattr(args, name):
            kwargs[name] = getattr(args, name)
    from flows.server import offline_if_unreachable

    with offline_if_unreachable():
        gan_sweep.with_options(task_runner=runner)(**kwargs)
    print("Open the MLflow UI with:  make ui")
    return 0


if __name__ == "__main__":
    sys.exit(main())
