"""The local profile's training sets come from Feast's DuckDB offline store and keep Feast's
point-in-time semantics: nothing known after the reference time, nothing older than the TTL,
nullable features added later read as null, every entity row accounted for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import features.store as fs


def _clinical(template: pd.Series, pid: str, **changes) -> dict:
    row = template.to_dict()
    row.update(patient_id=pid, photo_id=f"ph-{pid}", **changes)
    return row


def _write_photo(local_store, make_latents, pid: str, taken_at: str, *, seed: int) -> pd.DataFrame:
    photos = pd.DataFrame({"photo_id": [f"ph-{pid}"], "patient_id": [pid], "photo_taken_at": [taken_at]})
    lat = make_latents([f"ph-{pid}"], seed=seed)  # no generator_version column: a table from before it existed
    rows, unmatched = fs.join_latents(lat, photos, aligner_version="test-aligner-1")
    assert unmatched.empty
    assert fs.write_latents(local_store.repo, rows, local_store.params) == 1
    return lat


def test_the_local_profile_joins_in_duckdb(local_store):
    assert local_store.store.config.offline_store.type == "duckdb"
    assert "type: duckdb" in (local_store.repo / "feature_store.yaml").read_text()


def test_duckdb_training_set_keeps_point_in_time_semantics(local_store, make_latents):
    repo, params, store = local_store.repo, local_store.params, local_store.store
    template = local_store.cohort.iloc[0]
    ttl = pd.Timedelta(days=params.features.ttl_days)

    # a record corrected later, at 10:00 UTC on 1 March: reference times in another offset fall either side
    fixed = "gbsg2-pit-fixed"
    assert fs.write_clinical(repo, pd.DataFrame([
        _clinical(template, fixed, age=50.0, photo_taken_at="2014-01-01T10:00:00+00:00",
                  record_known_at="2014-01-05T10:00:00+00:00"),
        _clinical(template, fixed, age=60.0, photo_taken_at="2014-01-01T10:00:00+00:00",
                  record_known_at="2014-03-01T10:00:00+00:00"),
    ]), params) == 2
    lat = _write_photo(local_store, make_latents, fixed, "2014-01-01T10:00:00+00:00", seed=60)

    # a patient whose only record and photo date from 2000: within the TTL exactly at its end, not after
    old = "gbsg2-pit-old"
    known = pd.Timestamp("2000-01-01T10:00:00+00:00")
    assert fs.write_clinical(repo, pd.DataFrame([
        _clinical(template, old, age=40.0, photo_taken_at=known.isoformat(), record_known_at=known.isoformat()),
    ]), params) == 1
    _write_photo(local_store, make_latents, old, known.isoformat(), seed=61)

    ent = pd.DataFrame({
        "patient_id": [fixed, fixed, old, old],
        "event_timestamp": ["2014-03-01T11:30:00+02:00",  # 09:30 UTC: before the correction
                            "2014-03-01T12:30:00+02:00",  # 10:30 UTC: after it
                            (known + ttl).isoformat(),
                            (known + ttl + pd.Timedelta(seconds=1)).isoformat()],
        "time_days": [1.0, 2.0, 3.0, 4.0], "event": [1, 0, 1, 0],
    })
    df, report = fs.training_set(repo, ent, params, store=store)

    assert (report.rows_in, report.rows_out, report.n_unmatched) == (4, 3, 1)
    assert report.unmatched[["patient_id", "missing"]].values.tolist() == [[old, "face_latent,clinical"]]
    assert report.unmatched["event_timestamp"].iloc[0] == known + ttl + pd.Timedelta(seconds=1)
    assert df["patient_id"].tolist() == [fixed, fixed, old] and df["time_days"].tolist() == [1.0, 2.0, 3.0]
    assert df["age"].tolist() == [50.0, 60.0, 40.0]
    latent = df["latent"].iloc[0]
    assert isinstance(latent, np.ndarray) and latent.dtype == np.float32 and latent.shape == (512,)
    np.testing.assert_array_equal(latent, lat["latent"].iloc[0])
    # generator_version and encoder_sha256 were added to the view later: rows without them read null
    assert df["generator_version"].isna().all() and df["encoder_sha256"].isna().all()

    full, report2 = fs.training_set(repo, ent, params, keep_unmatched=True, store=store)
    assert (report2.rows_out, report2.n_unmatched) == (4, 1)  # returned with nulls, still counted
    assert full["patient_id"].tolist() == ent["patient_id"].tolist()
    assert pd.isna(full["age"].iloc[3])
    assert full["latent"].iloc[3] is None


def test_a_view_without_rows_is_named(tmp_path, feat_params, cohort):
    from ground.errors import DataError

    repo = tmp_path / "fresh_repo"
    store = fs.apply_repo(repo, feat_params)
    assert fs.write_clinical(repo, cohort.head(2), feat_params) == 2
    ent = cohort.head(2)[["patient_id", "record_known_at"]].rename(columns={"record_known_at": "event_timestamp"})
    with pytest.raises(DataError, match="face_latent hold no rows yet"):
        fs.training_set(repo, ent, feat_params, store=store)
