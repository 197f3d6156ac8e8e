"""Lineage records: every run says what data, code and params it ran on."""

from __future__ import annotations

import json

import pytest

from flows.lineage import code_version, read_latest, run_context


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
    from facesurv.config import with_overrides

    other = with_overrides(params, flows={"lock_timeout_s": 1.0})
    assert other.params_hash != params.params_hash
