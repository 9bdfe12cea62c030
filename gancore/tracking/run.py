"""One MLflow run of one pipeline execution: what each stage leaves in it.

What a run holds: every parameter flattened (``data.name``, ``train.steps``, ...); tags for the git
commit, the DVC hash of the prepared data (``dvc.prepared_md5``), the orchestrator and the
architecture plugin with its version; the training curves (``train/<column>`` by step, logged in
batches); every number of ``evaluate.json`` / ``diagnose.json`` (``evaluate/<key>``,
``diagnose/<key>``); the sample picture, the diagnostic plots and ``diagnosis.md`` as artifacts; and
the generator (``mlflow.pytorch.log_model``, signature latent vector -> sample), registered as
``gancore-<data>-<arch>``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gancore.io import read_json
from gancore.layout import Layout
from gancore.names import ORCHESTRATORS
from gancore.tracking.store import client, experiment_id, project_root, run_url

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

    from gancore.config import Params

# MLflow's per-request limits for log_batch.
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100


def run_name(params: Params) -> str:
    """Says what ran: ``<arch>-<data>[-<loss>]-<4 hex>``; the loss only when not the default."""
    parts = [params.model.arch, params.data.name]
    if params.loss.name != "non_saturating":
        parts.append(params.loss.name)
    return "-".join(parts + [secrets.token_hex(2)])


def registered_model_name(params: Params) -> str:
    return f"gancore-{params.data.name}-{params.model.arch}"


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
        elif isinstance(value, bool) or isinstance(value, (int, float)) and math.isfinite(value):
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
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=30
        )
        return commit.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


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
        from gancore.dvcstore import data_version

        meta_path = layout.prepared_meta
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
            from gancore import trainlog

            start_ms = self.client.get_run(self.run_id).info.start_time or int(time.time() * 1000)
            metrics = []
            for row in trainlog.read(layout.train_log):
                # Wall-clock offsets from the log, so MLflow's "relative time" axis is training time.
                ts = start_ms + int(1000 * (row.get("seconds") or 0.0))
                for key, value in row.items():
                    if key not in ("step", "seconds") and value is not None and math.isfinite(value):
                        metrics.append(Metric(f"train/{key}", value, ts, int(row["step"])))
            for chunk in _chunks(metrics, _MAX_METRICS):
                self.client.log_batch(self.run_id, metrics=chunk, synchronous=True)
            self.log_artifact(layout.train_log, "metrics")
        generator = layout.generator
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
        self.log_artifact(layout.samples_picture, "samples")

    def _log_evaluate(self, params: Params, layout: Layout) -> None:
        path = layout.evaluate_json
        if path.is_file():
            result = read_json(path)
            self.log_metrics({f"evaluate/{k}": v for k, v in numeric_items(result)})
            self.set_tags({f"evaluate.{k}": v for k, v in text_items(result)})
            self.log_artifact(path, "metrics")

    def _log_diagnose(self, params: Params, layout: Layout) -> None:
        path = layout.diagnose_json
        if path.is_file():
            result = read_json(path)
            self.log_metrics({f"diagnose/{k}": v for k, v in numeric_items(result)})
            texts = dict(text_items(result))
            self.set_tags({"verdict": texts.pop("verdict", None), **{f"diagnose.{k}": v for k, v in texts.items()}})
            self.log_artifact(path, "metrics")
        for path in (layout.diagnosis_md, layout.mode_histogram_csv):
            self.log_artifact(path, "diagnosis")
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
