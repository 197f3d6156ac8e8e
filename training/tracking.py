"""MLflow tracking: where runs go, the experiment, and what each run records.

The tracking URI is always passed in and used through an MlflowClient, never set process-wide
(training.runs); the default is a SQLite file in the workspace's mlflow/ directory, the scale
profile uses PostgreSQL. Artifacts go to the workspace's mlflow/artifacts directory in both cases.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ground.errors import ConfigError

if TYPE_CHECKING:
    from training.runs import RunLog


def quiet_environment() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")


def default_tracking_uri(mlflow_dir: Path) -> str:
    return f"sqlite:///{Path(mlflow_dir).resolve() / 'mlflow.db'}"


def postgres_uri(*, host: str, port: int, user: str, database: str) -> str:
    return f"postgresql+psycopg://{user}@{host}:{port}/{database}"


def ensure_postgres_database(*, host: str, port: int, user: str, database: str) -> None:
    """Create the tracking database on the server if it does not exist (MLflow creates tables, not databases)."""
    import psycopg

    try:
        with psycopg.connect(host=host, port=port, user=user, dbname="postgres", autocommit=True,
                             connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{database}"')
    except psycopg.OperationalError as exc:
        raise ConfigError(f"PostgreSQL at {host}:{port} is not reachable for MLflow ({str(exc).splitlines()[0]}); "
                          "start it (infra/README.md) or use profile: local") from None


def tracking_uri_for(params: Any, mlflow_dir: Path) -> str:
    """The tracking URI a workspace's profile asks for (scale: PostgreSQL, local: SQLite).

    Only computes it: the scale profile's database is created by ensure_tracking_store.
    """
    reg = params.registry
    if reg.tracking_uri:
        return reg.tracking_uri
    if params.profile == "scale":
        s = params.features.scale
        return postgres_uri(host=s.postgres_host, port=s.postgres_port, user=s.postgres_user,
                            database=reg.scale_database)
    return default_tracking_uri(mlflow_dir)


def ensure_tracking_store(params: Any) -> None:
    """Create the scale profile's tracking database if it does not exist (MLflow creates tables,
    not databases). An explicit registry.tracking_uri is the operator's store, used as it is;
    the local profile's SQLite file is created by MLflow."""
    reg = params.registry
    if reg.tracking_uri or params.profile != "scale":
        return
    s = params.features.scale
    ensure_postgres_database(host=s.postgres_host, port=s.postgres_port, user=s.postgres_user,
                             database=reg.scale_database)


def ensure_experiment(client: Any, name: str, artifact_root: Path | None) -> str:
    """Experiment id, creating it with artifacts under `artifact_root` (not the process's cwd)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    location = None
    if artifact_root is not None:
        Path(artifact_root).mkdir(parents=True, exist_ok=True)
        location = Path(artifact_root).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def dataset_frame(df: pd.DataFrame) -> pd.DataFrame:
    """What MLflow's dataset profile sees: everything but the raw latent arrays (summarised)."""
    out = df.drop(columns=["latent"], errors="ignore").copy()
    if "latent" in df.columns:
        out["latent_norm"] = [float(sum(v * v for v in row) ** 0.5) for row in df["latent"]]
    return out


def log_datasets(run: RunLog, *, train_df: pd.DataFrame, test_df: pd.DataFrame, feature_service: str,
                 data_versions: Mapping[str, str], split_id: str, split_source: str, source: str) -> None:
    """The training and test sets as the run's dataset inputs (what mlflow.log_input records),
    naming where the data came from.

    `source` is a local path or URI MLflow can resolve (the data file or the Feast repo); the
    Feast feature service, the DVC revisions and the split travel in the dataset's name and tags.
    """
    # mlflow.data.from_pandas is this function, attached at run time (invisible to type checkers)
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    tags = {"feature_service": feature_service, "split_id": split_id, "split_file": split_source}
    tags.update({f"dvc.{k}": str(v) for k, v in data_versions.items()})
    for ctx, part in (("training", train_df), ("testing", test_df)):
        ds = from_pandas(dataset_frame(part), source=source, targets="event",
                         name=f"{feature_service}-{ctx}-{split_id}")
        # _to_mlflow_entity is how mlflow.log_input itself turns a Dataset into the stored entity
        entry = DatasetInput(ds._to_mlflow_entity(), tags=[*(InputTag(k, v) for k, v in tags.items()),
                                                            InputTag(MLFLOW_DATASET_CONTEXT, ctx)])
        run.client.log_inputs(run.run_id, datasets=[entry])


def clean_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """MLflow rejects nothing but NaNs make comparisons lie: drop undefined metrics."""
    import math

    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
