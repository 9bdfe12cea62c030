"""MLflow tracking: one MLflow run per pipeline execution, whichever orchestrator ran it.

The only package that imports mlflow, always inside functions, so that the core runs on a machine
without it when ``tracking.enabled`` is false. It records; it never runs a stage:
:func:`gancore.stages.run_stage` runs them and reports to a recorder from here.

* :mod:`~gancore.tracking.store`: the tracking URI, the client and the experiment;
* :mod:`~gancore.tracking.run`: one run and what each stage leaves in it;
* :mod:`~gancore.tracking.mlflow_recorders`: how stages find their run (owned by a flow, or handed from
  process to process through ``<output root>/.mlflow_run.json``).
"""

from gancore.tracking.mlflow_recorders import (
    FileHandedRecorder,
    OwnedRunRecorder,
    current_run_id,
    detect_orchestrator,
    kill_abandoned,
    open_flow_run,
    read_state,
    recorder_for,
)
from gancore.tracking.models import registered_model_name
from gancore.tracking.run import (
    PipelineRun,
    ended_status,
    numeric_items,
    open_run,
    param_value,
    run_name,
    start_pipeline_run,
    text_items,
)
from gancore.tracking.store import (
    TrackingError,
    client,
    ensure_experiment,
    experiment_id,
    project_root,
    run_url,
    tracking_uri,
)

__all__ = [
    "FileHandedRecorder",
    "OwnedRunRecorder",
    "PipelineRun",
    "TrackingError",
    "client",
    "current_run_id",
    "detect_orchestrator",
    "ensure_experiment",
    "experiment_id",
    "kill_abandoned",
    "numeric_items",
    "ended_status",
    "open_flow_run",
    "open_run",
    "param_value",
    "project_root",
    "read_state",
    "recorder_for",
    "registered_model_name",
    "run_name",
    "run_url",
    "start_pipeline_run",
    "text_items",
    "tracking_uri",
]
