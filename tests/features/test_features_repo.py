"""Feature repo definitions and rendered infrastructure (no store applied)."""

from __future__ import annotations

import dataclasses

import pytest
import yaml


@pytest.mark.parametrize("base", ["gbsg2", "whas500", "flchain", "veterans_lung_cancer", "aids"])
def test_clinical_view_schema_follows_the_base(base, feat_params, tmp_path):
    from features.cohort import covariate_columns
    from features.feature_repo.definitions import feature_objects

    numeric, categorical = covariate_columns(base)
    objs = feature_objects(base=base, profile="local", locations={"face_latent": str(tmp_path / "l"),
                                                                  "clinical": str(tmp_path / "c")},
                           ttl_days=10, service_name="prognosis_v1")
    clinical = next(o for o in objs if getattr(o, "name", "") == "clinical")
    types = {f.name: str(f.dtype) for f in clinical.schema}
    assert types["age"] == "Float64" and types["sex"] == "String" and types["cancer_type"] == "String"
    assert set(types) == {"age", "sex", "cancer_type", *numeric, *categorical}
    assert all(types[c] == "Float64" for c in numeric)
    assert all(types[c] == "String" for c in categorical)
    # labels never become features
    assert "time_days" not in types and "event" not in types


def test_latent_view_and_service(feat_params, tmp_path):
    from features.feature_repo.definitions import feature_objects

    objs = feature_objects(base="gbsg2", profile="local", locations={"face_latent": str(tmp_path / "l"),
                                                                     "clinical": str(tmp_path / "c")},
                           ttl_days=10, service_name="prognosis_v1")
    entity, latent, clinical, service = objs
    assert entity.join_key == "patient_id"
    types = {f.name: str(f.dtype) for f in latent.schema}
    assert types["latent"] == "Array(Float32)"
    assert {"generator_sha256", "aligner_version", "photo_sha256", "perceptual_loss"} <= set(types)
    assert types["generator_version"] == "String"
    assert latent.batch_source.timestamp_field == "photo_taken_at"
    assert clinical.batch_source.timestamp_field == "record_known_at"
    assert service.name == "prognosis_v1"
    assert {p.name for p in service.feature_view_projections} == {"face_latent", "clinical"}


def test_render_local_profile(feat_params, tmp_path):
    from features.store import render_store_yaml

    cfg = yaml.safe_load(render_store_yaml(tmp_path, feat_params).read_text())
    assert cfg["project"] == feat_params.features.project
    assert cfg["online_store"] == {"type": "sqlite", "path": str(tmp_path.resolve() / "online.db")}
    assert cfg["offline_store"] == {"type": "duckdb"}
    assert cfg["registry"]["registry_type"] == "file"


def test_render_scale_profile(feat_params, tmp_path):
    from features.store import render_store_yaml

    scale = dataclasses.replace(feat_params, profile="scale")
    cfg = yaml.safe_load(render_store_yaml(tmp_path, scale).read_text())
    s = feat_params.features.scale
    assert cfg["online_store"] == {"type": "redis", "connection_string": s.redis_connection}
    assert cfg["offline_store"]["type"] == "postgres"
    assert cfg["offline_store"]["host"] == s.postgres_host and cfg["offline_store"]["port"] == s.postgres_port
    assert cfg["registry"]["registry_type"] == "sql"
    assert cfg["registry"]["path"].startswith("postgresql+psycopg://")


def test_unknown_profile_template_is_a_config_error(feat_params, tmp_path, monkeypatch):
    from features.store import repo
    from ground.errors import ConfigError

    monkeypatch.setattr(repo, "TEMPLATE_DIR", tmp_path / "none")
    with pytest.raises(ConfigError, match="no feature_store template"):
        repo.render_store_yaml(tmp_path, feat_params)


@pytest.mark.parametrize(("key", "value", "match"), [
    ("postgres_port", 0, "postgres_port must be a TCP port"),
    ("postgres_db", "", "must not be empty"),
    ("redis_connection", "localhost", "redis_connection must be host:port"),
])
def test_scale_params_are_checked(feat_params, key, value, match):
    from ground.config import with_overrides
    from ground.errors import ConfigError

    raw_scale = dataclasses.asdict(feat_params.features.scale) | {key: value}
    with pytest.raises(ConfigError, match=match):
        with_overrides(feat_params, features={"scale": raw_scale})
