"""`facesurv flows serve`: both deployments with their cron schedules, visible to `prefect deployment ls`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent


def _prefect(*args: str, env: dict[str, str]) -> str:
    proc = subprocess.run([str(VENV_BIN / "prefect"), *args], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc.stdout


@pytest.mark.slow
def test_serve_shows_both_schedules(workspace, subprocess_env, tmp_path) -> None:
    env = {**subprocess_env, "COLUMNS": "250", "PREFECT_HOME": str(tmp_path / "cli-home")}
    env.pop("PREFECT_API_URL", None)
    log = tmp_path / "serve.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([str(VENV_BIN / "facesurv"), "flows", "serve", "--workspace", str(workspace.root)],
                                stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        url = None
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None:
            m = re.search(r"on (http://127\.0\.0\.1:\d+/api)", log.read_text())
            if m:
                url = m.group(1)
                break
            time.sleep(1)
        assert url, f"serve did not start: {log.read_text()[-2000:]}"
        cli_env = {**env, "PREFECT_API_URL": url}
        listing = ""
        while time.monotonic() < deadline:
            listing = _prefect("deployment", "ls", env=cli_env)
            if "nightly-embedding/nightly" in listing and "train-and-promote/weekly" in listing:
                break
            time.sleep(2)
        assert "nightly-embedding/nightly" in listing and "train-and-promote/weekly" in listing, listing
        nightly = _prefect("deployment", "inspect", "nightly-embedding/nightly", env=cli_env)
        weekly = _prefect("deployment", "inspect", "train-and-promote/weekly", env=cli_env)
        assert "0 2 * * *" in nightly and str(workspace.root) in nightly
        assert "0 4 * * 0" in weekly
        assert (workspace.prefect_home / "prefect.db").exists()  # the schedules live in the workspace
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert os.environ.get("FACESURV_KILL_AT") is None
