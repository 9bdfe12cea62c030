"""The generator in MLflow's model registry: logged with a signature that every MLflow interface
understands, registered as ``gancore-<data>-<arch>``, and marked ``@best`` when it is the best
healthy version so far.

The signature is one *unnamed* float32 tensor of latent vectors ``[-1, latent_dim]`` in and one
tensor of samples ``[-1, *shape]`` out. A named input (``z``) made MLflow's pyfunc layer hand the
model a dict, which the PyTorch flavour refuses, so ``mlflow.pyfunc.load_model(...).predict``,
``mlflow models serve`` and batch inference failed; unnamed, an ndarray (or the JSON
``{"inputs": [[...], ...]}`` of a served model) goes straight to the generator.
``mlflow.pytorch.load_model`` returns the generator module as before. A mixture of GANs is logged
as one module (:class:`gancore.mixture.MixtureGenerator`), so it serves the same way.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from gancore.ranking import rank_key

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient
    from torch import nn

    from gancore.config import Params

BEST_ALIAS = "best"
log = logging.getLogger(__name__)


def registered_model_name(params: Params) -> str:
    return f"gancore-{params.data.name}-{params.model.arch}"


def signature(latent_dim: int, shape: tuple[int, ...]) -> Any:
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, int(latent_dim)))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *(int(s) for s in shape)))]),
    )


def log_generator(
    run_id: str,
    experiment_id: str,
    module: nn.Module,
    latent_dim: int,
    shape: tuple[int, ...],
    requirements: list[str],
    registered_name: str | None,
) -> str | None:
    """Log ``module`` under the run's ``generator`` (registered as ``registered_name`` when given);
    return the new model version, if registered."""
    import mlflow

    # Pickle, not pt2: any plugin's generator logs without tracing; loading it needs the plugin
    # installed, which the requirements name. (mlflow warns about pickle each time.)
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    # The logged model belongs to the active experiment, not to run_id's: without this it lands
    # in "Default" (artifacts under ./mlruns of whatever directory created the store).
    mlflow.set_experiment(experiment_id=experiment_id)
    info = mlflow.pytorch.log_model(
        module.cpu().eval(),
        name="generator",
        signature=signature(latent_dim, shape),
        registered_model_name=registered_name,
        run_id=run_id,
        serialization_format="pickle",
        pip_requirements=requirements,  # also skips mlflow's slow import-sniffing subprocess
        await_registration_for=0,
    )
    version = getattr(info, "registered_model_version", None)
    return None if version is None else str(version)


def version_of_run(c: MlflowClient, name: str, run_id: str) -> str | None:
    found = [v for v in c.search_model_versions(f"name='{name}'") if v.run_id == run_id]
    return max(found, key=lambda v: int(v.version)).version if found else None


def _figures_and_verdict(c: MlflowClient, run_id: str) -> tuple[dict[str, float], str | None]:
    run = c.get_run(run_id)
    return dict(run.data.metrics), run.data.tags.get("verdict")


def _measured_otherwise(c: MlflowClient, best_run: str, run_id: str) -> list[str]:
    """Where two runs' numbers were measured otherwise: the data settings (a model name is shared
    by every points file and image folder; the seed, which draws the data too, may differ), the
    data file's bytes and mode count (a file edited in place keeps its settings), the diagnosis's
    settings (its verdict, modes and high-quality share) and the provenance card's comparable
    fields."""
    from gancore.provenance import COMPARABLE

    theirs, mine = c.get_run(best_run).data, c.get_run(run_id).data
    data_keys = sorted(k for k in {*theirs.params, *mine.params} if k.startswith(("data.", "diagnose.")))
    apart = [
        f"{k}: {theirs.params.get(k)!r} at @best, {mine.params.get(k)!r} here"
        for k in data_keys
        if theirs.params.get(k) != mine.params.get(k)
    ]
    cards = ["data.source_sha256", "data.modes", *(f"provenance.{f}" for f in COMPARABLE)]
    return apart + [
        f"{k}: {theirs.tags.get(k)!r} at @best, {mine.tags.get(k)!r} here" for k in cards if theirs.tags.get(k) != mine.tags.get(k)
    ]


def promote_if_best(c: MlflowClient, name: str, run_id: str) -> bool:
    """Point ``@best`` at this run's version of ``name`` if the run is healthy and ranks above the
    version ``@best`` points at now (:func:`gancore.ranking.rank_key`), measured on the same data
    version and protocol (else it stays, with a warning); True when it moved."""
    from mlflow.exceptions import MlflowException

    version = version_of_run(c, name, run_id)
    if version is None:
        return False
    figures, verdict = _figures_and_verdict(c, run_id)
    if verdict != "healthy":
        return False
    try:
        current = c.get_model_version_by_alias(name, BEST_ALIAS)
    except MlflowException:
        current = None
    if current is not None and current.version != version:
        apart = _measured_otherwise(c, current.run_id, run_id) if current.run_id else []
        if apart:  # other data or another protocol: their figures do not rank against each other
            log.warning(
                "%s@%s stays on version %s: run %s was measured otherwise (%s); give it a model name of its own to compare",
                name, BEST_ALIAS, current.version, run_id, "; ".join(apart),
            )  # fmt: skip
            return False
        theirs = _figures_and_verdict(c, current.run_id) if current.run_id else ({}, None)
        if rank_key(*theirs) >= rank_key(figures, verdict):
            return False
    c.set_registered_model_alias(name, BEST_ALIAS, version)
    log.info("%s@%s -> version %s", name, BEST_ALIAS, version)
    return True
