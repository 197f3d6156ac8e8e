"""Prefect's environment for one workspace, set when a command starts, never at import.

Prefect reads its settings from the environment when it is first imported; `configure`
sets them and, if Prefect is already loaded, rebuilds its settings context so the values
apply to this process and every subprocess it starts (the ephemeral API server, Dask
workers, served deployments).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ground.config import Params

# The ephemeral API's first start takes 15-20 s on a loaded 2-core machine (STACK.md).
EPHEMERAL_STARTUP_TIMEOUT_S = "120"
# The one retry policy of the flows' tasks that touch the file system or a remote (as task
# options); computations do not retry, since they would fail the same way again.
IO_RETRY: dict[str, Any] = {"retries": 2, "retry_delay_seconds": 2}


def as_task(fn: Any, name: str, *, io: bool = False, **options: Any) -> Any:
    """A library function as a Prefect task of the flows: never cached (outputs are keyed by
    content already), retried under IO_RETRY when it touches the file system or a remote."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    return task(name=name, cache_policy=NO_CACHE, **(IO_RETRY if io else {}), **options)(fn)


def prefect_env(prefect_home: Path, params: Params, *, api_url: str | None = None) -> dict[str, str]:
    """The environment variables the flows need, as a mapping (nothing is changed)."""
    env = {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": EPHEMERAL_STARTUP_TIMEOUT_S,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "DVC_NO_ANALYTICS": "1", "FEAST_USAGE": "False", "MLFLOW_DISABLE_TELEMETRY": "true",
        "GX_ANALYTICS_ENABLED": "false",
    }
    url = api_url or params.flows.prefect_api_url
    if url:
        env["PREFECT_API_URL"] = url
    return env


def configure(prefect_home: Path, params: Params, *, api_url: str | None = None) -> dict[str, str]:
    """Apply `prefect_env` to this process. Returns what was set.

    An API URL already in the environment (a test harness, a user's own server) wins over
    params.flows.prefect_api_url, unless `api_url` is passed explicitly.
    """
    env = prefect_env(prefect_home, params, api_url=api_url)
    if api_url is None and os.environ.get("PREFECT_API_URL"):
        env.pop("PREFECT_API_URL", None)
    Path(prefect_home).mkdir(parents=True, exist_ok=True)
    os.environ.update(env)
    if "prefect.context" in sys.modules:
        sys.modules["prefect.context"].refresh_global_settings_context()
    return env
