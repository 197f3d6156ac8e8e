"""The generator-training flow: train (or resume) a StyleGAN2 + ADA generator on the workspace's
aligned photos, register it, and optionally promote it so the nightly flow re-embeds with it.

One task around flows.generator_steps.train_generator, the engine `facesurv generator train` runs.
Its lineage record (artifacts/lineage) names the photos' DVC revision, the run and the version.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import generator_steps
from flows.openlineage_events import task_hooks
from flows.runtime import as_task
from ground.workspace import Workspace

FLOW_NAME = "generator-training"

train_task = as_task(generator_steps.train_generator, "train-generator", **task_hooks())


def lineage_datasets(ws: Workspace, params: Any,
                     result: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read: the photos at their DVC revision; wrote: the registered generator version (if registered)."""
    from flows import openlineage_datasets as ol

    photos = [{"kind": "dvc", "path": str(ws.data_dir / "photos"), "out": "photos",
               "rev": result.get("photos_dvc_rev"), "md5": None}]
    if result.get("version") is None:
        return photos, []
    return photos, [ol.generator_dataset(name=params.generator_training.registered_name, version=result["version"],
                                         sha256=result.get("sha256"), run_id=result.get("mlflow_run_id"))]


@flow(name=FLOW_NAME, log_prints=True)
def generator_training(workspace: str, kimg: float | None = None, promote: bool = False) -> dict[str, Any]:
    """Train the workspace's generator to `kimg` (default generator_training.kimg), register it as
    a challenger and, with promote, make it the champion."""
    from flows.lineage import run_context

    ws = Workspace.resolve(workspace)
    params = ws.load_params()
    with run_context(ws, params, FLOW_NAME, description=__doc__.splitlines()[0]) as record:
        result = train_task(ws, params, kimg=kimg)
        record.data_rev = result["photos_dvc_rev"]
        record.input_datasets, record.output_datasets = lineage_datasets(ws, params, result)
        if promote and result["version"] is not None:
            result["promoted"] = generator_steps.promote(ws, params, result["version"])
        record.outputs.update(result)
        return {"flow_run_id": record.flow_run_id, **result}
