"""The generator-training flow: train (or resume) a StyleGAN2 + ADA generator on the workspace's
aligned photos, register it, and optionally promote it so the nightly flow re-embeds with it.

One task around flows.generator_steps.train_generator, the engine `facesurv generator train` runs.
Its lineage record (artifacts/lineage) names the photos' DVC revision, the run and the version.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows import generator_steps
from flows.runtime import as_task
from ground.workspace import Workspace

FLOW_NAME = "generator-training"

train_task = as_task(generator_steps.train_generator, "train-generator")


@flow(name=FLOW_NAME, log_prints=True)
def generator_training(workspace: str, kimg: float | None = None, promote: bool = False) -> dict[str, Any]:
    """Train the workspace's generator to `kimg` (default generator_training.kimg), register it as
    a challenger and, with promote, make it the champion."""
    from flows.lineage import run_context

    ws = Workspace.resolve(workspace)
    params = ws.load_params()
    with run_context(ws, params, FLOW_NAME) as record:
        result = train_task(ws, params, kimg=kimg)
        record.data_rev = result["photos_dvc_rev"]
        if promote and result["version"] is not None:
            result["promoted"] = generator_steps.promote(ws, params, result["version"])
        record.outputs.update(result)
        return {"flow_run_id": record.flow_run_id, **result}
