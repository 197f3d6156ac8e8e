"""Shared test set-up: quiet closed-network environment, workspaces, and service probes."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

# Before any library is imported by a test: no telemetry, no network, no user-level state.
for _k, _v in (
    ("DVC_NO_ANALYTICS", "1"), ("FEAST_USAGE", "False"), ("MLFLOW_DISABLE_TELEMETRY", "true"),
    ("GX_ANALYTICS_ENABLED", "false"), ("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
    ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"), ("DO_NOT_TRACK", "1"),
    ("TQDM_DISABLE", "1"),
):
    os.environ.setdefault(_k, _v)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_server(name: str, host: str, port: int) -> None:
    """Skip (locally) or fail (CI=true) when a service's server does not answer."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as exc:
        msg = f"{name} at {host}:{port} does not answer ({exc}); see infra/README.md to start it"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)


STRAY_STORES = ("mlflow.db", "mlruns")  # what MLflow creates in the working directory without a URI


@pytest.fixture(autouse=True)
def no_store_in_the_working_directory():
    """A library call that reaches MLflow without the workspace's tracking URI falls back to a store
    in the current directory: the test that made one fails, naming it."""
    before = {name for name in STRAY_STORES if (Path.cwd() / name).exists()}
    yield
    made = [name for name in STRAY_STORES if name not in before and (Path.cwd() / name).exists()]
    assert not made, f"this test left MLflow's default store {made} in {Path.cwd()}: a call lacks its tracking URI"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        msg = f"{SHARED} is missing (the project's shared/ folder must sit beside the checkout)"
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return SHARED


@pytest.fixture()
def workspace(tmp_path: Path):
    """A fresh workspace with a copy of the repository's params.yaml."""
    from ground.workspace import Workspace

    root = tmp_path / "ws"
    root.mkdir()
    shutil.copyfile(REPO / "params.yaml", root / "params.yaml")
    return Workspace(root)


@pytest.fixture(scope="session")
def params():
    from ground.config import load_params

    return load_params(REPO / "params.yaml")
