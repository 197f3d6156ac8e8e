"""Local profile end to end: idempotent writes, point-in-time training sets, materialisation, online reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import features.store as fs
from features.store.offline import read_rows


def _entity(df: pd.DataFrame, ts_col: str = "record_known_at") -> pd.DataFrame:
    return df[["patient_id", ts_col, "time_days", "event"]].rename(columns={ts_col: "event_timestamp"})


def _clinical_row(template: pd.Series, pid: str, **changes) -> dict:
    row = template.to_dict()
    row.update(patient_id=pid, photo_id=f"ph-{pid}", **changes)
    return row


def test_apply_is_idempotent(local_store):
    fs.apply_repo(local_store.repo, local_store.params)
    store = local_store.store
    assert sorted(v.name for v in store.list_feature_views()) == ["clinical", "face_latent"]
    assert [s.name for s in store.list_feature_services()] == ["prognosis_v1"]


def test_rewriting_the_same_rows_adds_nothing(local_store, make_latents):
    repo, params = local_store.repo, local_store.params
    parts_before = sorted((repo / "offline" / "face_latent").glob("part-*.parquet"))
    assert fs.write_clinical(repo, local_store.cohort, params) == 0
    rows, _ = fs.join_latents(local_store.latents, local_store.cohort, aligner_version="test-aligner-1")
    assert fs.write_latents(repo, rows, params) == 0
    assert sorted((repo / "offline" / "face_latent").glob("part-*.parquet")) == parts_before
    stored = read_rows(repo, params, "face_latent")
    assert not stored.duplicated(["photo_sha256", "generator_sha256"]).any()
    # staging leaves nothing behind
    assert list((repo / "offline" / ".staging").iterdir()) == []


def test_a_new_generator_is_a_new_row(local_store, make_latents):
    repo, params = local_store.repo, local_store.params
    pid = local_store.cohort["photo_id"].iloc[0]
    lat = local_store.latents.iloc[[0]].assign(generator_sha256="b" * 64)
    rows, _ = fs.join_latents(lat, local_store.cohort, aligner_version="test-aligner-1")
    assert fs.write_latents(repo, rows, params) == 1
    assert fs.write_latents(repo, rows, params) == 0
    stored = read_rows(repo, params, "face_latent")
    assert (stored["photo_id"] == pid).sum() == 2


def test_a_failed_write_leaves_no_part(local_store, monkeypatch, make_latents):
    import pyarrow.parquet as pq

    repo, params = local_store.repo, local_store.params
    before = sorted((repo / "offline" / "clinical").glob("part-*"))
    row = _clinical_row(local_store.cohort.iloc[0], "gbsg2-crash")

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        fs.write_clinical(repo, pd.DataFrame([row]), params)
    assert sorted((repo / "offline" / "clinical").glob("part-*")) == before
    assert list((repo / "offline" / ".staging").iterdir()) == []


def test_write_rejects_a_table_without_required_columns(local_store):
    from ground.errors import DataError

    with pytest.raises(DataError, match="lack column"):
        fs.write_clinical(local_store.repo, local_store.cohort.drop(columns=["age"]), local_store.params)


def test_write_rejects_a_latent_of_the_wrong_size(local_store):
    from ground.errors import DataError

    rows, _ = fs.join_latents(local_store.latents.head(1), local_store.cohort, aligner_version="x")
    rows.at[0, "latent"] = np.zeros(10, np.float32)
    with pytest.raises(DataError, match="expected 512"):
        fs.write_latents(local_store.repo, rows, local_store.params)


def test_training_set_is_point_in_time_correct(local_store, make_latents):
    """A record or photo registered after a patient's reference time must not reach their row."""
    repo, params = local_store.repo, local_store.params
    base = local_store.cohort.iloc[0]
    pid = "gbsg2-leak"
    early = _clinical_row(base, pid, age=50.0, photo_taken_at="2014-01-01T10:00:00+00:00",
                          record_known_at="2014-01-05T10:00:00+00:00")
    late = _clinical_row(base, pid, age=99.0, photo_taken_at="2014-01-01T10:00:00+00:00",
                         record_known_at="2014-06-01T10:00:00+00:00")
    assert fs.write_clinical(repo, pd.DataFrame([early, late]), params) == 2
    photos = pd.DataFrame({"photo_id": ["ph-early", "ph-late"], "patient_id": [pid, pid],
                           "photo_taken_at": ["2014-01-01T10:00:00+00:00", "2014-05-01T10:00:00+00:00"]})
    lat = make_latents(["ph-early", "ph-late"], seed=7)
    rows, _ = fs.join_latents(lat, photos, aligner_version="test-aligner-1")
    assert fs.write_latents(repo, rows, params) == 2

    ent = pd.DataFrame({"patient_id": [pid, pid], "event_timestamp": ["2014-02-01T00:00:00+00:00",
                                                                      "2014-07-01T00:00:00+00:00"],
                        "time_days": [100.0, 100.0], "event": [1, 1]})
    df, report = fs.training_set(repo, ent, params, store=local_store.store)
    assert report.rows_in == report.rows_out == 2
    before, after = df.iloc[0], df.iloc[1]
    assert before["age"] == 50.0 and before["photo_id"] == "ph-early"
    np.testing.assert_allclose(before["latent"], lat["latent"].iloc[0])
    assert after["age"] == 99.0 and after["photo_id"] == "ph-late"
    # labels travel with the entity rows and are not features of any view
    assert list(df["time_days"]) == [100.0, 100.0]


def test_rows_without_a_match_are_counted_and_reported(local_store):
    cohort = local_store.cohort
    ent = _entity(cohort)
    ent = pd.concat([ent, pd.DataFrame({"patient_id": ["nobody"], "event_timestamp": ["2015-01-01T00:00:00+00:00"],
                                        "time_days": [10.0], "event": [0]})], ignore_index=True)
    # one patient asked about before any of their records existed
    early = cohort.iloc[1]
    ent.loc[1, "event_timestamp"] = (pd.Timestamp(early["photo_taken_at"]) - pd.Timedelta(days=1)).isoformat()

    df, report = fs.training_set(local_store.repo, ent, local_store.params, store=local_store.store)
    n_without_latent = len(cohort) - 25
    assert report.rows_in == len(ent)
    assert report.n_unmatched == n_without_latent + 2
    assert report.rows_out == len(ent) - report.n_unmatched == len(df)
    missing = report.unmatched.set_index("patient_id")["missing"]
    assert missing["nobody"] == "face_latent,clinical"
    assert missing[early["patient_id"]] == "face_latent,clinical"
    assert missing[cohort["patient_id"].iloc[-1]] == "face_latent"
    assert report.to_dict()["unmatched_by_view"] == {"face_latent": n_without_latent + 2, "clinical": 2}

    full, report2 = fs.training_set(local_store.repo, ent, local_store.params, keep_unmatched=True,
                                    store=local_store.store)
    assert len(full) == len(ent) and list(full["patient_id"]) == list(ent["patient_id"])
    assert full.loc[len(ent) - 1, "age"] is None or pd.isna(full.loc[len(ent) - 1, "age"])


def test_training_set_needs_a_reference_time(local_store):
    from ground.errors import DataError

    with pytest.raises(DataError, match="reference time"):
        fs.training_set(local_store.repo, pd.DataFrame({"patient_id": ["x"]}), local_store.params,
                        store=local_store.store)


def test_materialize_is_incremental_and_serves_late_photos(local_store, make_latents):
    repo, params, store = local_store.repo, local_store.params, local_store.store
    first = fs.materialize(repo, params, store=store)
    assert first["clinical"] >= 30 and first["face_latent"] >= 25
    assert fs.materialize(repo, params, store=store) == {"face_latent": 0, "clinical": 0}

    # a photo taken years ago, projected tonight: its event time is far behind the last run
    pid = local_store.cohort["patient_id"].iloc[-1]
    lat = make_latents([local_store.cohort["photo_id"].iloc[-1]], seed=11)
    rows, _ = fs.join_latents(lat, local_store.cohort, aligner_version="test-aligner-1")
    assert fs.write_latents(repo, rows, params) == 1
    assert fs.materialize(repo, params, store=store) == {"face_latent": 1, "clinical": 0}

    online = fs.online_features(repo, [pid, "nobody"], params, store=store)
    assert len(online) == 2
    np.testing.assert_allclose(np.asarray(online.loc[0, "latent"], np.float32), lat["latent"].iloc[0], rtol=1e-6)
    assert online.loc[0, "aligner_version"] == "test-aligner-1"
    assert online.loc[0, "age"] == pytest.approx(float(local_store.cohort["age"].iloc[-1]))
    assert online.loc[1, "latent"] is None

    # a late photo older than what is served must not replace the newer one
    first = local_store.cohort.iloc[0]
    older = pd.DataFrame({"photo_id": ["ph-older"], "patient_id": [first["patient_id"]],
                          "photo_taken_at": [(pd.Timestamp(first["photo_taken_at"]) - pd.Timedelta(days=365)).isoformat()]})
    rows, _ = fs.join_latents(make_latents(["ph-older"], seed=12), older, aligner_version="test-aligner-1")
    assert fs.write_latents(repo, rows, params) == 1
    assert fs.materialize(repo, params, store=store)["face_latent"] == 1
    served = fs.online_features(repo, [first["patient_id"]], params, store=store)
    assert served.loc[0, "photo_id"] == first["photo_id"]


def test_join_latents_reports_what_it_cannot_attribute(cohort, make_latents):
    lat = make_latents([*cohort["photo_id"].head(3), "ph-stranger"], seed=3)
    manifest = pd.DataFrame({"photo_id": cohort["photo_id"].head(3), "status": ["aligned", "aligned", "quarantined"],
                             "aligner_version": ["dlib-68-v2", "dlib-68-v2", "dlib-68-v2"]})
    rows, unmatched = fs.join_latents(lat, cohort, manifest=manifest)
    assert list(rows["photo_id"]) == list(cohort["photo_id"].head(2))
    assert set(rows["aligner_version"]) == {"dlib-68-v2"}
    assert dict(zip(unmatched["photo_id"], unmatched["reason"], strict=True)) == {
        cohort["photo_id"].iloc[2]: "photo not aligned in the manifest",
        "ph-stranger": "photo_id not in clinical table"}
    # the manifest wins; photos it does not list fall back to the declared version
    rows, unmatched = fs.join_latents(lat, cohort, manifest=manifest, aligner_version="pre-aligned")
    assert list(rows["aligner_version"]) == ["dlib-68-v2", "dlib-68-v2", "pre-aligned"]


def test_join_latents_needs_an_aligner_version(cohort, make_latents):
    from ground.errors import DataError

    with pytest.raises(DataError, match="aligner version"):
        fs.join_latents(make_latents(["a"], seed=0), cohort)


def test_labels_never_reach_the_store(local_store):
    stored = read_rows(local_store.repo, local_store.params, "clinical")
    assert len(stored) >= 30
    assert "time_days" not in stored.columns and "event" not in stored.columns
    for view in local_store.store.list_feature_views():
        assert not {"time_days", "event"} & {f.name for f in view.features}
