"""The weekly training flow: training set from Feast -> train -> evaluate -> register -> promote.

Each task is one step of flows/training_steps.py (a library call with the workspace's paths). The run's
lineage record (artifacts/lineage) carries the data repository revision the features came
from, which training also logs with its MLflow run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import training_steps
from flows.faults import checkpoint
from flows.progress import heartbeat
from flows.runtime import as_task
from ground.workspace import Workspace

FLOW_NAME = "train-and-promote"

training_set = as_task(training_steps.build_training_set, "training-set", io=True)
train = as_task(training_steps.train, "train-evaluate-register")
write_metrics = as_task(training_steps.write_metrics, "write-metrics", io=True)
promote = as_task(training_steps.promote, "promote", io=True)


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
        with heartbeat("building the point-in-time training set"):
            frame = training_set(ws, params)
        checkpoint("train:training-set")
        with heartbeat("training and evaluating the models"):
            trained = train(ws, params, frame, lineage)
        checkpoint("train:trained")
        metrics = write_metrics(ws, trained)
        decision = promote(ws, params)
        record.outputs.update({"training_set": str(frame), "metrics": metrics["models"],
                               "model_versions": metrics["model_versions"],
                               "model_artifacts_sha256": metrics["model_artifacts_sha256"], "promotion": decision})
        return {"flow_run_id": record.flow_run_id, "data_rev": record.data_rev, **record.outputs}
