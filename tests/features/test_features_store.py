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


def test_the_generator_version_reaches_training_sets_and_the_online_store(local_store, make_latents):
    """A latent names the registry version of its generator; a table without one (None, or an older
    latents.parquet without the column, as the session store's) gives a null version."""
    repo, params, store = local_store.repo, local_store.params, local_store.store
    base = local_store.cohort.iloc[0]
    versions = {"gbsg2-gen-v2": "facesurv-generator v2", "gbsg2-gen-none": None}
    clinical = pd.DataFrame([_clinical_row(base, pid, photo_taken_at="2014-03-01T10:00:00+00:00",
                                           record_known_at="2014-03-02T10:00:00+00:00") for pid in versions])
    assert fs.write_clinical(repo, clinical, params) == 2
    for i, (pid, version) in enumerate(versions.items()):
        lat = make_latents([f"ph-{pid}"], seed=30 + i, generator_version=version)
        rows, unmatched = fs.join_latents(lat, clinical, aligner_version="test-aligner-1")
        assert unmatched.empty
        assert fs.write_latents(repo, rows, params) == 1
    # the same photo and weights under another registry name are the same row: the name is lineage
    renamed = make_latents(["ph-gbsg2-gen-v2"], seed=30, generator_version="facesurv-generator v3")
    assert fs.write_latents(repo, fs.join_latents(renamed, clinical, aligner_version="test-aligner-1")[0],
                            params) == 0

    old = local_store.cohort.iloc[[2]]  # written from a latent table without the column
    stored = read_rows(repo, params, "face_latent").set_index("patient_id")
    assert stored.loc["gbsg2-gen-v2", "generator_version"] == "facesurv-generator v2"
    assert stored.loc["gbsg2-gen-none", "generator_version"] is None
    assert stored.loc[old["patient_id"].iloc[0], "generator_version"] is None

    ent = pd.concat([pd.DataFrame({"patient_id": list(versions), "event_timestamp": "2014-04-01T00:00:00+00:00",
                                   "time_days": 100.0, "event": 1}), _entity(old)], ignore_index=True)
    df, report = fs.training_set(repo, ent, params, store=store)
    assert report.rows_out == 3
    got = df.set_index("patient_id")["generator_version"]
    assert got["gbsg2-gen-v2"] == "facesurv-generator v2"
    assert pd.isna(got["gbsg2-gen-none"]) and pd.isna(got[old["patient_id"].iloc[0]])

    fs.materialize(repo, params, store=store)
    online = fs.online_features(repo, [*versions, old["patient_id"].iloc[0]], params, store=store)
    assert online["generator_version"].tolist()[0] == "facesurv-generator v2"
    assert online["generator_version"].tolist()[1:] == [None, None]


def test_a_part_stored_before_generator_version_reads_as_null(local_store, make_latents):
    """A face_latent part an older facesurv wrote has no generator_version column. Read directly it
    gives null; re-applying the repo (every flow and `facesurv features` command does) rewrites it
    with a null column, so Feast, which reads every part with one schema, can read the view again."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from features.store.offline import _arrow_schema, _upgrade_local_parts

    repo, params, store = local_store.repo, local_store.params, local_store.store
    pid = "gbsg2-old-part"
    clinical = pd.DataFrame([_clinical_row(local_store.cohort.iloc[0], pid, photo_taken_at="2014-03-01T10:00:00+00:00",
                                           record_known_at="2014-03-02T10:00:00+00:00")])
    assert fs.write_clinical(repo, clinical, params) == 1
    lat = make_latents([f"ph-{pid}"], seed=40, generator_version="facesurv-generator v2")
    rows, _ = fs.join_latents(lat, clinical, aligner_version="test-aligner-1")
    directory = repo / "offline" / "face_latent"
    before = set(directory.glob("part-*.parquet"))
    assert fs.write_latents(repo, rows, params) == 1
    (part,) = set(directory.glob("part-*.parquet")) - before
    # the same rows as the old code wrote them: its schema had no generator_version; named to sort
    # first, as the oldest part of a store does
    new_schema = _arrow_schema("face_latent", params.cohort.base)
    old_schema = pa.schema([f for f in new_schema if f.name != "generator_version"])
    old_rows = pq.read_table(part).to_pandas().drop(columns=["generator_version"])
    legacy = directory / "part-00000000T000000000000-legacy.parquet"
    pq.write_table(pa.Table.from_pandas(old_rows, schema=old_schema, preserve_index=False), legacy)
    part.unlink()

    stored = read_rows(repo, params, "face_latent").set_index("patient_id")
    assert stored.loc[pid, "generator_version"] is None

    fs.apply_repo(repo, params)
    assert pq.read_schema(legacy).names == new_schema.names
    assert _upgrade_local_parts(repo, "face_latent", params.cohort.base) == 0  # once is enough
    assert list((repo / "offline" / ".staging").iterdir()) == []
    ent = pd.DataFrame({"patient_id": [pid, local_store.cohort["patient_id"].iloc[2]],
                        "event_timestamp": ["2014-04-01T00:00:00+00:00",
                                            local_store.cohort["record_known_at"].iloc[2]],
                        "time_days": [1.0, 1.0], "event": [0, 0]})
    df, report = fs.training_set(repo, ent, params, store=store)
    assert report.rows_out == 2
    np.testing.assert_allclose(df.loc[0, "latent"], lat["latent"].iloc[0])
    assert pd.isna(df.loc[0, "generator_version"])
    # the dedupe keys were kept: the same rows again add nothing
    assert fs.write_latents(repo, rows, params) == 0


def test_a_store_from_before_generator_version_upgrades_and_serves_null(tmp_path, feat_params, cohort, make_latents,
                                                                        monkeypatch):
    """A whole store an older facesurv applied, wrote and materialised (its face_latent view had no
    generator_version), then opened by this code: applying the repo again upgrades it, and the
    latents already stored, offline and online, read with a null version."""
    import features.feature_repo.definitions as definitions
    import features.store.offline as offline

    added = set(offline.LATENT_ADDED_LATER)                  # generator_version, then encoder_sha256
    assert {"generator_version", "encoder_sha256"} <= added
    old_features = tuple((n, k) for n, k in offline.LATENT_FEATURES if n not in added)
    monkeypatch.setattr(definitions, "LATENT_FEATURES", old_features)
    monkeypatch.setattr(offline, "LATENT_FEATURES", old_features)
    monkeypatch.setattr(offline, "LATENT_ADDED_LATER", ())
    repo, params = tmp_path / "old_repo", feat_params
    store = fs.apply_repo(repo, params)
    clinical = cohort.head(3)
    rows, _ = fs.join_latents(make_latents(clinical["photo_id"].tolist(), seed=50), clinical,
                              aligner_version="test-aligner-1")
    assert fs.write_clinical(repo, clinical, params) == 3 and fs.write_latents(repo, rows, params) == 3
    fs.materialize(repo, params, store=store)
    assert not added & set(read_rows(repo, params, "face_latent").columns)  # the old layout
    monkeypatch.undo()

    store = fs.apply_repo(repo, params)  # this code's definitions
    pids = clinical["patient_id"].tolist()
    online = fs.online_features(repo, pids, params, store=store)
    assert online["photo_id"].tolist() == clinical["photo_id"].tolist()  # the old rows are served
    assert online["generator_version"].tolist() == [None, None, None]
    assert online["encoder_sha256"].tolist() == [None, None, None]
    df, report = fs.training_set(repo, _entity(clinical), params, store=store)
    assert report.rows_out == 3 and df["generator_version"].isna().all()
    # a new latent of a named generator for the first patient: served with its version from now on
    later = pd.DataFrame({"photo_id": ["ph-new"], "patient_id": [pids[0]],
                          "photo_taken_at": [(pd.Timestamp(clinical["photo_taken_at"].iloc[0])
                                              + pd.Timedelta(days=1)).isoformat()]})
    rows, _ = fs.join_latents(make_latents(["ph-new"], seed=51, generator_version="facesurv-generator v2"), later,
                              aligner_version="test-aligner-1")
    assert fs.write_latents(repo, rows, params) == 1
    fs.materialize(repo, params, store=store)
    online = fs.online_features(repo, pids, params, store=store)
    assert online["generator_version"].tolist() == ["facesurv-generator v2", None, None]


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
