"""MLflow tracking and registry on the real PostgreSQL server (scale profile)."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import require_server

pytestmark = pytest.mark.services

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"


def _exists(name: str) -> bool:
    import psycopg

    with psycopg.connect(host=HOST, port=PORT, user=USER, dbname="postgres", autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


@pytest.fixture()
def pg_database():
    """A fresh database name; ensure_tracking_store creates it, the fixture drops it afterwards."""
    import psycopg

    require_server("PostgreSQL", HOST, PORT)
    name = f"facesurv_test_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(host=HOST, port=PORT, user=USER, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _scale_params(fast_params, database: str):
    from ground.config import parse_params

    raw = fast_params.to_dict()
    raw["profile"] = "scale"
    raw["registry"]["scale_database"] = database
    raw["training"].update(models=["coxph_clinical"], fusion_members=["coxph_clinical"])
    return parse_params(raw)


def test_tracking_uri_for_the_scale_profile_creates_no_database(pg_database, fast_params, tmp_path):
    from training.tracking import ensure_tracking_store, tracking_uri_for

    params = _scale_params(fast_params, pg_database)
    assert tracking_uri_for(params, tmp_path / "mlflow") == f"postgresql+psycopg://{USER}@{HOST}:{PORT}/{pg_database}"
    assert not _exists(pg_database)
    ensure_tracking_store(params)
    assert _exists(pg_database)
    ensure_tracking_store(params)  # idempotent
    assert _exists(pg_database)


def test_scale_profile_tracks_registers_and_promotes_on_postgres(pg_database, cohort_df, fast_params, tmp_path):
    from mlflow import MlflowClient

    from training.gates import GatePolicy
    from training.pipeline import train
    from training.registry import promote
    from training.tracking import ensure_tracking_store, tracking_uri_for

    params = _scale_params(fast_params, pg_database)
    ensure_tracking_store(params)
    uri = tracking_uri_for(params, tmp_path / "mlflow")
    assert uri == f"postgresql+psycopg://{USER}@{HOST}:{PORT}/{pg_database}"
    res = train(cohort_df.drop(columns=["latent"]), params=params, tracking_uri=uri,
                artifact_root=tmp_path / "mlflow" / "artifacts", split_path=tmp_path / "split.json")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.get_run(res.parent_run_id).info.status == "FINISHED"
    d = promote(tracking_uri=uri, model_name=params.registry.model_name, policy=GatePolicy.from_params(params),
                experiment=params.registry.experiment, artifact_root=tmp_path / "mlflow" / "artifacts")
    assert d.promoted
    assert str(client.get_model_version_by_alias(params.registry.model_name, "champion").version) == res.served_version
