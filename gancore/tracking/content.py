"""What each stage leaves in a pipeline's MLflow run, laid out so that the run page tells the story.

* **Curves first.** The training log goes in as ``train/<column>`` and the collapse monitor's
  figures as ``monitor/<figure>``, each at its step; MLflow's metrics tab shows one section per
  prefix, in that order, then the single-valued metrics.
* **The figures a paper prints**, as metrics without a prefix: ``is_mean``, ``fid``,
  ``js_divergence``, ``modes_covered``, ``high_quality_fraction``, ``mode_kl``, ...
  (:data:`gancore.figures.FIGURES`). Every other number stays in ``metrics/evaluate.json`` and
  ``metrics/diagnose.json``, logged whole as artifacts.
* **The diagnosis as the run's description** (the UI's "Description" box: the verdict, the
  figures and the remedies, in markdown) and the verdict as a tag.
* **Pictures as images**: the sample picture as the image ``samples``; the monitor's fixed-z
  pictures as the image series ``progress`` (a step slider in the UI); the diagnostic plots as
  artifacts.
* **The generator** registered (:mod:`gancore.tracking.models`), ``@best`` moved to it when it is
  the best healthy version. A mixture of GANs also gets one child run per part, nested under it.
"""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gancore import trainlog
from gancore.io import read_json
from gancore.layout import Layout
from gancore.ranking import headline

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from gancore.config import Params
    from gancore.tracking.run import PipelineRun

PROGRESS_KEY = "progress"
SAMPLES_KEY = "samples"
PART_TAG = "mixture.part"


def metric_name(column: str) -> str:
    """A training-log column as an MLflow metric: the monitor's keep their ``monitor/`` prefix."""
    return column if "/" in column else f"train/{column}"


def log_curves(run: PipelineRun, log_path: Path) -> None:
    from mlflow.entities import Metric

    start_ms = run.client.get_run(run.run_id).info.start_time or int(time.time() * 1000)
    metrics = []
    for row in trainlog.read(log_path):
        # Wall-clock offsets from the log, so MLflow's "relative time" axis is training time.
        ts = start_ms + int(1000 * (row.get("seconds") or 0.0))
        for key, value in row.items():
            if key not in ("step", "seconds") and value is not None and math.isfinite(value):
                metrics.append(Metric(metric_name(key), value, ts, int(row["step"])))
    run.log_metric_batch(metrics)
    run.log_artifact(log_path, "metrics")


def log_progress(run: PipelineRun, progress_dir: Path, key: str = PROGRESS_KEY) -> None:
    """The monitor's pictures ``step_NNNNNN.png`` as one image series."""
    from PIL import Image

    for path in sorted(progress_dir.glob("step_*.png")):
        match = re.fullmatch(r"step_(\d+)\.png", path.name)
        if match:
            with Image.open(path) as image:
                run.client.log_image(run.run_id, image.convert("RGB"), key=key, step=int(match.group(1)), synchronous=True)


def _requirements(params: Params) -> list[str]:
    import torch

    from gancore.registry import architectures

    requirements = [f"torch=={torch.__version__.split('+')[0]}"]
    reg = architectures().get(params.model.arch)
    if reg is not None and reg.distribution and reg.version:
        requirements.append(f"{reg.distribution}=={reg.version}")
    return requirements


def log_model(run: PipelineRun, params: Params, layout: Layout) -> None:
    """The generator ``gan sample`` draws from (the last or, with ``sample.generator=best``, the
    best one; a mixture as one module), registered: the model whose samples were scored."""
    from gancore.modelio import load_generator, read_model_file
    from gancore.sampling import generator_path, sampled_generators
    from gancore.tracking import models
    from gancore.tracking.models import registered_model_name

    module: nn.Module
    if layout.mixture.is_file():
        from gancore.mixture import load_mixture_generator

        module, record = load_mixture_generator(layout, files=sampled_generators(params, layout))
    elif layout.generator.is_file():
        path = generator_path(params, layout)
        record = read_model_file(path)
        module = load_generator(path, "cpu")
    else:
        return
    version = models.log_generator(
        run.run_id,
        run.experiment_id,
        module,
        int(record["latent_dim"]),
        tuple(record["shape"]),
        _requirements(params),
        registered_model_name(params),
    )
    run.set_tags(
        {
            "model.step": record.get("step"),
            "model.ema": record.get("ema"),
            "model.version": version,
            "model.mixture_parts": record.get("parts"),
        }
    )


def log_parts(run: PipelineRun, params: Params, layout: Layout) -> None:
    """One child run per part of a mixture (curves, progress, the part's share), unless the
    ``gan-mixture`` flow already opened them as the parts finished."""
    if not layout.mixture.is_file():
        return
    existing = {r.data.tags.get(PART_TAG) for r in run.children()}
    for part in read_json(layout.mixture)["parts"]:
        if str(part["index"]) not in existing:
            log_part(run, params, layout, int(part["index"]), part)


def log_part(
    run: PipelineRun, params: Params, layout: Layout, index: int, part: dict[str, Any] | None = None, summary: dict[str, Any] | None = None
) -> PipelineRun:
    """A child run of ``run`` for part ``index`` of the mixture in ``layout``."""
    part_layout = layout.part(index)
    child = run.child(f"part{index:02d}", {PART_TAG: str(index), "mixture.part.description": (part or {}).get("description")})
    if part_layout.train_log.is_file():
        log_curves(child, part_layout.train_log)
    log_progress(child, part_layout.progress)
    figures = {k: float(v) for k, v in (summary or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if part:
        figures.update(weight=float(part.get("weight", 0.0)), count=float(part.get("count", 0)))
    child.log_metrics(figures)
    child.end("FINISHED")
    return child


def log_train(run: PipelineRun, params: Params, layout: Layout) -> None:
    if layout.train_log.is_file():
        log_curves(run, layout.train_log)
    log_progress(run, layout.progress)
    log_model(run, params, layout)
    log_parts(run, params, layout)


def log_sample(run: PipelineRun, params: Params, layout: Layout) -> None:
    picture = layout.samples_picture
    if picture.is_file():
        from PIL import Image

        from gancore.sampling import sampled_step

        run.log_artifact(picture, "samples")
        with Image.open(picture) as image:
            # at the step of the generator sampled, where its curves end (not train.steps: a
            # mixture trains mixture.steps, and the best generator an earlier step)
            step = sampled_step(params, layout)
            run.client.log_image(run.run_id, image.convert("RGB"), key=SAMPLES_KEY, step=step or 0, synchronous=True)


def _results(layout: Layout) -> tuple[dict[str, Any], dict[str, Any]]:
    evaluate = read_json(layout.evaluate_json) if layout.evaluate_json.is_file() else {}
    diagnose = read_json(layout.diagnose_json) if layout.diagnose_json.is_file() else {}
    return evaluate, diagnose


def log_evaluate(run: PipelineRun, params: Params, layout: Layout) -> None:
    if layout.evaluate_json.is_file():
        evaluate, _ = _results(layout)
        run.log_metrics(headline(evaluate, None))
        tags = {"evaluate.classifier": evaluate.get("classifier"), "evaluate.feature_space": evaluate.get("feature_space")}
        tags.update({f"provenance.{k}": v for k, v in (evaluate.get("provenance") or {}).items()})
        run.set_tags(tags)
        run.log_artifact(layout.evaluate_json, "metrics")


def log_diagnose(run: PipelineRun, params: Params, layout: Layout) -> None:
    from gancore.report import run_description

    evaluate, diagnose = _results(layout)
    if diagnose:
        run.log_metrics(headline(None, diagnose))
        # The UI serves a run's artifacts at get-artifact (relative to its own address).
        picture = (
            f"get-artifact?path=samples/{layout.samples_picture.name}&run_uuid={run.run_id}" if layout.samples_picture.is_file() else None
        )
        run.set_tags({"verdict": diagnose.get("verdict"), "mlflow.note.content": run_description(evaluate, diagnose, params, picture)})
        run.log_artifact(layout.diagnose_json, "metrics")
    for path in (layout.diagnosis_md, layout.mode_histogram_csv):
        run.log_artifact(path, "diagnosis")
    if layout.plots.is_dir():
        for plot in sorted(layout.plots.glob("*.png")):
            run.log_artifact(plot, "plots")
    if diagnose.get("verdict") == "healthy":
        from gancore.tracking.models import promote_if_best, registered_model_name

        if promote_if_best(run.client, registered_model_name(params), run.run_id):
            run.set_tags({"model.alias": "best"})


def log_probe(run: PipelineRun, params: Params, layout: Layout) -> None:
    path = layout.probe_json
    if not params.probe.enabled or not path.is_file():  # a probe kept from an earlier run is not this run's
        return
    result = read_json(path)
    if result.get("enabled"):
        run.log_metrics(
            {
                f"probe_{space}_{budget}": float(acc)
                for budget, accs in result["labels_per_class"].items()
                for space, acc in accs.items()
                if space != "labelled_examples"
            }
        )
        run.log_artifact(path, "metrics")


LOGGERS = {"train": log_train, "sample": log_sample, "evaluate": log_evaluate, "diagnose": log_diagnose, "probe": log_probe}
