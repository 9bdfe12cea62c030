"""The Prefect API the flows talk to: the configured server, or one local server per process.

**In-process runs** (``make run``, ``make sweep``, ``python -m gancore_flows.<flow>``) go through
:func:`local_api`. When a configured server (``PREFECT_API_URL``) answers, runs report to it.
Otherwise this process starts one temporary local API server, once, and every flow run it starts
reports there, the members of a sweep included: a process pool's workers, Dask workers and Ray
workers inherit its address (``PREFECT_API_URL`` in the environment and in the settings they are
handed), instead of each starting a throwaway server of its own.

Its first start on a cold ``PREFECT_HOME`` runs the database migrations, which on a busy 2-core
machine took longer than Prefect's default startup timeout of 20 s, and the first ``make run``
failed. :data:`STARTUP_TIMEOUT` applies instead, unless the user set
``server.ephemeral.startup_timeout_seconds`` themselves (environment, profile, prefect.toml, .env).

**A real server** (``make serve``, ``make worker``): :func:`start_server` runs
``prefect server start --host 127.0.0.1`` (SQLite in ``$PREFECT_HOME``) in a child process;
:func:`pointed_here` writes ``prefect.toml`` so that ``prefect`` commands typed in this directory
reach it (removed when serve stops; environment variables and ``.env`` still take precedence).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from gancore.environment import quiet

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
TOML = "prefect.toml"
TOML_MARKER = "# written by `make serve` (flows/prefect_api.py); removed when it stops"
# Seconds a temporary server may take to answer: its cold first start (migrations) on a busy
# 2-core machine took over 20 s, Prefect's default; ten minutes covers a slow disk too.
STARTUP_TIMEOUT = 600
API_URL_ENV = "PREFECT_API_URL"


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


def startup_timeout() -> int:
    """The user's ``server.ephemeral.startup_timeout_seconds`` if they set one, else :data:`STARTUP_TIMEOUT`."""
    from prefect.settings import get_current_settings

    ephemeral = get_current_settings().server.ephemeral
    return ephemeral.startup_timeout_seconds if "startup_timeout_seconds" in ephemeral.model_fields_set else STARTUP_TIMEOUT


class ServerStartError(RuntimeError):
    """The temporary local Prefect server did not come up."""


def run_locally(prog: str, flow: Callable[..., Any], **parameters: Any) -> Any:
    """Call ``flow`` against :func:`local_api` (``make run``, ``make sweep``, ...); a server that
    cannot start is reported in one line and ``None`` returned (the caller exits 1). A Ctrl-C stops
    it even when its starter ignores SIGINT (a background job of a script, a test runner's worker),
    which Python would keep, as ``make serve`` and ``gan ui`` do."""
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with local_api():
            return flow(**parameters)
    except ServerStartError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; a run resumes from its checkpoints when started again into the same --out", file=sys.stderr)
        raise SystemExit(130) from None


@functools.cache
def _prctl() -> Callable[..., int] | None:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the parent's exit handler stops the child instead
        return None


def dies_with_this_process() -> Callable[[], None]:
    """A ``preexec_fn``: the child receives SIGTERM when this process dies, however it dies
    (Linux's parent-death signal; strictly, when the thread that starts the child ends: start
    children from the main thread). The library is looked up here, in the parent: between fork
    and exec a child of a threaded process should only make the call."""
    prctl, parent = _prctl(), os.getpid()

    def preexec() -> None:
        if prctl is not None:
            prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent died before the signal was armed
                os._exit(1)

    return preexec


@contextlib.contextmanager
def interrupted_again_after(grace: float) -> Iterator[None]:
    """Within the block, the first Ctrl-C (SIGINT) raises KeyboardInterrupt and, should the block
    still run ``grace`` seconds later, interrupts it again, as a second Ctrl-C would. Installing
    the handler also answers a SIGINT inherited as ignored (Python keeps SIG_IGN), the likely
    reason a served process once ran 60 s past SIGINT in CI, leaving the server and prefect.toml
    behind (``gan ui`` did the same, reproduced). The second interrupt bounds what remains:
    Prefect's ``serve`` stops by cancelling its runner and awaiting its tasks, and asyncio's own
    handler, not installed here, only cancels, so a task that swallows cancellation held it."""
    import threading

    timer: list[threading.Timer] = []
    main = threading.main_thread().ident

    def again() -> None:  # a real signal to the main thread: it wakes a loop asleep in epoll
        signal.pthread_kill(main, signal.SIGINT)  # type: ignore[arg-type]

    def on_interrupt(signum: int, frame: Any) -> None:
        if not timer:
            timer.append(threading.Timer(grace, again))
            timer[0].daemon = True
            timer[0].start()
        signal.default_int_handler(signum, frame)

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        if timer:
            timer[0].cancel()
        signal.signal(signal.SIGINT, previous)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((DEFAULT_HOST, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def one_start_at_a_time(home: Path) -> Iterator[None]:
    """Prefect servers sharing the database of ``home`` start in turns, each holding a file lock
    until it answers: every start runs the database migrations, and two at once on a cold database
    failed (``prefect server start`` for `make serve` beside a flow's temporary server: "Online
    migration expected to match one row ... 0 found", exit 3)."""
    import fcntl

    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".gancore-server-start.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


class TemporaryServer:
    """Prefect's API server for this process alone (what Prefect's own ephemeral mode starts), bound
    to 127.0.0.1 on a free port, stopped with this process even when it is SIGKILLed (so a killed
    ``make run`` leaves no server behind). Cold starts of several processes sharing one
    ``PREFECT_HOME`` take turns (a file lock), so only the first runs the database migrations."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.process: subprocess.Popen | None = None

    @property
    def api_url(self) -> str:
        return api_url(DEFAULT_HOST, self.port)

    def start(self, timeout: float) -> None:
        import prefect
        from prefect.settings import get_current_settings

        settings = get_current_settings()
        env = {
            **os.environ,
            **settings.to_environment_variables(exclude_unset=True),
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        env.pop(API_URL_ENV, None)
        home = Path(settings.home)
        home.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "--app-dir",
            str(Path(prefect.__file__).parent.parent),
            "--factory",
            "prefect.server.api.server:create_app",
            "--host",
            DEFAULT_HOST,
            "--port",
            str(self.port),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ]
        with one_start_at_a_time(home):
            # Its own session, as start_server's: a Ctrl-C at the terminal stopped it before the
            # flows could say they were interrupted, and they retried a dead address for minutes.
            self.process = subprocess.Popen(command, env=env, start_new_session=True, preexec_fn=dies_with_this_process())
            try:
                wait_healthy(self.api_url, timeout, self.process)
            except BaseException:
                self.stop()
                raise
        atexit.register(self.stop)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)
            self.process = None


@contextlib.contextmanager
def local_api() -> Iterator[str]:
    """The API for flows run in this process: the configured server if it answers, else a
    temporary local server started here (see the module doc). Yields its URL."""
    quiet()
    url = configured_api_url()
    if url and healthy(url):
        yield url
        return
    if url:
        print(f"note: no Prefect server answers at {url}; using a temporary local one (start a server with `make serve`)", file=sys.stderr)
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, temporary_settings

    timeout = startup_timeout()
    server = TemporaryServer()
    try:
        server.start(timeout)
    except TimeoutError as exc:
        raise ServerStartError(
            f"{exc}: the temporary Prefect server did not start within server.ephemeral.startup_timeout_seconds="
            f"{timeout}; raise it (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS) or start one with `make serve`"
        ) from None
    except RuntimeError as exc:  # it exited: its own error went to stderr above this line
        raise ServerStartError(f"{exc}; its own error is printed above") from None
    previous = os.environ.get(API_URL_ENV)
    os.environ[API_URL_ENV] = server.api_url  # for every process started from here
    try:
        updates = {PREFECT_API_URL: server.api_url, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: timeout}
        with temporary_settings(updates=updates), _for_every_thread():
            yield server.api_url
    finally:
        if previous is None:
            os.environ.pop(API_URL_ENV, None)
        else:
            os.environ[API_URL_ENV] = previous
        drain_prefect_workers()
        server.stop()


def _for_every_thread() -> contextlib.AbstractContextManager[Any]:
    """The settings in force made the process-global ones, as Prefect's own test harness does:
    threads started without this context (the process pool's message forwarder) read the global
    settings, which had no API URL, so Prefect started a second temporary server in this process
    for them (seconds of CPU per run), and a Ctrl-C stopped it before the flows reported."""
    import prefect.context

    temporary = getattr(prefect.context, "_temporary_global_settings_context", None)
    return temporary(prefect.context.get_settings_context()) if temporary else contextlib.nullcontext()


def drain_prefect_workers(timeout: float = 30.0) -> None:
    """Deliver the flow-run logs and events still queued in this process while the server is up.

    Prefect sends the rest at interpreter exit, after this temporary server has stopped; it then
    retries against a dead address and `make run` hung for minutes after printing its summary.
    Prefect's own test harness drains the same two workers before it stops its server."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(RuntimeError):  # never started in this process
            worker.drain_all(timeout=timeout)


def wait_healthy(url: str, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(url):
            return
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"prefect server exited with code {process.returncode} before answering at {url}")
        time.sleep(0.5)
    raise TimeoutError(f"no Prefect server answered at {url} within {timeout:.0f} s")


def start_server(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    log: str | Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = STARTUP_TIMEOUT,
) -> subprocess.Popen:
    """``prefect server start`` in a child process; returns once it answers."""
    environment = quiet({**os.environ, **(env or {})})
    environment.pop(API_URL_ENV, None)  # the server is the API; it must not look for another
    # The UI it serves calls the API from the browser: at this port, not Prefect's default 4200.
    environment.setdefault("PREFECT_UI_API_URL", api_url(host, port))
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]
    from prefect.settings import get_current_settings

    home = Path(environment.get("PREFECT_HOME") or get_current_settings().home).expanduser()
    with one_start_at_a_time(home):
        # The child keeps its own copy of the log's descriptor; ours closes with the block.
        with open(log, "ab") if log else open(os.devnull, "wb") as out:
            # Its own session (a Ctrl-C at the terminal reaches the command, which stops it in
            # order), yet tied to this process: killed with it, however it dies, it takes the
            # server along.
            process = subprocess.Popen(
                command,
                env=dict(environment),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=dies_with_this_process(),
            )
        try:
            wait_healthy(api_url(host, port), timeout, process)
        except BaseException:
            stop_process(process)
            raise
    return process


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, ``timeout`` seconds to finish, then SIGKILL; a second Ctrl-C meanwhile kills it
    at once (and is re-raised) rather than leaving it running."""
    if process.poll() is not None:
        return
    try:
        process.terminate()
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    except KeyboardInterrupt:
        process.kill()
        process.wait()
        raise


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


def is_local(url: str) -> bool:
    return urlparse(url).hostname in ("127.0.0.1", "localhost", "::1")


class ServerUnavailable(RuntimeError):
    """The configured Prefect server does not answer, and it is not one this machine can start."""


@contextlib.contextmanager
def local_server(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, log: str | Path | None = None) -> Iterator[str]:
    """A real Prefect server for deployments (``make serve``, ``make worker``): the configured one
    if it answers, else ``prefect server start`` on ``host:port`` for the block. Processes started
    inside see it (``PREFECT_API_URL``), and so do ``prefect`` commands typed in this directory
    (``prefect.toml``). Yields the API URL."""
    quiet()
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url = configured_api_url() or api_url(host, port)
    started = None
    previous = os.environ.get(API_URL_ENV)
    try:
        if not healthy(url):
            if not is_local(url):
                raise ServerUnavailable(f"the Prefect API at {url} does not answer (PREFECT_API_URL); start it or unset PREFECT_API_URL")
            parsed = urlparse(url)
            log = Path(log) if log else Path("runs") / "prefect-server.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            print(f"starting a Prefect server at {url} (log: {log}) ...", flush=True)
            started = start_server(parsed.hostname or host, parsed.port or port, log=log)
        os.environ[API_URL_ENV] = url  # for the flow-run and worker subprocesses
        with temporary_settings(updates={PREFECT_API_URL: url}), pointed_here(url) as pointed:
            if not pointed:
                print(f"a prefect.toml of your own is here: export PREFECT_API_URL={url} in other shells", flush=True)
            yield url
    finally:
        if previous is None:
            os.environ.pop(API_URL_ENV, None)
        else:
            os.environ[API_URL_ENV] = previous
        if started is not None:
            stop_process(started)
