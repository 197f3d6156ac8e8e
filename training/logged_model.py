"""Logging a pyfunc model into a run through an explicit MlflowClient.

mlflow.pyfunc.log_model resolves the store from MLflow's process-wide tracking URI (it builds its
own MlflowClient() and logs the model_config through the fluent API), so it would write to
whatever store the process last set. This does what it does for a pyfunc without an input
example, every step on the given client, in the same order:

    create the LoggedModel (the run's params, MLflow's context tags) -> record it as the run's
    output and link the run's step-0 metrics to it -> mlflow.pyfunc.save_model into a temporary
    directory -> upload that directory -> log the model_config as run params -> READY (FAILED if
    any step raised)
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def log_pyfunc(client: Any, *, run_id: str, name: str, python_model: Path, artifacts: Mapping[str, str],
               model_config: Mapping[str, Any], signature: Any, pip_requirements: Sequence[str],
               metadata: Mapping[str, Any]) -> tuple[str, str]:
    """Log a models-from-code pyfunc (`python_model` is its code file) in `run_id`; (model_id, model_uri)."""
    import mlflow.pyfunc
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Param
    from mlflow.models import Model
    from mlflow.tracking.context.registry import resolve_tags

    run = client.get_run(run_id)
    logged = client.create_logged_model(run.info.experiment_id, name=name, source_run_id=run_id,
                                        tags=resolve_tags(),
                                        params={k: str(v) for k, v in run.data.params.items()})
    try:
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        _link_step_metrics(client, model_id=logged.model_id, run_id=run_id, step=0)
        with tempfile.TemporaryDirectory(prefix="facesurv-pyfunc-") as tmp:
            local = Path(tmp) / "model"
            spec = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id,
                         metadata=dict(metadata), model_id=logged.model_id)
            mlflow.pyfunc.save_model(path=str(local), mlflow_model=spec, python_model=str(python_model),
                                     artifacts=dict(artifacts), model_config=dict(model_config),
                                     signature=signature, pip_requirements=list(pip_requirements))
            # save_model imports the code file to check it; its bytecode is not part of the model
            for cache in local.rglob("__pycache__"):
                shutil.rmtree(cache, ignore_errors=True)
            client.log_model_artifacts(logged.model_id, str(local))
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in model_config.items()])
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return logged.model_id, f"models:/{logged.model_id}"


def _link_step_metrics(client: Any, *, model_id: str, run_id: str, step: int) -> None:
    """Attach the run's metrics of `step` to the model (what log_model does, so the model's page
    shows the test metrics it was logged with)."""
    from mlflow.entities import Metric

    linked = [Metric(key=m.key, value=m.value, timestamp=m.timestamp, step=m.step, dataset_name=m.dataset_name,
                     dataset_digest=m.dataset_digest, run_id=m.run_id, model_id=model_id)
              for key in client.get_run(run_id).data.metrics
              for m in client.get_metric_history(run_id, key) if m.step == step and m.model_id is None]
    client.log_batch(run_id, metrics=linked)
