"""A local Prefect server: is one up, start one, stop it, and point ``prefect`` commands at it.

``make serve`` starts ``prefect server start --host 127.0.0.1`` (SQLite in ``$PREFECT_HOME``,
analytics off) unless a server already answers. So that ``prefect deployment run ...`` typed in
this directory reaches it without exporting anything, serve writes ``prefect.toml`` (Prefect reads
it from the current directory; environment variables and ``.env`` still take precedence) and
removes it when it stops. A stale file (serve killed hard) is harmless to ``make run``: the
in-process flow checks the server and runs without one when it does not answer.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
TOML = "prefect.toml"
TOML_MARKER = "# written by `make serve` (flows/server.py); removed when it stops"
QUIET = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def api_url(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    return f"http://{host}:{port}/api"


def configured_api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_healthy(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(url):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {process.returncode} before answering at {url}")
        time.sleep(0.5)
    raise TimeoutError(f"no Prefect server answered at {url} within {timeout:.0f} s")


def start_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, log: str | Path | None = None,
                 env: dict[str, str] | None = None, timeout: float = 180.0) -> subprocess.Popen:
    """``prefect server start`` in a child process; returns once it answers."""
    environment = {**os.environ, **QUIET, **(env or {})}
    environment.pop("PREFECT_API_URL", None)  # the server is the API; it must not look for another
    out = open(log, "ab") if log else subprocess.DEVNULL
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
        env=environment, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_healthy(api_url(host, port), timeout, process)
    except BaseException:
        stop_server(process)
        raise
    return process


def stop_server(process: subprocess.Popen, timeout: float = 30.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


@contextlib.contextmanager
def pointed_here(url: str, directory: str | Path = ".") -> Iterator[bool]:
    """Point ``prefect`` commands run in ``directory`` at ``url`` (via prefect.toml) for the block;
    yields False when a prefect.toml not written by us is there (left untouched)."""
    path = Path(directory) / TOML
    if path.exists() and TOML_MARKER not in path.read_text():
        yield False
        return
    path.write_text(f'{TOML_MARKER}\n[api]\nurl = "{url}"\n')
    try:
        yield True
    finally:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def offline_if_unreachable() -> Iterator[None]:
    """Run in-process flows without a server when the configured one does not answer."""
    url = configured_api_url()
    if not url or healthy(url):
        yield
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    print(f"note: no Prefect server answers at {url}; running without one (start it with `make serve`)", file=sys.stderr)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


def is_local(url: str) -> bool:
    return urlparse(url).hostname in ("127.0.0.1", "localhost", "::1")
