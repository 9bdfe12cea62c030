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


def _health_server():
    """An HTTP server answering /health, as a running tracking server does."""
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the handler's API
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_second_tracking_server_is_refused_and_leaves_the_first_ones_announcement(tmp_path, monkeypatch, capsys):
    """It found the first one answering, said "MLflow at ... (Ctrl-C stops it)", failed to bind,
    exited 0 and removed the first one's .mlflow-server: the project's runs stopped logging
    through the server still running (a review)."""
    from gancore.tracking.server import tracking_server, ui
    from gancore.tracking.store import SERVER_FILE

    first = _health_server()
    try:
        url = f"http://127.0.0.1:{first.server_port}"
        (tmp_path / SERVER_FILE).write_text(url + "\n")
        assert tracking_server(tmp_path, port=first.server_port) == 2
        assert f"gan: {url} is taken (a server answers there" in capsys.readouterr().err
        assert (tmp_path / SERVER_FILE).read_text().strip() == url
        # `gan ui` beside it: the tracking server serves the UI (mlflow ui took its URL for a store and crashed)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        assert ui(tmp_path, port=free_port()) == 0
        assert f"the tracking server at {url} serves the UI: {url}/#/experiments" in capsys.readouterr().out
    finally:
        first.shutdown()
        first.server_close()
