"""The MLflow recorders :func:`gancore.stages.run_stage` reports to.

* :class:`OwnedRunRecorder` (Prefect): the flow opens the run itself (:func:`open_flow_run`) and
  hands its id to every task; each stage adds what it left on disk; the flow ends the run (retries
  of a task keep adding to the same run).
* :class:`FileHandedRecorder` (``gan <stage>`` and ``dvc repro``, one process per stage): the run id
  travels in ``<output root>/.mlflow_run.json``. A stage continues the run named there when that
  run is still RUNNING, was started by the same orchestrator on the same parameters, and every
  stage it has recorded comes *before* this one; otherwise it starts a new run (marking an abandoned
  RUNNING one KILLED). ``diagnose`` ends the run FINISHED; a failing stage ends it FAILED. DVC skips
  stages whose inputs did not change, so the first stage that does run opens the run and
  *backfills* what the skipped upstream stages left on disk (data hash, curves, model, pictures):
  every run is complete, and tags ``pipeline.stages_run`` / ``pipeline.stages_reused`` say which
  stages actually ran.

Both write the hand-over file, so a run whose process was killed (SIGKILL, power cut) does not stay
RUNNING forever: the next run in the same output root marks it KILLED.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gancore.io import read_json, write_json
from gancore.layout import Layout
from gancore.names import POST_STAGES, STAGE_ORDER
from gancore.recorder import NULL_RECORDER, Recorder
from gancore.tracking.run import PipelineRun, ended_status, open_run, start_pipeline_run
from gancore.tracking.store import TrackingError, client, project_root, tracking_uri, unreachable

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

    from gancore.config import Params


def detect_orchestrator() -> str:
    """``dvc`` inside a ``dvc repro`` / ``dvc exp run`` stage command (DVC sets DVC_STAGE), else ``cli``."""
    return "dvc" if os.environ.get("DVC_STAGE") else "cli"


def recorder_for(params: Params, root: str | Path | None = None, orchestrator: str | None = None) -> Recorder:
    """The recorder for ``gan <stage>``: file-handed MLflow runs, or nothing when tracking is off."""
    if not params.tracking.enabled:
        return NULL_RECORDER
    return FileHandedRecorder(str(project_root(root)), orchestrator or detect_orchestrator())


# -- the hand-over file ---------------------------------------------------------------------------
def read_state(layout: Layout) -> dict[str, Any] | None:
    try:
        return read_json(layout.run_file) if layout.run_file.is_file() else None
    except (OSError, ValueError):
        return None


def write_state(layout: Layout, state: dict[str, Any]) -> None:
    write_json(layout.run_file, state)


def current_run_id(layout: Layout) -> str | None:
    """The run id last handed on in ``layout.root`` (the run a pipeline there logs into)."""
    state = read_state(layout)
    return state.get("run_id") if state else None


def _status(c: MlflowClient, run_id: str) -> str | None:
    try:
        return c.get_run(run_id).info.status
    except Exception:  # deleted, or another store: nothing to continue
        return None


def kill_abandoned(layout: Layout, root: str | Path | None = None) -> str | None:
    """Mark the run named in ``layout``'s hand-over file KILLED if it is still RUNNING (its
    process died without ending it); return its id."""
    state = read_state(layout)
    if not state or state.get("tracking_uri") != tracking_uri(root):
        return None
    c = client(root)
    if _status(c, state["run_id"]) != "RUNNING":
        return None
    c.set_terminated(state["run_id"], "KILLED")
    return state["run_id"]


def open_flow_run(params: Params, layout: Layout, root: str | Path, tags: dict[str, Any]) -> PipelineRun:
    """A new run owned by a flow in ``layout``: a RUNNING one left there by a killed process is
    marked KILLED first, and the new run is named in the hand-over file."""
    kill_abandoned(layout, root)
    run = start_pipeline_run(params, layout, "prefect", root, tags=tags)
    write_state(
        layout,
        {
            "run_id": run.run_id,
            "experiment_id": run.experiment_id,
            "tracking_uri": tracking_uri(root),
            "params_digest": params.digest(),
            "orchestrator": "prefect",
            "owner": "flow",
        },
    )
    return run


def server_lost(uri: str, stage: str, rerun: str) -> TrackingError | None:
    """The tracking server a run was opened on, gone since (stopped, or its machine down), said
    with what to ``rerun``, or None. MLflow's client retried it for minutes, then a page of
    traceback, and the run stayed RUNNING. The stage's outputs are on disk."""
    if (problem := unreachable(uri)) is None:
        return None
    return TrackingError(
        f"the tracking server at {uri} stopped answering before {stage} was recorded ({problem}). "
        f"{stage.capitalize()}'s results are on disk: start the server again and {rerun}"
    )


# -- recorders ------------------------------------------------------------------------------------
class OwnedRunRecorder:
    """Adds each stage to a run the caller opened and will end (a flow's run)."""

    def __init__(self, run_id: str, root: str):
        self.run_id, self.root = run_id, root
        self._run: PipelineRun | None = None

    def __getstate__(self) -> dict[str, Any]:  # the client stays behind when pickled to a worker
        return {"run_id": self.run_id, "root": self.root, "_run": None}

    @property
    def run(self) -> PipelineRun:
        if self._run is None:
            self._run = open_run(self.run_id, self.root)
        return self._run

    def begin(self, stage: str, params: Params, layout: Layout) -> None:
        pass

    def finish(self, stage: str, params: Params, layout: Layout, summary: dict[str, Any]) -> None:
        run = self.run
        # A flow's process outlives a server stopped meanwhile: refused at once, and not retried.
        if (lost := server_lost(run.client.tracking_uri, stage, "run the flow again into the same --out (training resumes)")) is not None:
            raise lost
        run.log_stage(stage, params, layout, summary)

    def fail(self, stage: str, exc: BaseException) -> None:
        pass  # the owner ends the run (a retry may still succeed)

    def __repr__(self) -> str:
        return f"OwnedRunRecorder(run_id={self.run_id!r})"


class FileHandedRecorder:
    """Finds its run through the hand-over file of the output root (see the module doc)."""

    def __init__(self, root: str, orchestrator: str):
        self.root, self.orchestrator = root, orchestrator
        self._run: PipelineRun | None = None
        self._state: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"root": self.root, "orchestrator": self.orchestrator, "_run": None, "_state": {}}

    def _continuable(self, state: dict[str, Any] | None, c: MlflowClient, stage: str, params: Params) -> tuple[bool, str | None]:
        """(continue the run in ``state``?, its id if it is RUNNING and should be marked KILLED)."""
        if not state or state.get("tracking_uri") != tracking_uri(self.root):
            return False, None
        if _status(c, state["run_id"]) != "RUNNING":
            return False, None
        order = STAGE_ORDER.index(stage)
        same = (
            state.get("params_digest") == params.digest()
            and state.get("orchestrator") == self.orchestrator
            and all(STAGE_ORDER.index(s) < order for s in state.get("stages", []))
        )
        return same, None if same else state["run_id"]

    def begin(self, stage: str, params: Params, layout: Layout) -> None:
        c = client(self.root)
        state = read_state(layout)
        if stage in POST_STAGES:  # adds to the pipeline's run, finished or not
            if state and state.get("tracking_uri") == tracking_uri(self.root) and _status(c, state["run_id"]) is not None:
                self._run, self._state = open_run(state["run_id"], self.root), state
                return
            self._run = start_pipeline_run(params, layout, self.orchestrator, self.root)
            self._state = {"stages": [], "reused": [], "post": True}
            return
        keep, abandoned = self._continuable(state, c, stage, params)
        if keep:
            assert state is not None
            self._run, self._state = open_run(state["run_id"], self.root), state
            # Stages DVC skipped between the last one recorded and this one: what they left on disk.
            done = {*state.get("stages", []), *state.get("reused", [])}
            skipped = [s for s in STAGE_ORDER[: STAGE_ORDER.index(stage)] if s not in done]
            for earlier in skipped:
                self._run.log_stage(earlier, params, layout)
            if skipped:
                state["reused"] = [*state.get("reused", []), *skipped]
                write_state(layout, state)
            return
        if abandoned:
            c.set_terminated(abandoned, "KILLED")
        run = start_pipeline_run(params, layout, self.orchestrator, self.root)
        upstream = list(STAGE_ORDER[: STAGE_ORDER.index(stage)])
        for earlier in upstream:  # skipped by DVC (or run earlier): record what they left on disk
            run.log_stage(earlier, params, layout)
        self._run = run
        self._state = {
            "run_id": run.run_id,
            "experiment_id": run.experiment_id,
            "tracking_uri": tracking_uri(self.root),
            "params_digest": params.digest(),
            "orchestrator": self.orchestrator,
            "stages": [],
            "reused": upstream,
        }
        write_state(layout, self._state)

    def finish(self, stage: str, params: Params, layout: Layout, summary: dict[str, Any]) -> None:
        assert self._run is not None, "finish() without begin()"
        run, state = self._run, self._state
        if (lost := self._lost(stage)) is not None:
            raise lost
        try:
            run.log_stage(stage, params, layout, summary)
        except BaseException as exc:
            if not isinstance(exc, KeyboardInterrupt) and (lost := self._lost(stage)) is not None:
                raise lost from None
            self.fail(stage, exc)
            raise
        if stage in POST_STAGES:
            if state.get("post"):
                run.end("FINISHED")
            return
        state["stages"] = [*state["stages"], stage]
        write_state(layout, state)
        run.set_tags({"pipeline.stages_run": ",".join(state["stages"]), "pipeline.stages_reused": ",".join(state.get("reused", []))})
        if stage == STAGE_ORDER[-1]:
            run.end("FINISHED")

    def _lost(self, stage: str) -> TrackingError | None:
        resumes = " (train resumes from its last checkpoint)" if stage == "train" else ""
        return server_lost(
            self._state.get("tracking_uri") or tracking_uri(self.root), stage, f"rerun the stage{resumes} to record them in the same run"
        )

    def fail(self, stage: str, exc: BaseException) -> None:
        if self._run is None or unreachable(self._state.get("tracking_uri") or tracking_uri(self.root)) is not None:
            return  # nothing can end the run; the next run in this output root marks it KILLED
        if stage in POST_STAGES and not self._state.get("post"):  # the pipeline itself succeeded
            self._run.set_tags({f"{stage}.failed": str(exc)[:500]})
            return
        self._run.end(ended_status(exc))

    def __repr__(self) -> str:
        return f"FileHandedRecorder(root={self.root!r}, orchestrator={self.orchestrator!r})"
