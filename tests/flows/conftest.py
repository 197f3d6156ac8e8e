"""Flows fixtures: git identity for data repositories, tiny inboxes, one Prefect API per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.flows.flows_helpers import GIT_ENV


@pytest.fixture(autouse=True)
def _git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in GIT_ENV.items():
        monkeypatch.setenv(k, v)


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect test API for the whole session (its start costs 15-20 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        from prefect.settings import PREFECT_API_URL

        yield PREFECT_API_URL.value()


@pytest.fixture()
def subprocess_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, **GIT_ENV}
    env.pop("FACESURV_KILL_AT", None)
    return env
