"""The weekly training flow: training set from Feast -> train -> evaluate -> register -> promote.

Each task calls one step (flows/training_steps.py) that wraps one library call. The run's
lineage record (artifacts/lineage) carries the data repository revision the features came
from, which training also logs with its MLflow run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows import training_steps
from flows.faults import checkpoint
from ground.config import Params
from ground.workspace import Workspace

# Only tasks that touch the file system or a remote retry; computations would fail the same way again.
IO_RETRIES, IO_RETRY_DELAY_S = 2, 2
FLOW_NAME = "train-and-promote"


@task(name="training-set", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAY_S, cache_policy=NO_CACHE)
def training_set(ws: Workspace, params: Params) -> Path:
    return training_steps.build_training_set(ws, params)


@task(name="train-evaluate-register", cache_policy=NO_CACHE)
def train(ws: Workspace, params: Params, frame_path: Path, lineage: dict[str, Any]) -> Any:
    return training_steps.train(ws, params, frame_path, lineage)


@task(name="write-metrics", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAY_S, cache_policy=NO_CACHE)
def write_metrics(ws: Workspace, result: Any) -> dict[str, Any]:
    return training_steps.write_metrics(ws, result)


@task(name="promote", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAY_S, cache_policy=NO_CACHE)
def promote(ws: Workspace, params: Params) -> dict[str, Any]:
    return training_steps.promote(ws, params)


@flow(name=FLOW_NAME, log_prints=True)
def train_and_promote(workspace: str) -> dict[str, Any]:
    """Train on the current features and promote the challenger if it beats the champion."""
    from features.versioning import data_revision
    from flows.lineage import read_latest, run_context

    ws = Workspace.resolve(workspace)
    params = ws.load_params()
    with run_context(ws, params, FLOW_NAME) as record:
        latest = read_latest(ws.artifacts_dir, "nightly-embedding") or {}
        record.data_rev = data_revision(ws.data_dir)
        record.data_md5 = dict(latest.get("data_md5") or {})
        lineage = {"data_rev": record.data_rev, "data_md5": record.data_md5, "code_version": record.code_version,
                   "params_hash": record.params_hash, "flow_run_id": record.flow_run_id,
                   "features_from_flow_run": latest.get("flow_run_id")}
        frame = training_set(ws, params)
        checkpoint("train:training-set")
        trained = train(ws, params, frame, lineage)
        checkpoint("train:trained")
        metrics = write_metrics(ws, trained)
        decision = promote(ws, params)
        record.outputs.update({"training_set": str(frame), "metrics": metrics["models"],
                               "model_versions": metrics["model_versions"],
                               "model_artifacts_sha256": metrics["model_artifacts_sha256"], "promotion": decision})
        return {"flow_run_id": record.flow_run_id, "data_rev": record.data_rev, **record.outputs}
