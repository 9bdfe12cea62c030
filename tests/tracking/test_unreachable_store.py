"""A tracking URI where nothing answers is refused at once, before a stage does any work. MLflow's
client retries a refused connection with backoff for minutes, and ``gan train`` sat silent meanwhile."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

from gancore.tracking.store import unreachable
from helpers import free_port, venv_env, write_params


def test_unreachable_names_what_does_not_answer_and_passes_what_does():
    port = free_port()
    assert f"nothing answers at 127.0.0.1:{port}" in unreachable(f"http://127.0.0.1:{port}")
    assert unreachable("http:///api") == "it names no host"
    assert unreachable("sqlite:////tmp/mlflow.db") is None  # a file, not a server
    with socket.create_server(("127.0.0.1", 0)) as listening:
        assert unreachable(f"http://127.0.0.1:{listening.getsockname()[1]}/") is None


def test_a_stage_under_an_unreachable_tracking_uri_fails_at_once_and_writes_nothing(tmp_path):
    write_params(tmp_path / "params.yaml")
    env = venv_env(MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "gancore.cli", "prepare"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert time.monotonic() - started < 60  # MLflow's own retries took minutes
    assert done.returncode == 1, done.stderr
    message = done.stderr.strip().splitlines()[-1]
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:" in message and "Connection refused" in message, message
    assert "gan tracking-server" in message and "tracking.enabled=false" in message
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data" / "prepared").exists()
