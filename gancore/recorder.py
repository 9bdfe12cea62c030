"""What :func:`gancore.stages.run_stage` tells about a stage: the recorder interface (kept apart
from the stages, so that trackers depend on this small module and never on the stages).

A recorder only records. It is told when a stage begins, what it returned, or how it failed; it
never runs a stage itself. :class:`NullRecorder` records nothing (``tracking.enabled: false``, or a
caller that records on its own); :mod:`gancore.tracking` provides the MLflow recorders.
Recorders are small picklable objects, so that Prefect can hand them to tasks in other processes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from gancore.config import Params
    from gancore.layout import Layout


class Recorder(Protocol):
    def begin(self, stage: str, params: Params, layout: Layout) -> None:
        """Before ``stage`` runs (a tracker opens or joins its run here)."""

    def finish(self, stage: str, params: Params, layout: Layout, summary: dict[str, Any]) -> None:
        """After ``stage`` succeeded: record its outputs under ``layout`` and its ``summary``."""

    def fail(self, stage: str, exc: BaseException) -> None:
        """After ``stage`` raised ``exc`` (re-raised by the caller)."""


class NullRecorder:
    """Records nothing."""

    def begin(self, stage: str, params: Params, layout: Layout) -> None:
        pass

    def finish(self, stage: str, params: Params, layout: Layout, summary: dict[str, Any]) -> None:
        pass

    def fail(self, stage: str, exc: BaseException) -> None:
        pass

    def __repr__(self) -> str:
        return "NullRecorder()"


NULL_RECORDER = NullRecorder()
