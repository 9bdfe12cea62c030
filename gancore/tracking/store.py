"""Where runs are recorded: the tracking URI, the client, the experiment.

Tracking URI: ``$MLFLOW_TRACKING_URI`` when set; else the project's tracking server while
``make tracking-server`` runs (:mod:`gancore.tracking.server`); else
``sqlite:///<project root>/mlflow.db`` with artifacts in ``<project root>/mlartifacts``. The
project root is ``$DVC_ROOT`` under DVC, else the directory holding the parameter file (the caller
passes it), else the current directory.

A SQLite store is shared by every process working on the project (concurrent flow runs, sweep
members, ``dvc repro``). Two things make that safe: the first process to open the store creates
its tables under an exclusive file lock (MLflow's own start-up races when several processes meet
a new database: "table ... already exists"), and the database runs in WAL mode, where readers
never block the writer and MLflow's 20 s busy timeout covers writers queueing for each other.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from gancore.errors import GanCoreError

if TYPE_CHECKING:  # pragma: no cover
    from mlflow import MlflowClient

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
UI_URL_ENV = "GANCORE_MLFLOW_UI"
DEFAULT_UI_URL = "http://127.0.0.1:5000"
SQLITE_PREFIX = "sqlite:///"
# Written beside mlflow.db while `gan tracking-server` serves it (gancore.tracking.server).
SERVER_FILE = ".mlflow-server"

_initialised: set[str] = set()


class TrackingError(GanCoreError):
    """Tracking was asked for but cannot work (mlflow missing, store unreachable)."""


def project_root(hint: str | Path | None = None) -> Path:
    """The directory whose ``mlflow.db`` records runs (see the module doc): ``hint`` when given
    (a root already found), else :func:`gancore.layout.find_project_root`."""
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"]).resolve()
    if hint is not None:
        return Path(hint).resolve()
    from gancore.layout import find_project_root

    return find_project_root()


def tracking_uri(root: str | Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI``, else the project's tracking server while ``gan tracking-server``
    runs, else the project's SQLite file."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    path = project_root(root)
    return _announced(str(path)) or f"{SQLITE_PREFIX}{path / DB_FILE}"


@lru_cache(maxsize=16)
def _announced(root: str) -> str | None:
    return announced_server(Path(root))


def answers(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def announced_server(root: Path) -> str | None:
    """The URL in ``root/.mlflow-server`` if a server there answers."""
    path = root / SERVER_FILE
    if not path.is_file():
        return None
    url = path.read_text().strip()
    return url if url and answers(url) else None


def run_url(experiment_id: str, run_id: str | None = None) -> str:
    """The run (or experiment) in the MLflow UI, opened in its model-training view."""
    base = os.environ.get(UI_URL_ENV, DEFAULT_UI_URL).rstrip("/")
    page = f"{base}/#/experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "/runs")
    return page + "?workflowType=machine_learning"


def sqlite_path(uri: str) -> Path | None:
    return Path(uri[len(SQLITE_PREFIX) :]) if uri.startswith(SQLITE_PREFIX) else None


def initialise_sqlite(uri: str, path: Path) -> None:
    """Create (or migrate) the store's tables once, under an exclusive lock, in WAL mode."""
    import fcntl
    import sqlite3

    from mlflow import MlflowClient

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with sqlite3.connect(path, timeout=60) as db:
                db.execute("PRAGMA journal_mode=WAL")
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def unreachable(uri: str, timeout: float = 3.0) -> str | None:
    """Why nothing can answer at an http(s) tracking URI, in words, or None. MLflow's client
    retries a refused connection with backoff for minutes, and `gan train` sat silent meanwhile."""
    import socket
    from urllib.parse import urlparse

    where = urlparse(uri)
    if where.scheme not in ("http", "https"):
        return None
    try:
        port = where.port or (443 if where.scheme == "https" else 80)
    except ValueError as exc:
        return str(exc)
    if not where.hostname:
        return "it names no host"
    try:
        socket.create_connection((where.hostname, port), timeout=timeout).close()
    except OSError as exc:
        return f"nothing answers at {where.hostname}:{port} ({exc.strerror or type(exc).__name__})"
    return None


def _check_reachable(uri: str) -> None:
    problem = unreachable(uri)
    if problem is None:
        return
    source = "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") == uri else "the tracking URI"
    raise TrackingError(
        f"{source}={uri}: {problem}. Start the tracking server there (`gan tracking-server`, or "
        "`mlflow server --host 127.0.0.1 --port N`), point MLFLOW_TRACKING_URI at one that runs, unset it "
        "to record in the project's mlflow.db, or set tracking.enabled=false"
    )


def client(root: str | Path | None = None) -> MlflowClient:
    try:
        import mlflow
    except ImportError as exc:
        raise TrackingError(
            f"tracking.enabled is true but mlflow cannot be imported ({exc}); install mlflow or set tracking.enabled=false"
        ) from None
    uri = tracking_uri(root)
    path = sqlite_path(uri)
    if path is not None and uri not in _initialised:
        initialise_sqlite(uri, path)
        serve_artifacts_locally()
        _initialised.add(uri)
    elif path is None and uri not in _initialised:
        _check_reachable(uri)
        _initialised.add(uri)
    # log_model goes through mlflow's fluent layer, which reads the process-wide URIs.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def serve_artifacts_locally() -> None:
    """Runs that `gan tracking-server` opened keep their artifacts as ``mlflow-artifacts:/...``,
    which MLflow's client resolves through a running server only: once the server had stopped,
    every later run of its experiment, on the project's store directly, failed to log a file. The
    project's server keeps them in ``mlartifacts/`` beside the store (its default destination), so
    with no server those URIs are that folder's paths."""
    try:
        from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry as registry
        from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
        from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository
    except ImportError:  # another MLflow layout: its own resolution stands
        return

    def repository(artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None) -> object:
        store = sqlite_path(tracking_uri or "")
        if store is None:  # through a server, as MLflow does it
            return MlflowArtifactsRepository(artifact_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)
        relative = artifact_uri.split(":", 1)[1].lstrip("/")
        return LocalArtifactRepository((store.resolve().parent / ARTIFACTS_DIR / relative).as_uri())

    registry.register("mlflow-artifacts", repository)


def artifact_location(uri: str) -> str | None:
    """Artifacts of a SQLite store go beside its database file (``mlartifacts/``), wherever the
    process runs; MLflow's own default (``./mlruns`` under the current directory) would scatter
    them. A tracking server decides for itself (None)."""
    path = sqlite_path(uri)
    return None if path is None else (path.resolve().parent / ARTIFACTS_DIR).as_uri()


def experiment_id(c: MlflowClient, name: str) -> str:
    from mlflow.exceptions import MlflowException

    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            c.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    try:
        return c.create_experiment(
            name, artifact_location=artifact_location(c.tracking_uri), tags={"mlflow.experimentKind": "custom_model_development"}
        )
    except MlflowException:  # created meanwhile by a concurrent run
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def ensure_experiment(name: str, root: str | Path | None = None) -> str:
    """Create the store and the experiment once, before concurrent runs race to do it."""
    return experiment_id(client(root), name)
