"""Serve the flows as Prefect deployments on the cron schedules in params.flows.

Prefect's ephemeral API has no scheduler: deployments served against it would never run.
So `serve` uses the Prefect server at params.flows.prefect_api_url (the scale profile), and
otherwise starts a local one for as long as it serves, with its database in the
workspace's Prefect home (`<workspace>/.prefect/prefect.db`), where `prefect deployment ls`
and the Prefect UI find it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ground.config import Params
from ground.errors import FacesurvError
from ground.workspace import Workspace

EMBEDDING_DEPLOYMENT = "nightly"
TRAINING_DEPLOYMENT = "weekly"
SERVER_START_TIMEOUT_S = 180.0


def deployments(ws: Workspace, params: Params) -> list[Any]:
    """The two RunnerDeployments, parameterised with this workspace."""
    from prefect.deployments.runner import EntrypointType

    from flows.nightly_embedding import nightly_embedding
    from flows.train_and_promote import train_and_promote

    params_ = {"workspace": str(ws.root)}
    return [
        nightly_embedding.to_deployment(
            name=EMBEDDING_DEPLOYMENT, cron=params.flows.embedding_cron, parameters=params_, tags=["facesurv"],
            entrypoint_type=EntrypointType.MODULE_PATH,
            description="New photos and clinical records -> features, nightly."),
        train_and_promote.to_deployment(
            name=TRAINING_DEPLOYMENT, cron=params.flows.training_cron, parameters=params_, tags=["facesurv"],
            entrypoint_type=EntrypointType.MODULE_PATH,
            description="Training set -> train -> evaluate -> register -> promote."),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as resp:  # noqa: S310 - localhost
            return resp.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def local_server(prefect_home: Path, *, port: int | None = None,
                 timeout_s: float = SERVER_START_TIMEOUT_S) -> Iterator[str]:
    """Run `prefect server start` (API + scheduler, no UI) for the block; yields its API URL."""
    port = port or _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    log = Path(prefect_home) / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PREFECT_HOME": str(prefect_home)}
    env.pop("PREFECT_API_URL", None)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
             "--no-ui", "--analytics-off"], env=env, stdout=fh, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(api_url):
            if proc.poll() is not None:
                raise FacesurvError(f"the local Prefect server exited with code {proc.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise FacesurvError(f"the local Prefect server did not answer within {timeout_s:.0f} s; see {log}")
            time.sleep(0.5)
        yield api_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def serve_all(ws: Workspace, params: Params, *, api_url: str | None = None,
              announce: Any = print) -> None:
    """Serve both deployments until interrupted (blocks). Uses `api_url`, then
    params.flows.prefect_api_url, then a local server started here."""
    from flows import runtime

    url = api_url or params.flows.prefect_api_url
    with contextlib.ExitStack() as stack:
        if not url:
            url = stack.enter_context(local_server(ws.prefect_home))
        runtime.configure(ws.prefect_home, params, api_url=url)
        from prefect import serve

        announce(f"serving deployments nightly-embedding/{EMBEDDING_DEPLOYMENT} ({params.flows.embedding_cron}) and "
                 f"train-and-promote/{TRAINING_DEPLOYMENT} ({params.flows.training_cron}) on {url}")
        serve(*deployments(ws, params), print_starting_message=False)
