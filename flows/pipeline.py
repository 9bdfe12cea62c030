"""gan-pipeline: prepare -> train -> sample -> evaluate -> diagnose, as Prefect tasks.

Each task is :func:`gancore.stages.run_stage`, the call ``gan <stage>`` makes; nothing here computes
anything of its own. What Prefect adds:

* **one output directory per flow run** (``runs/<arch>-<data>-<flow run id>``, or ``out_dir``), so
  concurrent runs never share a file;
* **cached data preparation**: keyed on the parameters prepare reads (seed, device, ``data.*``,
  ``mixture.*``) and the code it runs (the task's source plus every source file prepare imports,
  :func:`gancore.codedeps.code_digest`, the files dvc.yaml lists for it). Its output is committed to the project's DVC cache and the task returns
  its DVC version; a cached run checks that version out into the new run directory
  (:mod:`gancore.dvcstore`);
* **training retries** that resume from the run directory's last checkpoint (a transient failure
  costs the steps since the last checkpoint, and the result is the same as an uninterrupted run);
* **one MLflow run per flow run**, opened here and handed to every task (a run left RUNNING in the
  same directory by a killed process is marked KILLED first);
* **artifacts**: a markdown summary (metrics table and verdict) and a link to the MLflow run.

``python -m gancore_flows.pipeline [--params FILE] [-S key.path=value ...] [--out DIR]`` runs the
flow in this process (``make run``): no server needed.
"""

# No `from __future__ import annotations`: Prefect builds the parameter model from the real
# annotations, also in process-pool workers that receive the flow by value.

import argparse
import hashlib
import json
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import INPUTS, NO_CACHE, TASK_SOURCE
from prefect.runtime import deployment, flow_run
from prefect.transactions import CommitMode, transaction

import gancore
from gancore import dvcstore, progress, tracking
from gancore.config import Params, ParamsError
from gancore.errors import GanCoreError
from gancore.layout import Layout, find_project_root
from gancore.recorder import NULL_RECORDER, Recorder
from gancore.report import fmt, headline_rows, markdown_table
from gancore.stages import run_stage
from gancore_flows.params import resolve_params, section_parameters

CACHE_DIR = Path("runs") / ".prefect-cache"
PREPARE_CACHE = (INPUTS - "params" - "run_dir" - "root" - "recorder") + TASK_SOURCE


def code_version() -> str:
    """A digest of the code the prepare stage runs (part of its cache key): the same files
    dvc.yaml lists for prepare, both derived from its imports (:mod:`gancore.codedeps`)."""
    from gancore.codedeps import code_digest

    return hashlib.sha256(f"{gancore.__version__}:{code_digest('prepare')}".encode()).hexdigest()[:16]


def source_fingerprint(path: str | None) -> str | None:
    """What ``data.path`` holds, for the cache key: a file's sha256; for a folder, a digest of
    every file's relative path, size and modification time (reading every image would cost what
    the cache saves). An edited points file or image folder is then prepared again."""
    if not path:
        return None
    root = Path(path).expanduser()
    if root.is_file():
        from gancore.io import file_digest

        return file_digest(root)
    if not root.is_dir():
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(root).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def prepare_key(params: Params) -> dict[str, Any]:
    """Everything prepare's output depends on: the parameters it reads, the contents of
    ``data.path`` and its code."""
    return {
        "seed": params.seed,
        "device": params.device,
        "data": params.data.model_dump(mode="json"),
        "source": source_fingerprint(params.data.path),
        "mixture": params.mixture.model_dump(mode="json"),
        # clusters too small for a batch of two packed examples are folded into their nearest part
        "pack": params.model.pack,
        "code": code_version(),
    }


def transient_failure(task: Any, task_run: Any, state: Any) -> bool:
    """Retry unless the failure is one a retry would repeat (bad parameters or data, a diverged
    run: training is deterministic, so it would diverge again at the same step)."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, (GanCoreError, ParamsError))


# -- tasks: each a call of run_stage ----------------------------------------------------------------
@task(name="prepare", persist_result=True, cache_policy=PREPARE_CACHE)
def prepare_task(params: Params, run_dir: str, root: str, key: dict[str, Any], recorder: Recorder) -> dict[str, Any]:
    """Run prepare into ``run_dir``; commit its output to the DVC cache; return summary + version."""
    layout = Layout(Path(run_dir))
    summary = run_stage("prepare", params, layout, recorder)
    version = dvcstore.store(layout.prepared, root) if dvcstore.is_dvc_repo(root) else dvcstore.data_version(layout.prepared)
    # Where the data lie, for hits in a project without DVC, where there is no cache to restore from.
    return {"summary": summary, "version": version, "prepared": str(layout.prepared.resolve())}


@task(name="stage", task_run_name="{stage}", cache_policy=NO_CACHE)
def stage_task(stage: str, params: Params, run_dir: str, recorder: Recorder) -> dict[str, Any]:
    # train: restart=False, so a retry resumes from this run directory's last checkpoint.
    return run_stage(stage, params, Layout(Path(run_dir)), recorder)


train_task = stage_task.with_options(name="train", retries=2, retry_delay_seconds=2, retry_condition_fn=transient_failure)
sample_task = stage_task.with_options(name="sample")
evaluate_task = stage_task.with_options(name="evaluate")
diagnose_task = stage_task.with_options(name="diagnose")
probe_task = stage_task.with_options(name="probe")


def prepared_data(params: Params, layout: Layout, root: Path, recorder: Recorder) -> dict[str, Any]:
    """Prepare (or take from the cache) and make sure ``layout.prepared`` holds the data."""
    store = root / CACHE_DIR
    # Cache records and their (small) results live in the project, beside the DVC cache they
    # point into, so every orchestrator process working on this project shares them.
    policy = PREPARE_CACHE.configure(key_storage=store / "keys")
    cached = prepare_task.with_options(cache_policy=policy, result_storage=store / "results")
    key = prepare_key(params)
    args = (params, str(layout.root), str(root), key, recorder)
    # Committed as the task ends (EAGER): inside a sweep's member, a task the process pool runs, the
    # record waited for the member's own end, so that concurrent members never found it.
    with one_preparation(store, key), transaction(commit_mode=CommitMode.EAGER):
        result = cached(*args)
    # A cache hit (the task did not run here) leaves the folder as it was: empty, or, rerun into
    # an existing --out, holding other data than the version the cache entry names.
    if not layout.prepared_meta.is_file() or dvcstore.data_version(layout.prepared) != result["version"]:
        if layout.prepared.is_dir():
            shutil.rmtree(layout.prepared)
        restored = dvcstore.restore(result["version"], layout.prepared, root) if dvcstore.is_dvc_repo(root) else False
        if not restored and not _copy_prepared(result.get("prepared"), result["version"], layout.prepared):
            # The version left the DVC cache (dvc gc, another clone) and the folder that held it
            # changed: prepare again.
            return cached.with_options(refresh_cache=True)(*args)
        recorder.finish("prepare", params, layout, result["summary"])
        result = {**result, "cached": True}
    return result


def _copy_prepared(source: str | None, version: str, target: Path) -> bool:
    """Copy the prepared data a cache hit names from the run folder that prepared them, where that
    folder still holds ``version``. In a project without DVC every hit prepared again: a sweep's
    members waited for the first one's preparation, then each made their own."""
    if not source or version is None or not Path(source).is_dir() or dvcstore.data_version(Path(source)) != version:
        return False
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(source, partial)
    partial.rename(target)  # whole or not at all
    return True


@contextmanager
def one_preparation(store: Path, key: dict[str, Any]) -> Iterator[None]:
    """Hold the lock of ``key``'s preparation: a sweep's or a remedy's members that need the same
    data prepare it once, the others wait and take it from the cache (each prepared it, all at
    once: an MNIST classifier's minutes of CPU, per member). An OS lock on a file, released when
    its holder ends, however it ends; Prefect's SERIALIZABLE isolation would hold the key until
    the enclosing sweep member ends, and forever if its process is killed. Where the file system
    has no such locks, concurrent runs may prepare the same data twice, as before: the result is
    the same (a function of the key), and its records and DVC objects are written atomically."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        yield
        return
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]
    path = store / "locks" / f"{digest}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        locked = True
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.say("prepare: another run is preparing the same data; waiting to take it from the cache")
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some network mounts)
            locked = False
        try:
            yield
        finally:
            if locked:
                fcntl.flock(handle, fcntl.LOCK_UN)


def run_layout(params: Params, root: Path, out_dir: Optional[str]) -> Layout:
    label = f"{params.model.arch}-{params.data.name}-{(flow_run.get_id() or 'local')[:8]}"
    return Layout(Path(out_dir).resolve() if out_dir else root / "runs" / label)


def open_mlflow_run(params: Params, layout: Layout, root: Path, **tags: Any) -> Optional[tracking.PipelineRun]:
    if not params.tracking.enabled:
        return None
    return tracking.open_flow_run(
        params,
        layout,
        root,
        tags={
            "prefect.flow_run_id": flow_run.get_id(),
            "prefect.flow_run_name": flow_run.get_name(),
            "prefect.deployment_id": deployment.get_id() or flow_run.get_parent_deployment_id(),
            **tags,
        },
    )


# -- the flow --------------------------------------------------------------------------------------
@flow(
    name="gan-pipeline",
    log_prints=True,
    description="prepare -> train -> sample -> evaluate -> diagnose; params.yaml overridden by the section fields",
)
@section_parameters
def gan_pipeline(
    params_file: str = "params.yaml", out_dir: Optional[str] = None, sets: Optional[list[str]] = None, **overrides: Any
) -> dict[str, Any]:
    """Run the pipeline on params.yaml with the given overrides (empty fields keep params.yaml's value).

    ``sets`` are ``key.path=value`` strings applied last, as ``gan -S`` applies them (also the way
    to set a nullable key to null).

    The project root (where ``mlflow.db``, ``runs/`` and the DVC cache live) is the directory of
    ``params_file``; outputs go to ``out_dir`` or ``runs/<arch>-<data>-<flow run id>``.
    """
    params_path = Path(params_file).resolve()
    root = find_project_root(params_path)
    params = resolve_params(params_path, overrides, sets)
    layout = run_layout(params, root, out_dir)
    run_dir = str(layout.root)

    mlrun = open_mlflow_run(params, layout, root)
    recorder: Recorder = tracking.OwnedRunRecorder(mlrun.run_id, str(root)) if mlrun else NULL_RECORDER
    try:
        prepared = prepared_data(params, layout, root, recorder)
        if mlrun:
            mlrun.set_tags({"prepare.cached": str(bool(prepared.get("cached"))).lower()})
        summaries = {"prepare": prepared["summary"]}
        summaries["train"] = train_task("train", params, run_dir, recorder)
        summaries["sample"] = sample_task("sample", params, run_dir, recorder)
        summaries["evaluate"] = evaluate_task("evaluate", params, run_dir, recorder)
        summaries["diagnose"] = diagnose_task("diagnose", params, run_dir, recorder)
        if params.probe.enabled:
            summaries["probe"] = probe_task("probe", params, run_dir, recorder)
    except BaseException as exc:
        if mlrun:
            mlrun.end(tracking.ended_status(exc))
        raise
    if mlrun:
        reused = ["prepare"] if prepared.get("cached") else []
        mlrun.set_tags(
            {"pipeline.stages_run": ",".join(s for s in summaries if s not in reused), "pipeline.stages_reused": ",".join(reused)}
        )
        mlrun.end("FINISHED")

    result = {
        "run_dir": run_dir,
        "data_version": prepared["version"],
        "prepare_cached": bool(prepared.get("cached")),
        "mlflow_run_id": mlrun.run_id if mlrun else None,
        "mlflow_run_name": mlrun.name if mlrun else None,
        "mlflow_url": mlrun.url if mlrun else None,
        "params": {k: params.flat()[k] for k in ("data.name", "model.arch", "loss.name", "seed", "train.steps")},
        "evaluate": read_result(layout.evaluate_json),
        "diagnose": read_result(layout.diagnose_json),
        "probe": read_result(layout.probe_json) if params.probe.enabled else None,
        "summaries": summaries,
    }
    create_markdown_artifact(
        markdown=summary_markdown(result),
        key="gan-pipeline-summary",
        description=f"gan-pipeline {result['mlflow_run_name'] or layout.root.name}: metrics and verdict",
    )
    if mlrun:
        create_link_artifact(
            link=mlrun.url,
            link_text=f"MLflow run {mlrun.name}",
            key="mlflow-run",
            description="this pipeline run in the MLflow UI (make ui)",
        )
    return result


def read_result(path: Path) -> dict[str, Any]:
    from gancore.io import read_json

    return read_json(path) if path.is_file() else {}


# -- reporting -------------------------------------------------------------------------------------
def headline(result: dict[str, Any]) -> list[tuple[str, str]]:
    return headline_rows(result.get("evaluate") or {}, result.get("diagnose") or {})


def summary_markdown(result: dict[str, Any]) -> str:
    diagnosis = result.get("diagnose") or {}
    name = result.get("mlflow_run_name") or Path(result["run_dir"]).name
    parts = [
        f"# gan-pipeline {name}",
        f"**Verdict: {diagnosis.get('verdict', 'n/a')}**" + (f" — {diagnosis['explanation']}" if diagnosis.get("explanation") else ""),
        markdown_table(["metric", "value"], [list(r) for r in headline(result)]),
        markdown_table(["parameter", "value"], [[k, fmt(v)] for k, v in result["params"].items()]),
        "**Provenance of the metrics**\n\n"
        + markdown_table(["field", "value"], [[k, fmt(v)] for k, v in ((result.get("evaluate") or {}).get("provenance") or {}).items()]),
        f"Data version (DVC): `{result['data_version']}`{' (cached)' if result['prepare_cached'] else ''}  \n"
        f"Outputs: `{result['run_dir']}`",
    ]
    if result.get("mlflow_url"):
        parts.append(f"MLflow run: [{name}]({result['mlflow_url']})")
    return "\n\n".join(parts) + "\n"


def print_summary(result: dict[str, Any]) -> None:
    rows = headline(result)
    diagnosis = result.get("diagnose") or {}
    width = max((len(label) for label, _ in rows), default=10)
    print(f"\ngan-pipeline {result.get('mlflow_run_name') or Path(result['run_dir']).name}: verdict {diagnosis.get('verdict', 'n/a')}")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    print(f"outputs:     {result['run_dir']}")
    if result.get("mlflow_url"):
        print(f"MLflow run:  {result['mlflow_url']}")
        print("Open the MLflow UI with:  make ui   (mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000)")


# -- command line ----------------------------------------------------------------------------------
def add_params_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", metavar="FILE", help="parameter file (default: params.yaml)")
    parser.add_argument(
        "-S",
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help="override one parameter, e.g. -S train.steps=500 (repeatable)",
    )


def check_params(prog: str, params_file: str, sets: list[str]) -> Optional[int]:
    """Exit code 2 with the message when the parameters are invalid (before Prefect starts). A
    plugin skipped as they are checked is said in one line, as `gan` says it."""
    from gancore.cli import plain_warnings

    plain_warnings(prog)
    try:
        resolve_params(params_file, sets=sets)
    except ParamsError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    return None


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gancore_flows.pipeline", description="Run the gan-pipeline flow in this process (no server needed)."
    )
    add_params_arguments(parser)
    parser.add_argument("--out", default=None, metavar="DIR", help="output directory (default: runs/<arch>-<data>-<flow run id>)")
    args = parser.parse_args(argv)
    if (code := check_params("gan-pipeline", args.params, args.sets)) is not None:
        return code
    from gancore_flows.prefect_api import run_locally

    result = run_locally("gan-pipeline", gan_pipeline, params_file=args.params, out_dir=args.out, sets=args.sets)
    if result is None:
        return 1
    print_summary(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
