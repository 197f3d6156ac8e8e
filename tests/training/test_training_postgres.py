"""MLflow tracking and registry on the real PostgreSQL server (scale profile)."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import require_server

pytestmark = pytest.mark.services

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"


@pytest.fixture()
def pg_database():
    """A fresh database name; tracking_uri_for creates it, the fixture drops it afterwards."""
    import psycopg

    require_server("PostgreSQL", HOST, PORT)
    name = f"facesurv_test_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(host=HOST, port=PORT, user=USER, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_scale_profile_tracks_registers_and_promotes_on_postgres(pg_database, cohort_df, fast_params, tmp_path):
    from mlflow import MlflowClient

    from ground.config import parse_params
    from training.pipeline import train
    from training.registry import promote
    from training.tracking import tracking_uri_for

    raw = fast_params.to_dict()
    raw["profile"] = "scale"
    raw["registry"]["scale_database"] = pg_database
    raw["training"].update(models=["coxph_clinical"], fusion_members=["coxph_clinical"])
    params = parse_params(raw)
    uri = tracking_uri_for(params, tmp_path / "mlflow")
    assert uri == f"postgresql+psycopg://{USER}@{HOST}:{PORT}/{pg_database}"
    res = train(cohort_df.drop(columns=["latent"]), params=params, tracking_uri=uri,
                artifact_root=tmp_path / "mlflow" / "artifacts", split_path=tmp_path / "split.json")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.get_run(res.parent_run_id).info.status == "FINISHED"
    d = promote(tracking_uri=uri, model_name=params.registry.model_name, metric="c_index", margin=0.005,
                experiment=params.registry.experiment, artifact_root=tmp_path / "mlflow" / "artifacts")
    assert d.promoted
    assert str(client.get_model_version_by_alias(params.registry.model_name, "champion").version) == res.served_version
