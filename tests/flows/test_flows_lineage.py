"""Lineage records: every run says what data, code and params it ran on."""

from __future__ import annotations

import json

import pytest

from flows.lineage import read_latest, run_context
from ground.workspace import code_version


def test_completed_run_is_recorded_and_becomes_latest(workspace, params) -> None:
    with run_context(workspace, params, "demo-flow") as rec:
        rec.data_rev = "abc123"
        rec.outputs["n"] = 3
    path = workspace.artifacts_dir / "lineage" / "flow_runs" / f"{rec.flow_run_id}.json"
    saved = json.loads(path.read_text())
    assert saved["status"] == "completed" and saved["data_rev"] == "abc123"
    assert saved["params_hash"] == params.params_hash and len(params.params_hash) == 64
    assert saved["code_version"] == code_version()
    assert read_latest(workspace.artifacts_dir, "demo-flow")["flow_run_id"] == rec.flow_run_id


def test_failed_run_is_recorded_but_not_latest(workspace, params) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with run_context(workspace, params, "demo-flow") as rec:
            raise RuntimeError("boom")
    saved = json.loads((workspace.artifacts_dir / "lineage" / "flow_runs" / f"{rec.flow_run_id}.json").read_text())
    assert saved["status"] == "failed" and saved["error"] == "RuntimeError: boom"
    assert read_latest(workspace.artifacts_dir, "demo-flow") is None


def test_code_version_outside_git_is_unknown(tmp_path) -> None:
    assert code_version(tmp_path) == "unknown"
    assert code_version() != ""


def test_params_hash_changes_with_params(params) -> None:
    from ground.config import with_overrides

    other = with_overrides(params, flows={"lock_timeout_s": 1.0})
    assert other.params_hash != params.params_hash


_KILLED_RUN = """
import sys, time
from types import SimpleNamespace
from pathlib import Path
from flows.lineage import run_context
ws = SimpleNamespace(artifacts_dir=Path(sys.argv[1]))
with run_context(ws, SimpleNamespace(params_hash="p"), "killed-flow") as rec:
    print(rec.flow_run_id, flush=True)
    time.sleep(600)
"""


def test_a_run_killed_mid_way_is_marked_crashed_by_the_next(workspace, params, repo_root) -> None:
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(workspace.artifacts_dir)], cwd=repo_root,
                            stdout=subprocess.PIPE, text=True)
    killed_id = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    runs = workspace.artifacts_dir / "lineage" / "flow_runs"
    assert json.loads((runs / f"{killed_id}.json").read_text())["status"] == "running"
    with run_context(workspace, params, "demo-flow") as rec:
        alive = json.loads((runs / f"{rec.flow_run_id}.json").read_text())
        assert alive["status"] == "running"  # this run's own process is alive: left alone
    saved = json.loads((runs / f"{killed_id}.json").read_text())
    assert saved["status"] == "crashed" and saved["finished_at"]
    assert f"process {proc.pid}" in saved["error"] and rec.flow_run_id in saved["error"]
    assert read_latest(workspace.artifacts_dir, "killed-flow") is None


def test_a_reused_pid_does_not_keep_a_dead_run_running(workspace, params) -> None:
    from flows.lineage import RunRecord, mark_crashed_runs, this_process, write_record

    ghost = RunRecord(flow="old", flow_run_id="ghost", params_hash="p", code_version="c",
                      process={**this_process(), "start": "1"})  # our pid, another process's start time
    elsewhere = RunRecord(flow="old", flow_run_id="elsewhere", params_hash="p", code_version="c",
                          process={"host": "another-host", "pid": 1, "start": "1"})
    write_record(workspace.artifacts_dir, ghost)
    write_record(workspace.artifacts_dir, elsewhere)
    assert mark_crashed_runs(workspace.artifacts_dir, found_by="now") == ["ghost"]
