"""The five pipeline stages and the one way to run them: :func:`run_stage`.

Each stage reads files and parameters under a :class:`Layout`, writes files, and returns a small
JSON-able summary. The CLI (and so ``dvc repro``), and every Prefect task call :func:`run_stage`;
what is recorded about a stage (an MLflow run, or nothing) is a :class:`Recorder` beside it, so
the stages know nothing of trackers and trackers nothing of stages. Heavy modules are imported
inside the functions so that importing this package (and ``gan --help``) stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gancore.config import Params
from gancore.layout import Layout
from gancore.names import STAGE_ORDER
from gancore.recorder import NULL_RECORDER, NullRecorder, Recorder

__all__ = ["NULL_RECORDER", "STAGES", "STAGE_ORDER", "NullRecorder", "Recorder", "run_stage"]


def prepare(params: Params, layout: Layout, inputs_read: Callable[[], None] | None = None) -> dict[str, Any]:
    from gancore.data.prepare import prepare_data

    return prepare_data(params, layout, inputs_read)


def train(params: Params, layout: Layout, restart: bool = False, inputs_read: Callable[[], None] | None = None) -> dict[str, Any]:
    import os

    from gancore import progress
    from gancore.mixture import plan_text

    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        progress.say(plan_text(params, layout))
    if params.mixture.enabled:
        from gancore.mixture import train_mixture

        return train_mixture(params, layout, restart=restart, inputs_read=inputs_read)
    from gancore.training import train as run_training

    return run_training(params, layout, restart=restart, inputs_read=inputs_read)


def sample(params: Params, layout: Layout) -> dict[str, Any]:
    from gancore.sampling import sample as run_sampling

    return run_sampling(params, layout)


def evaluate(params: Params, layout: Layout) -> dict[str, Any]:
    from gancore.evaluation import evaluate as run_evaluation

    return run_evaluation(params, layout)


def diagnose(params: Params, layout: Layout) -> dict[str, Any]:
    from gancore.diagnostics import diagnose as run_diagnosis

    return run_diagnosis(params, layout)


def probe(params: Params, layout: Layout) -> dict[str, Any]:
    from gancore.probe import probe as run_probe

    return run_probe(params, layout)


STAGES: dict[str, Callable[..., dict[str, Any]]] = {
    "prepare": prepare,
    "train": train,
    "sample": sample,
    "evaluate": evaluate,
    "diagnose": diagnose,
    "probe": probe,  # after the pipeline: adds to its run (probe.enabled)
}
assert tuple(STAGES)[: len(STAGE_ORDER)] == STAGE_ORDER


def run_stage(stage: str, params: Params, layout: Layout, recorder: Recorder = NULL_RECORDER, **kwargs: Any) -> dict[str, Any]:
    """Run ``stage`` on ``params`` under ``layout`` and tell ``recorder`` how it went.

    ``recorder.begin`` runs first (a tracker opens or joins its run there), then the stage, then
    ``recorder.finish`` with the stage's summary, or ``recorder.fail`` with the exception, which
    is re-raised. ``kwargs`` go to the stage (``restart`` for train). Before all that, a stage after
    prepare is refused where ``params`` ask for other data than were prepared
    (:mod:`gancore.data.settings`), sample, evaluate and diagnose where they ask for another kind
    of model than was trained (:func:`gancore.sampling.check_trained`), and evaluate and diagnose
    where they ask for other samples than were drawn (:func:`gancore.sampling.check_samples`), or
    find no model (sample) or no samples (evaluate, diagnose). Prepare and train open their record
    once they have read and checked their inputs (the data files; the checkpoint to resume), so
    that those are refused before a run opens too.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; the stages are {', '.join(STAGES)}")
    # Inputs an earlier stage made under other settings are refused before the recorder opens a
    # run: a refused stage leaves the run and its parameters as they were.
    if stage != "prepare":
        from gancore.data.settings import check, check_bins

        meta = check(params, layout.prepared_meta)
        if stage in STAGE_ORDER:  # the pipeline, which ends in diagnose (not the probe after it)
            check_bins(params, meta, layout.prepared_meta)
    if stage in ("sample", "evaluate", "diagnose"):
        from gancore.sampling import check_sampleable, check_samples, check_trained

        check_trained(params, layout)
        if stage == "sample":
            check_sampleable(params, layout)
        else:
            check_samples(params, layout)
    opened = False

    def open_record() -> None:
        nonlocal opened
        recorder.begin(stage, params, layout)
        opened = True

    if stage in ("prepare", "train"):
        # Their inputs (a points file, an image folder; a checkpoint to resume) are read and
        # refused inside the stage: the record opens once they have been read, so a refused file
        # leaves no failed run behind (nor a killed pipeline run it would have replaced).
        kwargs = {**kwargs, "inputs_read": open_record}
    else:
        open_record()
    try:
        summary = STAGES[stage](params, layout, **kwargs)
        if not opened:  # a stage that never read inputs still gets its record
            open_record()
    except BaseException as exc:
        if opened:
            recorder.fail(stage, exc)
        raise
    recorder.finish(stage, params, layout, summary)
    return summary
