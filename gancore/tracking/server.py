"""``gan ui`` and ``gan tracking-server``: MLflow's UI over the project's store, and a shared
tracking server that runs on other processes and machines log to.

``gan tracking-server`` runs ``mlflow server`` on the project's store (``mlflow.db``), serving the
artifacts under ``mlartifacts/`` itself (``mlflow-artifacts:/``), bound to 127.0.0.1 unless told
otherwise. While it runs it writes ``.mlflow-server`` beside ``mlflow.db``: the project's runs then
log through it (``$MLFLOW_TRACKING_URI`` still wins). The file is removed when the server stops; a
stale one (server killed hard) is ignored once its server does not answer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gancore.environment import quiet
from gancore.tracking.store import SERVER_FILE, answers

# MLflow 3's GenAI job runner starts several consumer processes per server; the pipeline needs none.
QUIET_SERVER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def _environment() -> dict[str, str]:
    return dict(quiet({**os.environ, **QUIET_SERVER}))


def _serve(command: list[str], url: str, announce: Path | None = None, timeout: float = 300.0) -> int:
    """Run ``command`` until interrupted (Ctrl-C or SIGTERM); announce ``url`` in ``announce`` once
    it answers. The server runs in a session of its own, stopped with this process."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # the same clean-up as Ctrl-C: the server goes, the announcement too

    if taken := _port_taken(url):
        # A second server found the first one answering and said it ran, then exited 0, removing
        # the first one's announcement: the project's runs stopped logging through it (a review).
        print(f"gan: {url} is taken ({taken}): stop what runs there, or pass another --port", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, stop)
    # Ctrl-C stops it even when started by a process that ignores SIGINT (a script's background
    # job, a test runner after some library set SIG_IGN): Python keeps an inherited SIG_IGN.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    process = subprocess.Popen(command, env=_environment(), start_new_session=True)
    announced = False
    try:
        deadline = time.monotonic() + timeout
        while not answers(url):
            if process.poll() is not None:
                print(f"gan: {command[2]} exited with code {process.returncode} before answering at {url}", file=sys.stderr)
                return process.returncode or 1
            if time.monotonic() > deadline:
                print(f"gan: no answer at {url} after {timeout:.0f} s", file=sys.stderr)
                return 1
            time.sleep(0.5)
        if announce is not None:
            announce.write_text(url + "\n")
            announced = True
        print(f"MLflow at {url} (Ctrl-C stops it)", flush=True)
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if announced and announce is not None:
            announce.unlink(missing_ok=True)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _port_taken(url: str) -> str | None:
    """What holds ``url``'s port already, in words, or None."""
    import socket
    from urllib.parse import urlparse

    where = urlparse(url)
    if answers(url):
        return "a server answers there; the project's tracking server, if .mlflow-server names it"
    with socket.socket() as probe:
        # As uvicorn binds: connections of a server stopped a moment ago (TIME_WAIT) do not hold
        # the port, a listener does. Without it a restarted server was refused for a minute.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((where.hostname or "127.0.0.1", where.port or 80))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def ui(root: Path, host: str = "127.0.0.1", port: int = 5000, workers: int = 1) -> int:
    from gancore.tracking.store import ARTIFACTS_DIR, sqlite_path, tracking_uri

    uri = tracking_uri(root)
    if uri.startswith(("http://", "https://")):
        # A tracking server (this project's, or MLFLOW_TRACKING_URI's) serves the UI itself;
        # `mlflow ui` took its URL for a store and crashed.
        print(f"the tracking server at {uri} serves the UI: {uri.rstrip('/')}/#/experiments?workflowType=machine_learning", flush=True)
        return 0
    url = f"http://{host}:{port}"
    # One worker: mlflow's default of 4 starts four server processes (about 7 s of CPU each on
    # a 2-core CPU) for what is one person's browser; a worker serves requests concurrently.
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    command += ["--workers", str(workers)]
    if (store := sqlite_path(uri)) is not None:  # where `gan tracking-server` kept them (else ./mlartifacts of the cwd)
        command += ["--artifacts-destination", str(store.resolve().parent / ARTIFACTS_DIR)]
    print(f"MLflow UI over {uri}: {url}/#/experiments?workflowType=machine_learning", flush=True)
    return _serve(command, url)


def tracking_server(
    root: Path, host: str = "127.0.0.1", port: int = 5000, backend: str | None = None, artifacts: str | None = None, workers: int = 1
) -> int:
    from gancore.tracking.store import ARTIFACTS_DIR, DB_FILE, SQLITE_PREFIX, initialise_sqlite

    backend = backend or f"{SQLITE_PREFIX}{root / DB_FILE}"
    if backend.startswith(SQLITE_PREFIX):
        initialise_sqlite(backend, Path(backend[len(SQLITE_PREFIX) :]))  # schema and WAL before the server opens it
    artifacts = artifacts or str(root / ARTIFACTS_DIR)
    url = f"http://{host}:{port}"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        artifacts,
        "--default-artifact-root",
        "mlflow-artifacts:/",
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    print(
        f"tracking server: {backend}, artifacts in {artifacts}; runs of this project log to {url} while it runs "
        f"(elsewhere: export MLFLOW_TRACKING_URI={url})",
        flush=True,
    )
    return _serve(command, url, announce=root / SERVER_FILE)
