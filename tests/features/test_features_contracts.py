"""Data contracts: each kind of bad row is quarantined with its reason; the run fails only above the threshold."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from features.contracts import read_table, run_contract, save_contract_outputs


@pytest.fixture(scope="module")
def clinical_text(cohort, tmp_path_factory) -> pd.DataFrame:
    """The cohort as `facesurv validate` reads it: every cell text."""
    path = tmp_path_factory.mktemp("clin") / "clinical.csv"
    cohort.to_csv(path, index=False)
    return read_table(path)


def _with_threshold(params, fraction):
    return dataclasses.replace(params, contracts=dataclasses.replace(params.contracts, max_failing_fraction=fraction))


def test_a_clean_clinical_table_passes(clinical_text, feat_params):
    res = run_contract("clinical", clinical_text, feat_params)
    assert res.passed and res.summary["failing"] == 0
    pd.testing.assert_frame_equal(res.valid, clinical_text)


BAD_CLINICAL = [
    ("age", "130", "expect_column_values_to_be_between(age)", "age outside"),
    ("age", "old", "expect_column_values_to_not_be_null(age)", "not a number"),
    ("time_days", "0", "expect_column_values_to_be_between(time_days)", "time_days is not > 0"),
    ("time_days", "-3", "expect_column_values_to_be_between(time_days)", "time_days is not > 0"),
    ("event", "2", "expect_column_values_to_be_in_set(event)", "event is not 0"),
    ("sex", "f", "expect_column_values_to_be_in_set(sex)", "sex is not one of"),
    ("photo_taken_at", "2099-01-01T00:00:00+00:00",
     "expect_column_pair_values_a_to_be_greater_than_b(record_known_at,photo_taken_at)", "after record_known_at"),
    ("record_known_at", "yesterday", "expect_column_values_to_not_be_null(record_known_at)", "ISO-8601"),
    # issue 13: values the API cannot score, ids it refuses, records from the future
    ("record_known_at", "2099-01-01T00:00:00+00:00", "expect_column_values_to_be_between(record_known_at)",
     "record_known_at is in the future"),
    ("time_days", "inf", "expect_column_values_to_be_between(time_days)", "time_days is not > 0 and <= 55000"),
    ("time_days", "1e308", "expect_column_values_to_be_between(time_days)", "time_days is not > 0 and <= 55000"),
    ("tsize", "inf", "expect_column_values_to_be_between(tsize)", "tsize outside 0-500 mm"),
    ("tsize", "-inf", "expect_column_values_to_be_between(tsize)", "tsize outside 0-500 mm"),
    ("pnodes", "-7", "expect_column_values_to_be_between(pnodes)", "pnodes outside 0-100"),
    ("pnodes", "2.5", "expect_column_values_to_be_in_set(pnodes_is_whole)", "pnodes is not a whole number"),
    ("estrec", "1e9", "expect_column_values_to_be_between(estrec)", "estrec outside 0-10000"),
    ("tgrade", "IV", "expect_column_values_to_be_in_set(tgrade)", "tgrade is not one of I, II, III"),
    ("menostat", "post", "expect_column_values_to_be_in_set(menostat)", "menostat is not one of Post, Pre"),
    ("hor_th", "maybe", "expect_column_values_to_be_in_set(hor_th)", "hor_th is not one of no, yes"),
    ("cancer_type", "lung_adeno", "expect_column_values_to_be_in_set(cancer_type)",
     "cancer_type is not one of breast"),
    ("patient_id", "../../etc/passwd", "expect_column_values_to_match_regex(patient_id)",
     "patient_id is not a valid id"),
    ("patient_id", "p" * 100_000, "expect_column_values_to_match_regex(patient_id)", "patient_id is not a valid id"),
    ("patient_id", "p1\n", "expect_column_values_to_match_regex(patient_id)", "patient_id is not a valid id"),
    ("photo_id", "../photos/x", "expect_column_values_to_match_regex(photo_id)", "photo_id is not a valid id"),
]


@pytest.mark.parametrize(("column", "value", "expectation", "reason"), BAD_CLINICAL,
                         ids=[f"{c}={v[:20]!r}" for c, v, _, _ in BAD_CLINICAL])
def test_a_bad_clinical_row_is_quarantined(clinical_text, feat_params, column, value, expectation, reason):
    df = clinical_text.copy()
    df.loc[4, column] = value
    res = run_contract("clinical", df, feat_params)
    assert list(res.quarantine.index) == [4]
    assert expectation in res.quarantine.loc[4, "expectation"]
    assert reason in res.quarantine.loc[4, "reason"]
    assert res.passed  # 1 of 30 rows is under the 10% threshold
    pd.testing.assert_frame_equal(res.valid, clinical_text.drop(index=4))


def test_duplicate_patients_are_both_quarantined(clinical_text, feat_params):
    """Two rows of one patient known at the same time are ambiguous (a correction needs a later time)."""
    df = clinical_text.copy()
    df.loc[7, ["patient_id", "record_known_at"]] = df.loc[8, ["patient_id", "record_known_at"]].to_numpy()
    res = run_contract("clinical", df, feat_params)
    assert list(res.quarantine.index) == [7, 8]
    assert set(res.quarantine["expectation"]) == {
        "expect_compound_columns_to_be_unique(patient_id,record_known_at)"}
    assert "same record_known_at" in res.quarantine.loc[7, "reason"]


def test_a_leaking_column_fails_the_whole_table(clinical_text, feat_params):
    res = run_contract("clinical", clinical_text.assign(chapter="Circulatory"), feat_params)
    assert not res.passed
    assert res.summary["failing"] == len(clinical_text)
    assert "unexpected: chapter" in res.quarantine["reason"].iloc[0]
    assert "expect_table_columns_to_match_set" in res.failure_message()


def test_the_run_fails_only_above_the_threshold(clinical_text, feat_params):
    df = clinical_text.copy()
    df.loc[[0, 1, 2], "event"] = "9"  # 3 of 30 rows = 10%
    assert run_contract("clinical", df, _with_threshold(feat_params, 0.10)).passed
    res = run_contract("clinical", df, _with_threshold(feat_params, 0.09))
    assert not res.passed
    msg = res.failure_message()
    assert "3 of 30 rows" in msg and "expect_column_values_to_be_in_set(event): 3 rows" in msg


def test_outputs_are_written(clinical_text, feat_params, tmp_path):
    df = clinical_text.copy()
    df.loc[2, "age"] = "500"
    res = run_contract("clinical", df, feat_params, docs_dir=tmp_path / "data_docs")
    paths = save_contract_outputs(res, tmp_path)
    valid = read_table(paths["valid"])
    pd.testing.assert_frame_equal(valid, clinical_text.drop(index=2).reset_index(drop=True))
    q = pd.read_csv(paths["quarantine"], dtype=str)
    assert list(q["patient_id"]) == [df.loc[2, "patient_id"]] and q["reason"].iloc[0].startswith("age outside")
    results = json.loads(paths["results"].read_text())
    assert results["summary"]["failing"] == 1 and results["great_expectations"]["success"] is False
    html = paths["report"].read_text()
    assert "PASSED" in html and "data_docs/index.html" in html
    assert (tmp_path / "data_docs" / "index.html").is_file()


def _manifest(n=6):
    return pd.DataFrame({"photo_id": [f"ph-{i}" for i in range(n)], "status": ["aligned"] * (n - 1) + ["quarantined"],
                         "reason": [None] * (n - 1) + ["no_face"], "aligner_version": "dlib-68-v1",
                         "output_size": [512] * (n - 1) + [None]})


def test_manifest_contract(feat_params):
    m = _manifest()
    assert run_contract("manifest", m, feat_params).summary["failing"] == 0
    m.loc[1, "status"] = "maybe"
    m.loc[2, "output_size"] = 256
    m.loc[5, "reason"] = None
    res = run_contract("manifest", m, feat_params)
    assert dict(zip(res.quarantine.index, res.quarantine["expectation"], strict=True)) == {
        1: "expect_column_values_to_be_in_set(status)",
        2: "expect_column_values_to_be_in_set(output_size)",
        5: "expect_column_values_to_not_be_null(reason)"}


def test_latents_contract(feat_params, make_latents):
    lat = make_latents([f"ph-{i}" for i in range(8)], seed=0)
    assert run_contract("latents", lat, feat_params).summary["failing"] == 0
    lat.at[1, "latent"] = np.zeros(100, np.float32)
    bad = lat.at[2, "latent"].copy()
    bad[5] = np.nan
    lat.at[2, "latent"] = bad
    lat.at[3, "latent"] = np.full(512, 100.0, np.float32)  # norm 2263
    lat.loc[4, "perceptual_loss"] = 5.0
    res = run_contract("latents", lat, feat_params)
    got = dict(zip(res.quarantine.index, res.quarantine["expectation"], strict=True))
    assert got[1].startswith("expect_column_values_to_be_in_set(latent_dim)")
    assert got[2].startswith("expect_column_values_to_be_in_set(latent_finite)")
    assert got[3] == "expect_column_values_to_be_between(latent_norm)"
    assert got[4] == "expect_column_values_to_be_between(projection_loss)"
    assert len(got) == 4 and not res.passed  # 4 of 8
    # the quarantined rows keep their latent as given
    assert len(res.quarantine.loc[1, "latent"]) == 100


def test_unknown_kind(feat_params):
    from ground.errors import DataError

    with pytest.raises(DataError, match="unknown contract"):
        run_contract("photos", pd.DataFrame(), feat_params)


def test_unreadable_file(tmp_path):
    from ground.errors import DataError

    path = tmp_path / "latents.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot be read"):
        read_table(path)
    with pytest.raises(DataError, match="no such file"):
        read_table(tmp_path / "missing.csv")
