"""MLflow runs through one explicit client.

MLflow's fluent API (mlflow.start_run, mlflow.log_*) works on process-wide state: the tracking
URI set with mlflow.set_tracking_uri and a stack of active runs. A library that sets those
changes what every other caller in the process talks to, so runs here are created, written and
ended through the MlflowClient they are given. `open_run` records what mlflow.start_run would:
the run name, the parent, MLflow's context tags (user, source), and FINISHED or FAILED at the end.
`scoped_tracking_uri` is for the one MLflow call that ignores its client (registering a
`models:/<model_id>` source in a SQL registry): the global is set for that call and restored.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunLog:
    """Writes to one run of `client`'s store."""

    client: Any
    run_id: str
    experiment_id: str

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, 0, run_id=self.run_id)
                                                    for k, v in metrics.items()])

    def log_json(self, obj: Any, artifact_file: str) -> None:
        # through JSON once: numpy numbers, paths and the like become what json.dump can write
        self.client.log_dict(self.run_id, json.loads(json.dumps(obj, default=str)), artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_table(self, table: Any, artifact_file: str) -> None:
        self.client.log_table(self.run_id, table, artifact_file)


@contextlib.contextmanager
def open_run(client: Any, *, experiment_id: str, name: str, parent: RunLog | None = None,
             continue_run: str | None = None) -> Iterator[RunLog]:
    """A new run (nested under `parent` if given), or the run `continue_run` set RUNNING again (an
    interrupted job resuming); ended FINISHED, or FAILED when the block raises."""
    from mlflow.entities import RunStatus
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    if continue_run is not None:
        client.update_run(continue_run, status="RUNNING")
        log = RunLog(client, continue_run, experiment_id)
    else:
        tags = {MLFLOW_RUN_NAME: name}
        if parent is not None:
            tags[MLFLOW_PARENT_RUN_ID] = parent.run_id
        run = client.create_run(experiment_id, tags=resolve_tags(tags), run_name=name)
        log = RunLog(client, run.info.run_id, experiment_id)
    try:
        yield log
    except BaseException:
        client.set_terminated(log.run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    client.set_terminated(log.run_id, RunStatus.to_string(RunStatus.FINISHED))


_PROCESS_URI_LOCK = threading.RLock()  # a scope may open inside another (a test sentinel)
_TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


@contextlib.contextmanager
def scoped_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking URI set to `uri` for a block, then put back exactly as it was.

    Only for MLflow calls that ignore the client they are reached through (see
    training.registry.register_version). The previous value, including "never set" and the
    MLFLOW_TRACKING_URI variable mlflow.set_tracking_uri also writes, is restored in every case;
    the lock keeps two such blocks in this process from interleaving.
    """
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with _PROCESS_URI_LOCK:
        before, env = tracking_utils._tracking_uri, os.environ.get(_TRACKING_URI_ENV)
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(before)  # type: ignore[arg-type]  # None clears the URI and the variable
            if env is not None:
                os.environ[_TRACKING_URI_ENV] = env
