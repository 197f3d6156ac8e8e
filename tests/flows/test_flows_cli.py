"""`facesurv flows` commands: clear errors, no half-run flows."""

from __future__ import annotations

from facesurv.cli import main


def test_flows_help_lists_run_and_serve(capsys) -> None:
    assert main(["flows", "--help"]) == 0
    text = capsys.readouterr().out
    assert "run" in text and "serve" in text


def test_unknown_flow_is_refused_with_the_choices(workspace, capsys) -> None:
    assert main(["flows", "run", "nightly", "--workspace", str(workspace.root)]) == 2
    err = capsys.readouterr().err
    assert "unknown flow 'nightly'" in err and "nightly-embedding, train-and-promote" in err


def test_bad_dask_worker_count_is_refused(workspace, capsys) -> None:
    assert main(["flows", "run", "nightly-embedding", "--dask-workers", "0", "--workspace", str(workspace.root)]) == 2
    assert "--dask-workers must be >= 1" in capsys.readouterr().err


def test_missing_workspace_says_how_to_fix(tmp_path, capsys) -> None:
    assert main(["flows", "run", "nightly-embedding", "--workspace", str(tmp_path / "nope")]) == 2
    assert "no params.yaml here" in capsys.readouterr().err


def test_task_runner_choice(params) -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.nightly_embedding import task_runner_for
    from ground.config import with_overrides

    assert isinstance(task_runner_for(params), ThreadPoolTaskRunner)
    assert isinstance(task_runner_for(params, dask_workers=2), DaskTaskRunner)
    remote = task_runner_for(with_overrides(params, flows={"dask_scheduler": "tcp://127.0.0.1:8786"}))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://127.0.0.1:8786"


def test_runtime_sets_prefect_home_and_timeouts(workspace, params, monkeypatch) -> None:
    from flows import runtime

    for key in ("PREFECT_HOME", "PREFECT_API_URL", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"):
        monkeypatch.delenv(key, raising=False)
    env = runtime.prefect_env(workspace.prefect_home, params, api_url="http://127.0.0.1:4200/api")
    assert env["PREFECT_HOME"] == str(workspace.prefect_home)
    assert env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == "120"
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false" and env["PREFECT_API_URL"].endswith("/api")
    assert "PREFECT_API_URL" not in runtime.prefect_env(workspace.prefect_home, params)
