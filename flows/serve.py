"""``make serve``: a local Prefect server (started when none answers) serving the deployments
``gan-pipeline/default`` and ``gan-sweep/default``.

Then, from this directory::

    prefect deployment run 'gan-pipeline/default' --watch
    prefect deployment run 'gan-pipeline/default' --param train='{"steps": 500}' --watch
    prefect deployment run 'gan-sweep/default' --params '{"losses": ["hinge", "wasserstein_gp"], "seeds": [0, 1]}'

Runs execute in subprocesses of this process, in this directory; Ctrl-C stops serving (and the
server, if this process started it). The server keeps its SQLite database in ``$PREFECT_HOME``
(``~/.prefect`` by default).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from gancore_flows import server


def deployments(params_file: str | Path) -> list[Any]:
    from prefect.types.entrypoint import EntrypointType

    from gancore_flows.pipeline import gan_pipeline
    from gancore_flows.sweep import gan_sweep

    # An absolute parameter file: runs find params.yaml (and so the project root) wherever they start.
    defaults = {"params_file": str(Path(params_file).resolve())}
    # Module entrypoints (flows is an installed package): runs load the flows wherever they start.
    kind = EntrypointType.MODULE_PATH
    return [
        gan_pipeline.to_deployment(
            "default",
            parameters=defaults,
            tags=["gancore"],
            entrypoint_type=kind,
            description="The GAN pipeline on params.yaml; any section field overrides it.",
        ),
        gan_sweep.to_deployment(
            "default",
            parameters=defaults,
            tags=["gancore"],
            entrypoint_type=kind,
            description="gan-pipeline over architectures x losses x seeds, with a comparison table.",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gancore_flows.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=server.DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=server.DEFAULT_PORT)
    parser.add_argument("--params", default="params.yaml", metavar="FILE")
    parser.add_argument("--limit", type=int, default=None, help="flow runs executed at once (default: no limit)")
    args = parser.parse_args(argv)
    if not Path(args.params).is_file():
        print(f"serve: {args.params} not found; run from the project root or pass --params", file=sys.stderr)
        return 2

    url = server.configured_api_url() or server.api_url(args.host, args.port)
    started = None
    if not server.healthy(url):
        if not server.is_local(url):
            print(f"serve: the Prefect API at {url} does not answer (PREFECT_API_URL); start it or unset PREFECT_API_URL", file=sys.stderr)
            return 1
        parsed = urlparse(url)
        log = Path("runs") / "prefect-server.log"
        log.parent.mkdir(exist_ok=True)
        print(f"starting a Prefect server at {url} (log: {log}) ...", flush=True)
        started = server.start_server(parsed.hostname or args.host, parsed.port or args.port, log=log)
    print(f"Prefect server: {url} (UI: {url.removesuffix('/api')})", flush=True)

    from prefect import serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    os.environ["PREFECT_API_URL"] = url  # for the flow-run subprocesses
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}), server.pointed_here(url) as pointed:
            if not pointed:
                print(f"a prefect.toml of your own is here: export PREFECT_API_URL={url} in other shells", flush=True)
            serve(*deployments(args.params), limit=args.limit)
    finally:
        if started is not None:
            server.stop_process(started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
