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
from flows.openlineage_events import task_hooks
from flows.progress import heartbeat
from flows.runtime import as_task
from ground.workspace import Workspace

FLOW_NAME = "train-and-promote"

training_set = as_task(training_steps.build_training_set, "training-set", io=True, **task_hooks())
train = as_task(training_steps.train, "train-evaluate-register", **task_hooks())
write_metrics = as_task(training_steps.write_metrics, "write-metrics", io=True, **task_hooks())
promote = as_task(training_steps.promote, "promote", io=True, **task_hooks())
rescore = as_task(training_steps.rescore_after_promotion, "rescore-after-promotion", io=True, **task_hooks())


def lineage_datasets(ws: Workspace, params: Any, record: Any, metrics: dict[str, Any],
                     decision: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read: the Feast feature views and the DVC data they came from; wrote: the registered models."""
    from features.feature_repo.schema import (
        CLINICAL_VIEW,
        LATENT_FEATURES,
        LATENT_VIEW,
        clinical_features,
    )
    from flows import openlineage_datasets as ol

    views = {LATENT_VIEW: LATENT_FEATURES, CLINICAL_VIEW: clinical_features(params.cohort.base)}
    inputs = [*ol.feature_view_datasets(project=params.features.project, service=params.features.feature_service,
                                        views=views, latent_view=LATENT_VIEW),
              *ol.dvc_datasets(ws.data_dir, rev=record.data_rev, md5=record.data_md5)]
    return inputs, ol.model_datasets(metrics.get("model_versions") or {}, champion=decision)


@flow(name=FLOW_NAME, log_prints=True)
def train_and_promote(workspace: str) -> dict[str, Any]:
    """Train on the current features and promote the challenger if it beats the champion."""
    from features.versioning import data_revision
    from flows.lineage import read_latest, run_context

    ws = Workspace.resolve(workspace)
    params = ws.load_params()
    with run_context(ws, params, FLOW_NAME, description=__doc__.splitlines()[0]) as record:
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
        rescored = rescore(ws, params, decision, requested_by=f"{FLOW_NAME}:{record.flow_run_id}")
        if rescored is not None:
            record.outputs["rescored"] = rescored
        record.input_datasets, record.output_datasets = lineage_datasets(ws, params, record, metrics, decision)
        record.outputs.update({"training_set": str(frame), "metrics": metrics["models"],
                               "model_versions": metrics["model_versions"],
                               "model_artifacts_sha256": metrics["model_artifacts_sha256"], "promotion": decision})
        return {"flow_run_id": record.flow_run_id, "data_rev": record.data_rev, **record.outputs}
