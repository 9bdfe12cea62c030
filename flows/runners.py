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


def task_runner(kind: str = "process", workers: int = 2, address: Optional[str] = None) -> Any:
    """The Prefect task runner for ``kind`` (one of :data:`RUNNERS`)."""
    if kind not in RUNNERS:
        raise ValueError(f"unknown runner {kind!r}; choose one of {', '.join(RUNNERS)}")
    if kind == "process":
        if address:
            raise ValueError("--address is for --runner dask or ray; the process pool runs on this machine")
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
