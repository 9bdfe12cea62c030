"""One MLflow run of one pipeline execution: what each stage leaves in it.

What a run holds: every parameter flattened (``data.name``, ``train.steps``, ...); tags for the git
commit, the DVC hash of the prepared data (``dvc.prepared_md5``), the orchestrator and the
architecture plugin with its version; and what each stage leaves (:mod:`gancore.tracking.content`:
curves, headline metrics, the description, pictures, the registered generator).
"""

from __future__ import annotations

import json
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
from gancore.layout import MIXTURE_FILE, SELECTION_PICTURE, Layout
from gancore.names import ORCHESTRATORS
from gancore.tracking.store import client, experiment_id, project_root, run_url, unreachable

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

    from gancore.config import Params

# MLflow's per-request limits for log_batch.
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100


def ended_status(exc: BaseException) -> str:
    """The MLflow status of a run that ``exc`` ended: KILLED where it was stopped from outside
    (Ctrl-C, a termination signal such as a process pool's or Prefect's cancellation), FAILED
    where it failed. Members stopped by a Ctrl-C were recorded FAILED, beside real failures. By
    the classes' names, so that the core imports no orchestrator."""
    stopped = {"KeyboardInterrupt", "CancelledError", "ExternalSignal", "TerminationSignal"}
    return "KILLED" if any(c.__name__ in stopped for c in type(exc).__mro__) else "FAILED"


def run_name(params: Params) -> str:
    """Says what ran: ``<arch>-<data>[-<loss>]-<4 hex>``; the loss only when not the default."""
    parts = [params.model.arch, params.data.name]
    if params.loss.name != type(params.loss).model_fields["name"].default:
        parts.append(params.loss.name)
    return "-".join(parts + [secrets.token_hex(2)])


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

    def log_metric_batch(self, metrics: list[Any]) -> None:
        for chunk in _chunks(metrics, _MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=chunk, synchronous=True)

    def child(self, name: str, tags: dict[str, Any] | None = None) -> PipelineRun:
        """A run nested under this one (the UI shows it under its parent)."""
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{self.name}-{name}",
            tags={"mlflow.parentRunId": self.run_id, **{k: str(v) for k, v in (tags or {}).items() if v is not None}},
        )
        return PipelineRun(self.client, run.info.run_id, self.experiment_id, self.root)

    def children(self) -> list[Any]:
        return self.client.search_runs([self.experiment_id], f"tags.`mlflow.parentRunId` = '{self.run_id}'")

    # -- what each stage leaves behind --
    def log_stage(self, stage: str, params: Params, layout: Layout, summary: dict[str, Any] | None = None) -> None:
        """Record ``stage``'s outputs under ``layout`` (and its summary, when it just ran): see
        :mod:`gancore.tracking.content`."""
        from gancore.tracking import content

        if stage == "prepare":
            self._log_prepare(params, layout)
        else:
            content.LOGGERS[stage](self, params, layout)
        if summary and stage in ("prepare", "train", "sample"):
            # What the files do not say (timings, the resume point) as tags: single values that
            # would otherwise crowd the metrics tab; evaluate/diagnose summaries repeat their JSON.
            self.set_tags({f"{stage}.{k}": v for k, v in summary.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)})

    def _log_prepare(self, params: Params, layout: Layout) -> None:
        from gancore.dvcstore import data_version

        tags: dict[str, Any] = {"dvc.prepared_md5": data_version(layout.prepared)}
        if layout.prepared_meta.is_file():
            meta = read_json(layout.prepared_meta)
            tags["data.count"] = meta.get("count")
            tags["data.modes"] = (meta.get("modes") or {}).get("count")
            # the bytes of a points file or image folder: edited in place, its settings stay
            tags["data.source_sha256"] = (meta.get("source") or {}).get("sha256")
            classifier = meta.get("classifier") or {}
            if classifier.get("test_accuracy") is not None:
                self.log_metrics({"classifier_test_accuracy": float(classifier["test_accuracy"])})
            mixture = meta.get("mixture") or {}
            if mixture:
                # The part count and, for mixture.parts=auto, the BIC curve it was chosen from
                # (a metric over k: the UI plots it against "step").
                tags.update({"mixture.parts_chosen": mixture.get("parts"), "mixture.partition": mixture.get("method")})
                selection = mixture.get("selection") or (meta.get("modes") or {}).get("selection")
                if selection:
                    from mlflow.entities import Metric

                    now = int(time.time() * 1000)
                    self.log_metric_batch(
                        [Metric("partition/bic", float(b), now, int(k)) for k, b in zip(selection["k"], selection["bic"]) if b is not None]
                    )
        self.set_tags(tags)
        for name in (SELECTION_PICTURE, MIXTURE_FILE):
            if (layout.prepared / name).is_file():
                self.log_artifact(layout.prepared / name, "partition")

    def end(self, status: str = "FINISHED") -> None:
        # A server gone: nothing can end the run (MLflow retried for minutes); the next run in its
        # output root marks it KILLED, as for a killed process.
        if unreachable(self.client.tracking_uri) is None:
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
