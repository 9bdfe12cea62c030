"""``make serve``: a local Prefect server (started when none answers) serving the deployments
``gan-pipeline/default``, ``gan-sweep/default``, ``gan-mixture/default`` and ``gan-remedy/default``.

Then, from this directory::

    prefect deployment run 'gan-pipeline/default' --watch
    prefect deployment run 'gan-pipeline/default' --param train='{"steps": 500}' --watch
    prefect deployment run 'gan-sweep/default' --params '{"losses": ["hinge", "wasserstein_gp"], "seeds": [0, 1]}'

Runs execute in subprocesses of this process, in this directory; Ctrl-C stops serving (and the
server, if this process started it). The server keeps its SQLite database in ``$PREFECT_HOME``
(``~/.prefect`` by default). ``make worker`` (:mod:`.worker`) deploys the same flows to a process
work pool instead, run by a ``prefect worker``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gancore.cli import port, positive_int
from gancore_flows import prefect_api

# Every flow served and deployed, as ``module:function`` in gancore_flows. Adding a flow: its own
# module with an ``@flow(name=..., description=...)`` (the description is the deployment's), and
# one entry here.
FLOWS: tuple[str, ...] = ("pipeline:gan_pipeline", "sweep:gan_sweep", "mixture:gan_mixture", "remedy:gan_remedy")
# Seconds Prefect's serve gets to stop after Ctrl-C before it is interrupted again.
SHUTDOWN_GRACE_S = 15.0


def flows() -> list[Any]:
    import importlib

    out = []
    for entry in FLOWS:
        module, _, name = entry.partition(":")
        out.append(getattr(importlib.import_module(f"gancore_flows.{module}"), name))
    return out


def deployments(params_file: str | Path, name: str = "default", **options: Any) -> list[Any]:
    """Every flow as a deployment on ``params_file`` (absolute: runs find params.yaml, and so the
    project root, wherever they start), with module entrypoints (the flows are an installed
    package: runs load them wherever they start) and a run form that shows params.yaml's values."""
    from prefect.types.entrypoint import EntrypointType

    from gancore_flows.params import form_hints

    path = Path(params_file).resolve()
    out = []
    for fl in flows():
        deployment = fl.to_deployment(
            name,
            parameters={"params_file": str(path)},
            tags=["gancore"],
            entrypoint_type=EntrypointType.MODULE_PATH,
            **options,
        )
        deployment._parameter_openapi_schema = form_hints(deployment._parameter_openapi_schema, path)
        out.append(deployment)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gancore_flows.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=prefect_api.DEFAULT_HOST)
    parser.add_argument("--port", type=port, default=prefect_api.DEFAULT_PORT)
    parser.add_argument("--params", default="params.yaml", metavar="FILE")
    parser.add_argument("--limit", type=positive_int, default=None, help="flow runs executed at once (default: no limit)")
    args = parser.parse_args(argv)
    if not Path(args.params).is_file():
        print(f"serve: {args.params} not found; run from the project root or pass --params", file=sys.stderr)
        return 2
    from prefect import serve

    try:
        with prefect_api.local_server(args.host, args.port) as url:
            print(f"Prefect server: {url} (UI: {url.removesuffix('/api')})", flush=True)
            with prefect_api.interrupted_again_after(SHUTDOWN_GRACE_S):
                serve(*deployments(args.params), limit=args.limit)
    except prefect_api.ServerUnavailable as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
