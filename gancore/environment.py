"""The process environment the project's entry points run in: telemetry off everywhere.

Importing gancore changes nothing; the entry points (``gan``, the flows' ``main``, the test
session) call :func:`quiet` themselves, and pass :data:`QUIET` on to the processes they start.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

QUIET: dict[str, str] = {
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def quiet(environ: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Turn telemetry off in ``environ`` (default: this process), keeping what the user set."""
    env = os.environ if environ is None else environ
    for key, value in QUIET.items():
        env.setdefault(key, value)
    return env
