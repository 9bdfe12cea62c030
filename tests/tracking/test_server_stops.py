"""`gan ui` stops at SIGINT, and takes its MLflow server with it, even when it was started by a
process that ignores SIGINT (which Python would otherwise keep: the server then ran on, and a
caller that gave up and killed `gan ui` left MLflow's server behind)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from gancore.tracking.store import answers
from helpers import free_port, venv_env


def test_gan_ui_started_with_sigint_ignored_still_stops_at_sigint_with_its_server(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = venv_env()
    env.pop("MLFLOW_TRACKING_URI", None)
    (tmp_path / ".dvc").mkdir()
    ui = subprocess.Popen(
        [sys.executable, "-m", "gancore.cli", "ui", "--root", str(tmp_path), "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        deadline = time.monotonic() + 300
        while not answers(url):
            assert ui.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        ui.send_signal(signal.SIGINT)
        assert ui.wait(60) == 0
        assert not answers(url)  # MLflow's server went with it
    finally:
        ui.kill()
