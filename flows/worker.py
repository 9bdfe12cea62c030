"""``make worker``: the flows deployed to a ``process`` work pool, and a worker running them.

Against the configured Prefect server (``PREFECT_API_URL``), or a local one started here when none
answers (:func:`gancore_flows.prefect_api.local_server`):

1. creates the work pool ``--pool`` (type ``process``) unless it exists;
2. deploys gan-pipeline, gan-sweep, gan-mixture and gan-remedy to it as ``<flow>/pool`` (module
   entrypoints of the installed package, this project's params.yaml, the project folder as the
   flow runs' working directory);
3. runs ``prefect worker start --pool NAME`` until Ctrl-C.

Then, in another shell in this directory::

    prefect deployment run 'gan-pipeline/pool' --watch

The same deployments go to Docker or Kubernetes pools (``prefect-docker``, ``prefect-kubernetes``)
with an image that has the project installed; see the README.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from gancore.cli import port, positive_int
from gancore.environment import quiet
from gancore_flows import prefect_api

POOL = "gancore-process"
DEPLOYMENT = "pool"


def ensure_pool(name: str, kind: str = "process") -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # created meanwhile
                client.create_work_pool(WorkPoolCreate(name=name, type=kind))
            return
        if pool.type != kind:
            raise SystemExit(f"worker: work pool {name!r} exists with type {pool.type!r}, not {kind!r}; choose another --pool")


def deploy(params_file: Path, pool: str, name: str = DEPLOYMENT) -> list[str]:
    """Register every flow's deployment on ``pool``; returns ``flow/deployment`` names."""
    from gancore_flows.serve import deployments

    out = []
    for deployment in deployments(params_file, name, work_pool_name=pool, job_variables={"working_dir": str(params_file.parent)}):
        deployment.apply()
        out.append(f"{deployment.flow_name}/{deployment.name}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gancore_flows.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", default=POOL, help=f"work pool name (default {POOL})")
    parser.add_argument("--host", default=prefect_api.DEFAULT_HOST)
    parser.add_argument("--port", type=port, default=prefect_api.DEFAULT_PORT)
    parser.add_argument("--params", default="params.yaml", metavar="FILE")
    parser.add_argument("--limit", type=positive_int, default=None, help="flow runs the worker runs at once (default: no limit)")
    args = parser.parse_args(argv)
    params_file = Path(args.params).resolve()
    if not params_file.is_file():
        print(f"worker: {args.params} not found; run from the project root or pass --params", file=sys.stderr)
        return 2
    # Ctrl-C stops it even when its starter ignores SIGINT (Python keeps an inherited SIG_IGN, and
    # so would the worker it starts).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with prefect_api.local_server(args.host, args.port) as url:
            ensure_pool(args.pool)
            names = deploy(params_file, args.pool)
            print(f"work pool {args.pool!r} at {url}: {', '.join(names)}", flush=True)
            print(f"run one with:  prefect deployment run '{names[0]}' --watch", flush=True)
            command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", args.pool, "--type", "process"]
            if args.limit:
                command += ["--limit", str(args.limit)]
            # Tied to this process, as the server is: a killed command leaves no worker polling.
            worker = subprocess.Popen(command, env=dict(quiet(dict(os.environ))), preexec_fn=prefect_api.dies_with_this_process())
            try:
                return worker.wait()
            except KeyboardInterrupt:
                prefect_api.stop_process(worker)
                return 0
    except prefect_api.ServerUnavailable as exc:
        print(f"worker: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
