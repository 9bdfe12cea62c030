"""MLflow tracking: one MLflow run per pipeline execution, whichever orchestrator ran it.

This is the only module that imports mlflow (and dvc), always inside functions, so that the core
runs on a machine without them when ``tracking.enabled`` is false.

What a run holds: every parameter flattened (``data.name``, ``train.steps``, ...); tags for the git
commit, the DVC hash of the prepared data (``dvc.prepared_md5``), the orchestrator and the
architecture plugin with its version; the training curves (``train/<column>`` by step, logged in
batches); every number of ``evaluate.json`` / ``diagnose.json`` (``evaluate/<key>``,
``diagnose/<key>``); the sample picture, the diagnostic plots and ``diagnosis.md`` as artifacts; and
the generator (``mlflow.pytorch.log_model``, signature latent vector -> sample), registered as
``gancore-<data>-<arch>``.

How stages find their run
-------------------------
:func:`run_stage` runs one stage and records it. Two modes:

* **owned run** (Prefect): the flow calls :func:`start_pipeline_run` and passes ``run_id`` to every
  stage; the flow ends the run itself (retries of a task keep adding to the same run).
* **file-handed run** (``gan <stage>`` and ``dvc repro``, where every stage is its own process):
  the run id travels in ``<output root>/.mlflow_run.json``. A stage continues the run named there
  when that run is still RUNNING, was started by the same orchestrator on the same parameters, and
  every stage it has recorded comes *before* this one; otherwise it starts a new run (marking an
  abandoned RUNNING one KILLED). ``diagnose`` ends the run FINISHED; a failing stage ends it FAILED.
  DVC skips stages whose inputs did not change, so the first stage that does run opens the run and
  *backfills* what the skipped upstream stages left on disk (data hash, curves, model, pictures):
  every run is complete, and tags ``pipeline.stages_run`` / ``pipeline.stages_reused`` say which
  stages actually ran.

Tracking URI: ``$MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<project root>/mlflow.db``, with
artifacts in ``<project root>/mlartifacts``. The project root is ``$DVC_ROOT`` under DVC, else the
directory holding the parameter file (the caller passes it), else the current directory.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from gancore.errors import GanCoreError
from gancore.io import read_json, write_json
from gancore.layout import Layout
from gancore.stages import STAGE_ORDER, STAGES

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

    from gancore.config import Params

RUN_FILE = ".mlflow_run.json"
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
UI_URL_ENV = "GANCORE_MLFLOW_UI"
DEFAULT_UI_URL = "http://127.0.0.1:5000"
ORCHESTRATORS = ("cli", "dvc", "prefect")

# MLflow's per-request limits for log_batch.
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100


class TrackingError(GanCoreError):
    """Tracking was asked for but cannot work (mlflow missing, store unreachable)."""


# -- where ----------------------------------------------------------------------------------------
def project_root(hint: str | Path | None = None) -> Path:
    """The directory whose ``mlflow.db`` records runs (see the module doc)."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    return Path(hint).resolve() if hint is not None else Path.cwd().resolve()


def tracking_uri(root: str | Path | None = None) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root(root) / DB_FILE}"


def detect_orchestrator() -> str:
    """``dvc`` inside a ``dvc repro`` / ``dvc exp run`` stage command (DVC sets DVC_STAGE), else ``cli``."""
    return "dvc" if os.environ.get("DVC_STAGE") else "cli"


def run_name(params: Params) -> str:
    """Says what ran: ``<arch>-<data>[-<loss>]-<4 hex>``; the loss only when not the default."""
    parts = [params.model.arch, params.data.name]
    if params.loss.name != "non_saturating":
        parts.append(params.loss.name)
    return "-".join(parts + [secrets.token_hex(2)])


def registered_model_name(params: Params) -> str:
    return f"gancore-{params.data.name}-{params.model.arch}"


def run_url(experiment_id: str, run_id: str) -> str:
    base = os.environ.get(UI_URL_ENV, DEFAULT_UI_URL).rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


# -- values ---------------------------------------------------------------------------------------
def param_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def numeric_items(tree: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, float]]:
    """Numeric leaves of a JSON tree as ``(dotted key, float)``; booleans as 0/1; lists skipped
    (they are per-mode tables, kept whole in the JSON artifact)."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from numeric_items(value, path + ".")
        elif isinstance(value, bool):
            yield path, float(value)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            yield path, float(value)


def text_items(tree: dict[str, Any], prefix: str = "") -> Iterable[tuple[str, str]]:
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from text_items(value, path + ".")
        elif isinstance(value, str):
            yield path, value[:5000]


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def git_commit(root: Path) -> tuple[str | None, bool | None]:
    """(HEAD commit, working tree dirty) of the git repository at ``root``; (None, None) if none."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30)
        return commit.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


def data_version(path: str | Path) -> str | None:
    """The DVC hash (``<md5>.dir``) of a prepared-data directory, computed as ``dvc`` computes an
    output's hash, so it equals the one ``dvc.lock`` records for ``data/prepared``."""
    path = Path(path)
    if not path.is_dir():
        return None
    try:
        from dvc_data.hashfile.build import build
        from dvc_data.hashfile.db import HashFileDB
        from dvc_objects.fs.local import LocalFileSystem
        from dvc_objects.fs.memory import MemoryFileSystem
    except ImportError:  # a machine with the core only: no DVC, no version tag
        return None

    _, _, obj = build(HashFileDB(MemoryFileSystem(), "/staging"), str(path.resolve()), LocalFileSystem(), "md5", dry_run=True)
    return obj.hash_info.value


# -- the store ------------------------------------------------------------------------------------
def client(root: str | Path | None = None) -> MlflowClient:
    try:
        import mlflow
    except ImportError as exc:
        raise TrackingError(
            f"tracking.enabled is true but mlflow cannot be imported ({exc}); install mlflow or set tracking.enabled=false"
        ) from None
    uri = tracking_uri(root)
    # log_model goes through mlflow's fluent layer, which reads the process-wide URIs.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store go beside its database file (``mlartifacts/``), wherever the
    process runs; MLflow's own default (``./mlruns`` under the current directory) would scatter
    them. A tracking server decides for itself (None)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return (Path(uri[len(prefix):]).resolve().parent / ARTIFACTS_DIR).as_uri()


def experiment_id(c: MlflowClient, name: str) -> str:
    from mlflow.exceptions import MlflowException

    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_location(c.tracking_uri))
    except MlflowException:  # created meanwhile by a concurrent run
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def ensure_experiment(name: str, root: str | Path | None = None) -> str:
    """Create the store and the experiment once, before concurrent runs race to do it."""
    return experiment_id(client(root), name)


# -- one pipeline run -----------------------------------------------------------------------------
@dataclass
class PipelineRun:
    """An MLflow run of one pipeline execution, and the stages recorded in it."""

    client: MlflowClient
    run_id: str
    experiment_id: str
    root: Path

    @property
    def url(self) -> str:
        return run_url(self.experiment_id, self.run_id)

    @property
    def name(self) -> str:
        return self.client.get_run(self.run_id).info.run_name

    # -- logging helpers --
    def log_metrics(self, values: dict[str, float], step: int = 0, timestamp_ms: int | None = None) -> None:
        from mlflow.entities import Metric

        ts = timestamp_ms or int(time.time() * 1000)
        metrics = [Metric(k, v, ts, step) for k, v in values.items()]
        for chunk in _chunks(metrics, _MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=chunk, synchronous=True)

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)[:5000]) for k, v in tags.items() if v is not None]
        for chunk in _chunks(items, _MAX_TAGS):
            self.client.log_batch(self.run_id, tags=chunk, synchronous=True)

    def log_artifact(self, path: Path, directory: str | None = None) -> None:
        if path.is_file():
            self.client.log_artifact(self.run_id, str(path), directory)

    # -- what each stage leaves behind --
    def log_stage(self, stage: str, params: Params, layout: Layout, summary: dict[str, Any] | None = None) -> None:
        """Record ``stage``'s outputs under ``layout`` (and its summary, when it just ran)."""
        getattr(self, f"_log_{stage}")(params, layout)
        if summary:
            # Summaries of prepare/train/sample add what the files do not say (timings, resume
            # point); evaluate/diagnose summaries repeat their JSON files, already logged.
            if stage in ("prepare", "train", "sample"):
                self.log_metrics({f"{stage}.{k}": v for k, v in numeric_items(summary)})
            if stage == "train":
                self.set_tags({"train.device": summary.get("device")})

    def _log_prepare(self, params: Params, layout: Layout) -> None:
        meta_path = layout.prepared / "meta.json"
        tags: dict[str, Any] = {"dvc.prepared_md5": data_version(layout.prepared)}
        if meta_path.is_file():
            meta = read_json(meta_path)
            tags["data.count"] = meta.get("count")
            tags["data.modes"] = (meta.get("modes") or {}).get("count")
            classifier = meta.get("classifier") or {}
            if "test_accuracy" in classifier:
                self.log_metrics({"prepare.classifier_test_accuracy": float(classifier["test_accuracy"])})
        self.set_tags(tags)

    def _log_train(self, params: Params, layout: Layout) -> None:
        from mlflow.entities import Metric

        if layout.train_log.is_file():
            from gancore.training import read_train_log

            start_ms = self.client.get_run(self.run_id).info.start_time or int(time.time() * 1000)
            metrics = []
            for row in read_train_log(layout.train_log):
                # Wall-clock offsets from the log, so MLflow's "relative time" axis is training time.
                ts = start_ms + int(1000 * (row.get("seconds") or 0.0))
                for key, value in row.items():
                    if key not in ("step", "seconds") and value is not None and math.isfinite(value):
                        metrics.append(Metric(f"train/{key}", value, ts, int(row["step"])))
            for chunk in _chunks(metrics, _MAX_METRICS):
                self.client.log_batch(self.run_id, metrics=chunk, synchronous=True)
            self.log_artifact(layout.train_log, "metrics")
        generator = layout.models / "generator.pt"
        if generator.is_file():
            self._log_generator(params, generator)

    def _log_generator(self, params: Params, path: Path) -> None:
        import mlflow
        import numpy as np
        import torch
        from mlflow.models import ModelSignature
        from mlflow.types import Schema, TensorSpec

        from gancore.modelio import load_generator, read_model_file

        record = read_model_file(path)
        latent_dim, shape = int(record["latent_dim"]), tuple(int(s) for s in record["shape"])
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, latent_dim), "z")]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *shape), "x")]),
        )
        reg = _plugin(params.model.arch)
        requirements = [f"torch=={torch.__version__.split('+')[0]}"]
        if reg is not None and reg.distribution and reg.version:
            requirements.append(f"{reg.distribution}=={reg.version}")
        # Pickle, not pt2: any plugin's generator logs without tracing; loading it needs the
        # plugin installed, which the requirements name. (mlflow warns about pickle each time.)
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        # The logged model belongs to the active experiment, not to run_id's: without this it
        # lands in "Default" (artifacts under ./mlruns of whatever directory created the store).
        mlflow.set_experiment(experiment_id=self.experiment_id)
        mlflow.pytorch.log_model(
            load_generator(path, "cpu"),
            name="generator",
            signature=signature,
            registered_model_name=registered_model_name(params),
            run_id=self.run_id,
            serialization_format="pickle",
            pip_requirements=requirements,  # also skips mlflow's slow import-sniffing subprocess
            await_registration_for=0,
        )
        self.set_tags({"model.step": record.get("step"), "model.ema": record.get("ema")})

    def _log_sample(self, params: Params, layout: Layout) -> None:
        self.log_artifact(layout.samples / "samples.png", "samples")

    def _log_evaluate(self, params: Params, layout: Layout) -> None:
        path = layout.metrics / "evaluate.json"
        if path.is_file():
            result = read_json(path)
            self.log_metrics({f"evaluate/{k}": v for k, v in numeric_items(result)})
            self.set_tags({f"evaluate.{k}": v for k, v in text_items(result)})
            self.log_artifact(path, "metrics")

    def _log_diagnose(self, params: Params, layout: Layout) -> None:
        path = layout.metrics / "diagnose.json"
        if path.is_file():
            result = read_json(path)
            self.log_metrics({f"diagnose/{k}": v for k, v in numeric_items(result)})
            texts = dict(text_items(result))
            self.set_tags({"verdict": texts.pop("verdict", None), **{f"diagnose.{k}": v for k, v in texts.items()}})
            self.log_artifact(path, "metrics")
        for name in ("diagnosis.md", "mode_histogram.csv"):
            self.log_artifact(layout.metrics / name, "diagnosis")
        if layout.plots.is_dir():
            for picture in sorted(layout.plots.glob("*.png")):
                self.log_artifact(picture, "plots")

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def _plugin(arch: str) -> Any:
    from gancore.registry import architectures

    return architectures().get(arch)


def start_pipeline_run(
    params: Params,
    layout: Layout,
    orchestrator: str,
    root: str | Path | None = None,
    tags: dict[str, Any] | None = None,
) -> PipelineRun:
    """Open a new MLflow run for one pipeline execution: name, parameters and identity tags."""
    if orchestrator not in ORCHESTRATORS:
        raise ValueError(f"orchestrator must be one of {ORCHESTRATORS}, got {orchestrator!r}")
    root = project_root(root)
    c = client(root)
    exp = experiment_id(c, params.tracking.experiment)
    commit, dirty = git_commit(root)
    reg = _plugin(params.model.arch)
    run_tags = {
        "orchestrator": orchestrator,
        "mlflow.source.git.commit": commit,
        "git.dirty": None if dirty is None else str(dirty).lower(),
        "params.digest": params.digest()[:12],
        "output_root": str(layout.root.resolve()),
        "plugin.arch": params.model.arch,
        "plugin.entry_point": reg.plugin if reg else None,
        "plugin.distribution": reg.distribution if reg else None,
        "plugin.version": reg.version if reg else None,
        "dvc.experiment": os.environ.get("DVC_EXP_NAME"),
        **(tags or {}),
    }
    run = c.create_run(exp, run_name=run_name(params), tags={k: str(v) for k, v in run_tags.items() if v is not None})
    pipeline = PipelineRun(c, run.info.run_id, exp, root)
    from mlflow.entities import Param

    flat = [Param(k, param_value(v)[:6000]) for k, v in sorted(params.flat().items())]
    for chunk in _chunks(flat, _MAX_PARAMS):
        c.log_batch(pipeline.run_id, params=chunk, synchronous=True)
    return pipeline


def open_run(run_id: str, root: str | Path | None = None) -> PipelineRun:
    root = project_root(root)
    c = client(root)
    return PipelineRun(c, run_id, c.get_run(run_id).info.experiment_id, root)


# -- file-handed runs (one process per stage) -----------------------------------------------------
def _read_state(layout: Layout) -> dict[str, Any] | None:
    path = layout.root / RUN_FILE
    try:
        return read_json(path) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _write_state(layout: Layout, state: dict[str, Any]) -> None:
    write_json(layout.root / RUN_FILE, state)


def current_run_id(layout: Layout) -> str | None:
    """The run id last handed on in ``layout.root`` (the run a file-handed pipeline logs into)."""
    state = _read_state(layout)
    return state.get("run_id") if state else None


def _continuable(state: dict[str, Any] | None, c: MlflowClient, stage: str, params: Params,
                 orchestrator: str, uri: str) -> tuple[bool, str | None]:
    """(continue the run in ``state``?, its id if it is RUNNING and should be marked KILLED)."""
    if not state or state.get("tracking_uri") != uri:
        return False, None
    try:
        status = c.get_run(state["run_id"]).info.status
    except Exception:  # deleted, or another store: nothing to continue
        return False, None
    if status != "RUNNING":
        return False, None
    order = STAGE_ORDER.index(stage)
    same = (state.get("params_digest") == params.digest() and state.get("orchestrator") == orchestrator
            and all(STAGE_ORDER.index(s) < order for s in state.get("stages", [])))
    return same, None if same else state["run_id"]


def begin_stage(stage: str, params: Params, layout: Layout, orchestrator: str,
                root: str | Path | None = None) -> tuple[PipelineRun, dict[str, Any]]:
    """The run ``stage`` logs into in file-handed mode, and the state to write once it succeeds."""
    root = project_root(root)
    c = client(root)
    uri = tracking_uri(root)
    state = _read_state(layout)
    keep, abandoned = _continuable(state, c, stage, params, orchestrator, uri)
    if keep:
        assert state is not None
        return open_run(state["run_id"], root), state
    if abandoned:
        c.set_terminated(abandoned, "KILLED")
    run = start_pipeline_run(params, layout, orchestrator, root)
    upstream = list(STAGE_ORDER[: STAGE_ORDER.index(stage)])
    for earlier in upstream:  # skipped by DVC (or run earlier): record what they left on disk
        run.log_stage(earlier, params, layout)
    state = {"run_id": run.run_id, "experiment_id": run.experiment_id, "tracking_uri": uri,
             "params_digest": params.digest(), "orchestrator": orchestrator, "stages": [], "reused": upstream}
    _write_state(layout, state)
    return run, state


def run_stage(
    stage: str,
    params: Params,
    layout: Layout,
    *,
    orchestrator: str | None = None,
    run_id: str | None = None,
    root: str | Path | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run one stage (``gancore.stages.STAGES[stage]``) and record it in the pipeline's MLflow run.

    With ``run_id`` the stage logs into that run and leaves ending it to its owner (a flow).
    Without, the run is found through ``<layout.root>/.mlflow_run.json`` (see the module doc).
    With ``params.tracking.enabled`` false this is exactly the stage function.
    """
    stage_fn = STAGES[stage]
    if not params.tracking.enabled:
        return stage_fn(params, layout, **kwargs)
    orchestrator = orchestrator or detect_orchestrator()
    if run_id is not None:
        run = open_run(run_id, root)
        summary = stage_fn(params, layout, **kwargs)
        run.log_stage(stage, params, layout, summary)
        return summary

    run, state = begin_stage(stage, params, layout, orchestrator, root)
    try:
        summary = stage_fn(params, layout, **kwargs)
        run.log_stage(stage, params, layout, summary)
    except BaseException as exc:
        run.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    state["stages"] = [*state["stages"], stage]
    _write_state(layout, state)
    run.set_tags({"pipeline.stages_run": ",".join(state["stages"]),
                  "pipeline.stages_reused": ",".join(state.get("reused", []))})
    if stage == STAGE_ORDER[-1]:
        run.end("FINISHED")
    return summary

