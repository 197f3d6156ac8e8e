"""The scale profile against real servers: PostgreSQL (registry + offline store) and Redis (online store).

Each run uses its own Feast project (a unique name), hence its own offline tables,
registry rows and Redis keys, and removes them at the end.
"""

from __future__ import annotations

import dataclasses
import uuid
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.services


def _require_servers(params):
    from tests.conftest import require_server

    s = params.features.scale
    require_server("PostgreSQL", s.postgres_host, s.postgres_port)
    host, _, port = s.redis_connection.split(",")[0].partition(":")
    require_server("Redis", host, int(port or 6379))


@pytest.fixture(scope="module")
def scale(feat_params, cohort, make_latents, tmp_path_factory):
    import features.store as fs

    _require_servers(feat_params)
    project = f"facesurv_test_{uuid.uuid4().hex[:10]}"
    params = dataclasses.replace(
        feat_params, profile="scale", features=dataclasses.replace(feat_params.features, project=project))
    repo = tmp_path_factory.mktemp("scale_repo")
    store = fs.apply_repo(repo, params)
    lat = make_latents(cohort["photo_id"].head(25).tolist(), seed=21)
    rows, _ = fs.join_latents(lat, cohort, aligner_version="test-aligner-1")
    yield SimpleNamespace(repo=repo, params=params, store=store, rows=rows, latents=lat, cohort=cohort)
    fs.teardown_repo(repo, params)


def test_writes_are_idempotent_in_postgres(scale):
    import features.store as fs
    from features.store.offline import read_rows

    assert fs.write_clinical(scale.repo, scale.cohort, scale.params) == len(scale.cohort)
    assert fs.write_latents(scale.repo, scale.rows, scale.params) == len(scale.rows)
    assert fs.write_clinical(scale.repo, scale.cohort, scale.params) == 0
    assert fs.write_latents(scale.repo, scale.rows, scale.params) == 0
    stored = read_rows(scale.repo, scale.params, "face_latent")
    assert len(stored) == len(scale.rows)
    np.testing.assert_allclose(np.asarray(stored.sort_values("photo_id")["latent"].iloc[0], np.float32),
                               scale.latents.sort_values("photo_id")["latent"].iloc[0])


def test_point_in_time_and_unmatched_rows_in_postgres(scale, make_latents):
    import features.store as fs

    base = scale.cohort.iloc[0].to_dict()
    pid = "gbsg2-scale-leak"
    recs = [dict(base, patient_id=pid, photo_id="ph-s1", age=40.0, photo_taken_at="2014-01-01T00:00:00+00:00",
                 record_known_at="2014-01-02T00:00:00+00:00"),
            dict(base, patient_id=pid, photo_id="ph-s1", age=41.0, photo_taken_at="2014-01-01T00:00:00+00:00",
                 record_known_at="2014-09-01T00:00:00+00:00")]
    assert fs.write_clinical(scale.repo, pd.DataFrame(recs), scale.params) == 2
    lat = make_latents(["ph-s1", "ph-s2"], seed=22)
    photos = pd.DataFrame({"photo_id": ["ph-s1", "ph-s2"], "patient_id": [pid, pid],
                           "photo_taken_at": ["2014-01-01T00:00:00+00:00", "2014-08-01T00:00:00+00:00"]})
    rows, _ = fs.join_latents(lat, photos, aligner_version="v")
    assert fs.write_latents(scale.repo, rows, scale.params) == 2
    ent = pd.DataFrame({"patient_id": [pid, "nobody"], "event_timestamp": ["2014-03-01T00:00:00+00:00"] * 2,
                        "time_days": [5.0, 6.0], "event": [1, 0]})
    df, report = fs.training_set(scale.repo, ent, scale.params, store=scale.store)
    assert (report.rows_in, report.rows_out, report.n_unmatched) == (2, 1, 1)
    assert report.unmatched["patient_id"].tolist() == ["nobody"]
    assert df.loc[0, "age"] == 40.0 and df.loc[0, "photo_id"] == "ph-s1"


def test_a_table_created_before_generator_version_gains_it_in_postgres(scale, make_latents):
    """A face_latent table an older facesurv created has no generator_version column: applying or
    writing adds it (null in the rows already there), and new rows carry their version."""
    import psycopg

    import features.store as fs
    from features.store.offline import read_rows

    s, table = scale.params.features.scale, f"{scale.params.features.project}_face_latent"
    assert fs.write_latents(scale.repo, scale.rows, scale.params) == 0  # the module's rows, stored
    with psycopg.connect(host=s.postgres_host, port=s.postgres_port, dbname=s.postgres_db, user=s.postgres_user) as c:
        c.execute(f'ALTER TABLE "{table}" DROP COLUMN generator_version')
    base = scale.cohort.iloc[0].to_dict()
    pid = "gbsg2-scale-genv2"
    rec = dict(base, patient_id=pid, photo_id="ph-sv2", photo_taken_at="2014-01-01T00:00:00+00:00",
               record_known_at="2014-01-02T00:00:00+00:00")
    assert fs.write_clinical(scale.repo, pd.DataFrame([rec]), scale.params) == 1
    lat = make_latents(["ph-sv2"], seed=23, generator_version="facesurv-generator v2")
    rows, _ = fs.join_latents(lat, pd.DataFrame([rec]), aligner_version="v")
    assert fs.write_latents(scale.repo, rows, scale.params) == 1
    stored = read_rows(scale.repo, scale.params, "face_latent").set_index("photo_id")
    assert stored.loc["ph-sv2", "generator_version"] == "facesurv-generator v2"
    assert stored.loc[scale.rows["photo_id"].iloc[0], "generator_version"] is None
    ent = pd.DataFrame({"patient_id": [pid, scale.cohort["patient_id"].iloc[0]],
                        "event_timestamp": ["2014-03-01T00:00:00+00:00", scale.cohort["record_known_at"].iloc[0]],
                        "time_days": [5.0, 6.0], "event": [1, 0]})
    df, report = fs.training_set(scale.repo, ent, scale.params, store=scale.store)
    assert report.rows_out == 2
    assert df.loc[0, "generator_version"] == "facesurv-generator v2" and pd.isna(df.loc[1, "generator_version"])


def test_materialize_to_redis_and_read_online(scale):
    import features.store as fs

    done = fs.materialize(scale.repo, scale.params, store=scale.store)
    assert done["face_latent"] >= 25 and done["clinical"] >= 30
    assert fs.materialize(scale.repo, scale.params, store=scale.store) == {"face_latent": 0, "clinical": 0}
    pid = scale.cohort["patient_id"].iloc[0]
    online = fs.online_features(scale.repo, [pid, "nobody"], scale.params, store=scale.store)
    np.testing.assert_allclose(np.asarray(online.loc[0, "latent"], np.float32), scale.latents["latent"].iloc[0],
                               rtol=1e-6)
    assert online.loc[0, "tgrade"] == scale.cohort["tgrade"].iloc[0]
    assert online.loc[1, "latent"] is None


def test_teardown_removes_only_this_project(scale):
    import psycopg
    import redis

    import features.store as fs

    s = scale.params.features.scale
    project = scale.params.features.project
    fs.teardown_repo(scale.repo, scale.params)
    with psycopg.connect(host=s.postgres_host, port=s.postgres_port, dbname=s.postgres_db, user=s.postgres_user) as c:
        tables = [r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s",
                                          [f"{project}%"]).fetchall()]
        projects = c.execute("SELECT count(*) FROM projects WHERE project_id = %s", [project]).fetchone()[0]
    assert tables == [] and projects == 0
    host, _, port = s.redis_connection.split(",")[0].partition(":")
    r = redis.Redis(host=host, port=int(port or 6379))
    assert list(r.scan_iter(match=f"*{project}*", count=1000)) == []


def _nestloop(params) -> str:
    from features.store.offline import _pg_connect

    with _pg_connect(params) as conn:   # a new session: what Feast's own connections get
        return conn.execute("SHOW enable_nestloop").fetchone()[0]


def test_the_offline_store_sessions_get_the_planner_setting_the_params_ask_for(scale):
    """Feast's point-in-time query is quadratic under nested loops (docs/features.md); applying the
    repo makes it this role's default in this database, and the params can hand it back."""
    from features.store.offline import ensure_offline

    assert scale.params.features.scale.postgres_nestloop is False
    assert _nestloop(scale.params) == "off"
    on = dataclasses.replace(scale.params, features=dataclasses.replace(
        scale.params.features, scale=dataclasses.replace(scale.params.features.scale, postgres_nestloop=True)))
    try:
        ensure_offline(scale.repo, on)
        assert _nestloop(on) == "on"
    finally:
        ensure_offline(scale.repo, scale.params)
    assert _nestloop(scale.params) == "off"
