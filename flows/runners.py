"""Where a sweep's members run: a local process pool (default), a Dask cluster or a Ray cluster.

Without an address, Dask and Ray start a local cluster of ``workers`` single-threaded worker
processes (the way ``distributed.LocalCluster`` and ``ray.init`` start one for real); with one,
members go to the existing cluster. Dask and Ray are optional extras:
``pip install 'gancore[dask]'`` / ``'gancore[ray]'``.

Members report their flow runs to the parent's Prefect API (:func:`gancore_flows.prefect_api.local_api`
puts its address in the environment before the cluster starts, and Prefect hands its settings to
every task). Members on other machines need the same project directory (code, params.yaml, the DVC
cache) at the same path and a tracking server, not a SQLite file: :func:`check_member_host` makes a
member fail with a message saying so instead of writing results where nobody looks.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Optional, get_args

Runner = Literal["process", "dask", "ray"]
RUNNERS: tuple[str, ...] = get_args(Runner)


def threads_per_member(workers: int) -> int:
    """Members share the cores instead of each spinning up one intra-op thread per core
    (oversubscribed, torch slows down several-fold on small models)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def _missing(extra: str, exc: ImportError) -> RuntimeError:
    return RuntimeError(f"--runner {extra} needs the optional extra: pip install 'gancore[{extra}]' ({exc})")


# Dask's comm schemes (distributed.comm.registry; a bare host:port is tcp), and how each kind of
# cluster is started and addressed, for the messages.
DASK_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")
CLUSTERS = {
    "dask": ("a Dask scheduler", "tcp://host:8786", "`dask scheduler`, then `dask worker tcp://host:8786`"),
    "ray": ("a Ray cluster", "ray://host:10001 (the Ray client), host:6379 or auto on a machine of the cluster", "`ray start --head`"),
}
PROBE_SECONDS = 3.0


def cluster_problem(kind: str, address: Optional[str], probe: bool = True) -> Optional[str]:
    """Why ``address`` cannot name a cluster for ``--runner kind``, or None: an address for the
    process pool, another kind's scheme (Ray said "Module: tcp does not exist" in a traceback), no
    host:port, or, with ``probe``, nothing answering there (Dask tried for 30 s, then a traceback;
    a remedy found out only after its baseline had trained)."""
    if not address:
        return None
    if kind == "process":
        return "--address is for --runner dask or ray; the process pool runs on this machine"
    if kind == "ray" and address == "auto":
        return None
    what, example, start = CLUSTERS[kind]
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "", address
    if (kind == "dask" and sep and scheme not in DASK_SCHEMES) or (kind == "ray" and sep and scheme != "ray"):
        return f"{address!r} is not an address of {what} ({scheme}://); use {example}"
    host, _, port = rest.rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        return f"{address!r} names no host:port; use {example}"
    if probe and scheme not in ("ucx", "inproc"):
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS).close()
        except OSError as exc:
            return (
                f"nothing answers at {address} ({exc.strerror or type(exc).__name__}): start {what} there ({start}), "
                "or leave --address out to start a local cluster"
            )
    return None


def check_cluster(kind: str, address: Optional[str]) -> None:
    """Refuse (:class:`~gancore.errors.ParamsError`, under the flow parameter's name) an
    ``address`` that names no cluster for ``kind``, before anything runs."""
    from gancore.errors import ParamsError

    if problem := cluster_problem(kind, address):
        raise ParamsError([("address", problem)], "the flow's parameters")


def check_runner_arguments(prog: str, args: Any) -> Optional[int]:
    """Exit code 2 with the message when ``--address`` names no cluster for ``--runner`` (a flow's
    CLI, before Prefect starts; :func:`add_runner_arguments` made both)."""
    import sys

    if problem := cluster_problem(args.runner, args.address):
        print(f"{prog}: --address: {problem}", file=sys.stderr)
        return 2
    return None


def add_runner_arguments(parser: Any, what: str = "members") -> None:
    """``--runner``, ``--workers`` and ``--address`` of a flow's CLI; ``what`` the flow runs at once."""
    from gancore.cli import positive_int

    parser.add_argument(
        "--runner", choices=RUNNERS, default="process", help=f"where {what} run: a local process pool (default), Dask or Ray"
    )
    parser.add_argument("--workers", type=positive_int, default=2, help=f"{what} run at once (default 2)")
    parser.add_argument(
        "--address",
        default=None,
        help="an existing Dask scheduler (tcp://host:8786) or Ray cluster (ray://host:10001); without it a local cluster starts",
    )


@contextmanager
def members_pool(kind: str = "process", workers: int = 2, address: Optional[str] = None) -> Iterator[Any]:
    """:func:`task_runner` entered, whose members stop with a Ctrl-C: the process pool's workers
    are terminated (its exit waited for every running member to finish, minutes of training after
    the interrupt); a local Dask or Ray cluster stops its workers as it closes."""
    import multiprocessing

    with task_runner(kind, workers, address) as pool:
        try:
            yield pool
        except KeyboardInterrupt:
            if kind == "process":
                for child in multiprocessing.active_children():
                    child.terminate()
                # A worker terminated in the middle of a message to this process may hold the
                # queue's write lock: at exit, Python waited for it forever to flush its own.
                queue = getattr(pool, "_subprocess_message_queue", None)
                if queue is not None:
                    queue.cancel_join_thread()
            raise


def task_runner(kind: str = "process", workers: int = 2, address: Optional[str] = None) -> Any:
    """The Prefect task runner for ``kind`` (one of :data:`RUNNERS`)."""
    if kind not in RUNNERS:
        raise ValueError(f"unknown runner {kind!r}; choose one of {', '.join(RUNNERS)}")
    if problem := cluster_problem(kind, address, probe=False):
        raise ValueError(problem)
    if kind == "process":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=workers)
    if kind == "dask":
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as exc:
            raise _missing("dask", exc) from None
        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
                "host": "127.0.0.1",
            },
        )
    try:
        from prefect_ray import RayTaskRunner
    except ImportError as exc:
        raise _missing("ray", exc) from None
    env = {k: v for k, v in os.environ.items() if k.startswith(("PREFECT_", "MLFLOW_", "GANCORE_", "DO_NOT_TRACK", "DVC_"))}
    init: dict[str, Any] = {"runtime_env": {"env_vars": env}}
    if not address:
        init.update(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        # Ray runs its workers at nice 15 by default: beside any other work on the machine, the
        # sweep's own members starve (a 2-member test sweep took 10 min instead of 1 on 2 busy cores).
        os.environ.setdefault("RAY_worker_niceness", "0")
    return RayTaskRunner(address=address, init_kwargs=init)


def member_context(params_file: str) -> dict[str, Any]:
    """What a member must find where it runs: the parent's host, project and tracking store."""
    from gancore.tracking import tracking_uri

    path = Path(params_file).resolve()
    return {"host": socket.gethostname(), "params_file": str(path), "tracking_uri": tracking_uri(path.parent)}


def check_member_host(context: dict[str, Any]) -> None:
    """Fail clearly when this member cannot see what the parent sees (another machine)."""
    from gancore.errors import GanCoreError
    from gancore.tracking import tracking_uri
    from gancore.tracking.store import sqlite_path

    here = socket.gethostname()
    path = Path(context["params_file"])
    if not path.is_file():
        raise GanCoreError(
            f"sweep member on {here}: the project is not here ({path} is missing; the sweep runs on "
            f"{context['host']}). Share the project directory (code, params.yaml, the DVC cache) at the same path on every worker"
        )
    uri = tracking_uri(path.parent)
    if here != context["host"] and sqlite_path(context["tracking_uri"]) is not None and uri == context["tracking_uri"]:
        raise GanCoreError(
            f"sweep member on {here}: the MLflow store is a SQLite file of {context['host']} ({context['tracking_uri']}); "
            "runs written here would land in another file. Start a tracking server (make tracking-server) and set "
            "MLFLOW_TRACKING_URI to it on every machine"
        )
    if uri != context["tracking_uri"]:
        raise GanCoreError(
            f"sweep member on {here} would record to {uri}, the sweep to {context['tracking_uri']}: "
            "set the same MLFLOW_TRACKING_URI on every worker"
        )
