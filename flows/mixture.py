"""gan-mixture: a mixture of GANs, one per part of the data, with the parts trained in parallel.

The design notes' first remedy for mode collapse: "train separate GANs for different modes".
Prepare partitions the training data (class labels where the data set has them, else the data's
own clusters, as many as BIC finds; see :mod:`gancore.partition`); every part trains as its own task on the
sweep's task runner (a local process pool, Dask or Ray); the mixture is then sampled in proportion
to the part sizes into one ``samples/samples.pt``, and evaluated and diagnosed as one model. One
MLflow run holds the mixture, with a nested child run per part.

The same mixture runs without Prefect: ``gan <stage> -S mixture.enabled=true`` or ``dvc repro``
with ``mixture.enabled: true`` in params.yaml (the train stage then trains the parts one after
another).

``python -m gancore_flows.mixture -S data.name=grid25 [--runner dask] [--workers 4]``
"""

# No `from __future__ import annotations`: Prefect builds the parameter model from the real
# annotations, also in process-pool workers that receive the flow by value.

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

from prefect import flow, task

from gancore import progress, tracking
from gancore.config import Params
from gancore.layout import Layout, find_project_root
from gancore.mixture import check_parts, finish_mixture, partition_info, plan_text, train_part
from gancore.recorder import NULL_RECORDER, Recorder
from gancore_flows.params import Workers, resolve_params, section_parameters
from gancore_flows.pipeline import (
    add_params_arguments,
    check_params,
    diagnose_task,
    evaluate_task,
    open_mlflow_run,
    prepared_data,
    print_summary,
    read_result,
    run_layout,
    sample_task,
    transient_failure,
)
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

MIXTURE_ON = "mixture.enabled=true"


@task(name="train-part", task_run_name="part{index}", retries=2, retry_delay_seconds=2, retry_condition_fn=transient_failure)
def part_task(
    params: Params,
    run_dir: str,
    index: int,
    parent_run_id: Optional[str],
    root: str,
    threads: int = 1,
    context: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """Train part ``index`` (resuming from its checkpoint on a retry); open its child run."""
    import torch

    if context:
        check_member_host(context)
    torch.set_num_threads(threads)
    layout = Layout(Path(run_dir))
    summary = train_part(params, layout, index)
    if parent_run_id:
        from gancore.tracking.content import log_part

        parts = partition_info(layout)["parts"]
        part = {**parts[index], "weight": parts[index]["count"] / sum(p["count"] for p in parts)}
        log_part(tracking.open_run(parent_run_id, root), params, layout, index, part, summary)
    return summary


@flow(
    name="gan-mixture",
    log_prints=True,
    description="one GAN per part of the data (labels or k-means), trained in parallel, sampled and scored as one mixture",
)
@section_parameters
def gan_mixture(
    runner: Runner = "process",
    workers: Workers = 2,
    address: Optional[str] = None,
    params_file: str = "params.yaml",
    out_dir: Optional[str] = None,
    sets: Optional[list[str]] = None,
    **overrides: Any,
) -> dict[str, Any]:
    """The mixture on params.yaml (``mixture.enabled`` forced on) with the given overrides.

    ``runner``/``workers``/``address``: where the parts train, as for gan-sweep.
    """
    check_cluster(runner, address)
    params_path = Path(params_file).resolve()
    root = find_project_root(params_path)
    params = resolve_params(params_path, overrides, [*(sets or []), MIXTURE_ON])
    layout = run_layout(params, root, out_dir)
    run_dir = str(layout.root)
    mlrun = open_mlflow_run(params, layout, root, **{"mixture": "parent"})
    recorder: Recorder = tracking.OwnedRunRecorder(mlrun.run_id, str(root)) if mlrun else NULL_RECORDER
    try:
        prepared = prepared_data(params, layout, root, recorder)
        parts = partition_info(layout, params)["parts"]
        check_parts(params, layout)  # every part, before any trains: a refusal does not wait for the others
        progress.say(plan_text(params, layout) + f", parts in parallel on {runner} ({min(workers, len(parts))} at once)")
        context = member_context(str(params_path))
        threads = threads_per_member(min(workers, len(parts)))
        with members_pool(runner, workers, address) as pool:
            futures = [
                pool.submit(
                    part_task,
                    parameters={
                        "params": params,
                        "run_dir": run_dir,
                        "index": p["index"],
                        "parent_run_id": mlrun.run_id if mlrun else None,
                        "root": str(root),
                        "threads": threads,
                        "context": context,
                    },
                )
                for p in parts
            ]
            part_summaries = []
            with progress.bar(len(futures), "mixture parts", "part") as bar:
                for future in futures:
                    part_summaries.append(future.result())
                    bar.update()
        summary = finish_mixture(params, layout, part_summaries)
        recorder.finish("train", params, layout, summary)
        summaries = {"prepare": prepared["summary"], "train": summary}
        summaries["sample"] = sample_task("sample", params, run_dir, recorder)
        summaries["evaluate"] = evaluate_task("evaluate", params, run_dir, recorder)
        summaries["diagnose"] = diagnose_task("diagnose", params, run_dir, recorder)
    except BaseException as exc:
        if mlrun:
            mlrun.end(tracking.ended_status(exc))
        raise
    if mlrun:
        mlrun.set_tags({"pipeline.stages_run": ",".join(summaries), "mixture.parts": len(parts)})
        mlrun.end("FINISHED")
    return {
        "run_dir": run_dir,
        "data_version": prepared["version"],
        "prepare_cached": bool(prepared.get("cached")),
        "mlflow_run_id": mlrun.run_id if mlrun else None,
        "mlflow_run_name": mlrun.name if mlrun else None,
        "mlflow_url": mlrun.url if mlrun else None,
        "params": {k: params.flat()[k] for k in ("data.name", "model.arch", "loss.name", "seed", "train.steps", "mixture.parts")},
        "evaluate": read_result(layout.evaluate_json),
        "diagnose": read_result(layout.diagnose_json),
        "summaries": summaries,
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gancore_flows.mixture", description="Run the gan-mixture flow in this process.")
    add_params_arguments(parser)
    parser.add_argument("--out", default=None, metavar="DIR", help="output directory (default: runs/<arch>-<data>-<flow run id>)")
    add_runner_arguments(parser, "parts")
    args = parser.parse_args(argv)
    if (code := check_params("gan-mixture", args.params, [*args.sets, MIXTURE_ON])) is not None:
        return code
    if (code := check_runner_arguments("gan-mixture", args)) is not None:
        return code
    from gancore_flows.prefect_api import run_locally

    result = run_locally(
        "gan-mixture",
        gan_mixture,
        runner=args.runner,
        workers=args.workers,
        address=args.address,
        params_file=args.params,
        out_dir=args.out,
        sets=args.sets,
    )
    if result is None:
        return 1
    print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
