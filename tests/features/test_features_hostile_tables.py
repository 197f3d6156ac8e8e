"""Issue 13, item 5: clinical files as a careless user or an attacker writes them.

Unreadable files fail with one line and a non-zero exit; a ragged line costs only its own row
(patient_id kept); a correction in the same file keeps the earlier row as history and the
later record_known_at wins wherever one record per patient is needed.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from facesurv.cli import main
from features.contracts import (
    bad_lines,
    latest_records,
    newest_first,
    read_table,
    run_contract,
    save_contract_outputs,
)
from ground.errors import DataError


@pytest.fixture(scope="module")
def clinical_file(cohort, tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "clinical.csv"
    cohort.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def clinical_text(clinical_file) -> pd.DataFrame:
    return read_table(clinical_file)


def _lines(path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# --- unreadable files -------------------------------------------------------------------------------

@pytest.mark.parametrize(("content", "message"), [
    (b"\x7fELF\x02\x01\x01" + b"\x00" * 4096, "binary content, not CSV text"),  # today: 0 rows, exit 0
    (b"\x00" * 4096, "binary content, not CSV text"),
    (b"\x89PNG\r\n\x1a\n" + b"\xff\xfe\xfd" * 100, "not UTF-8 text"),
    (b"", "the file is empty"),
    (b"patient_id,patient_id\np1,p2\n", "repeats column(s) patient_id"),
], ids=["elf", "nul", "png-like", "empty", "repeated-header"])
def test_an_unreadable_clinical_file_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "clinical.csv"
    path.write_bytes(content)
    with pytest.raises(DataError, match="cannot be read as a table") as err:
        read_table(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_validate_exits_non_zero_on_a_binary_clinical_file(workspace, tmp_path, capsys):
    path = tmp_path / "clinical.csv"
    path.write_bytes(b"\x7fELF\x02\x01\x01" + b"\x00" * 4096)
    rc = main(["validate", "clinical", str(path), "--out", str(tmp_path / "o"), "-w", str(workspace.root)])
    assert rc != 0
    err = capsys.readouterr().err.strip()
    assert "cannot be read as a table (binary content" in err and len(err.splitlines()) == 1


def test_a_table_of_foreign_columns_and_no_rows_fails(feat_params):
    """Text that is no clinical table has no rows either: 0 rows with the wrong columns is a failure."""
    res = run_contract("clinical", pd.DataFrame({"GIF89a": pd.Series(dtype=object)}), feat_params)
    assert not res.passed
    assert "no rows" in res.failure_message() and "expect_table_columns_to_match_set" in res.failure_message()


# --- ragged lines -----------------------------------------------------------------------------------

def test_ragged_lines_cost_only_their_row(clinical_file, clinical_text, feat_params, tmp_path):
    lines = _lines(clinical_file)
    lines[1] = lines[1] + ",extra"                    # the first data row: too many fields
    lines[6] = lines[6].rsplit(",", 3)[0]             # row 5: too few fields
    path = tmp_path / "ragged.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    df = read_table(path)
    assert list(df.columns) == list(clinical_text.columns)  # nothing shifted
    assert set(bad_lines(df)) == {0, 5}
    res = run_contract("clinical", df, feat_params)
    assert list(res.quarantine.index) == [0, 5]
    ids = clinical_text["patient_id"]
    assert list(res.quarantine["patient_id"]) == [ids[0], ids[5]]
    assert "line 2 has 17 fields but the header has 16" in res.quarantine.loc[0, "reason"]
    assert "line 7 has 13 fields but the header has 16" in res.quarantine.loc[5, "reason"]
    # only the line's own reason: the empty cells it was given are not reported as more failures
    assert res.quarantine.loc[0, "expectation"] == "expect_column_values_to_be_in_set(row_fields_match_header)"
    assert [(f["expectation"], f["rows"]) for f in res.summary["failures"]] == [
        ("expect_column_values_to_be_in_set(row_fields_match_header)", 2)]
    pd.testing.assert_frame_equal(res.valid, clinical_text.drop(index=[0, 5]))
    assert res.passed  # 2 of 30 rows

    paths = save_contract_outputs(res, tmp_path / "out")
    q = pd.read_csv(paths["quarantine"], dtype=str)
    assert list(q["patient_id"]) == [ids[0], ids[5]]
    assert "row_fields_match_header" not in pd.read_csv(paths["valid"], dtype=str).columns


def test_a_ragged_line_with_a_bad_first_field_keeps_no_id(clinical_file, feat_params, tmp_path):
    lines = _lines(clinical_file)
    lines[3] = "../../etc/passwd,x"
    path = tmp_path / "ragged.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = run_contract("clinical", read_table(path), feat_params)
    assert list(res.quarantine.index) == [2] and pd.isna(res.quarantine.loc[2, "patient_id"])


# --- corrections in the same file ------------------------------------------------------------------

def _correction(clinical_text, row: int, *, days: float, **values) -> pd.DataFrame:
    fix = clinical_text.loc[[row]].copy()
    known = pd.Timestamp(fix["record_known_at"].iloc[0]) + pd.Timedelta(days=days)
    fix["record_known_at"] = known.isoformat()
    for k, v in values.items():
        fix[k] = v
    return pd.concat([clinical_text, fix], ignore_index=True)


def test_a_correction_in_the_same_file_keeps_both_rows(clinical_text, feat_params):
    df = _correction(clinical_text, 4, days=30, age="66", tgrade="III")
    res = run_contract("clinical", df, feat_params)
    assert res.summary["failing"] == 0 and len(res.valid) == len(clinical_text) + 1
    pid = clinical_text.loc[4, "patient_id"]
    # the later record_known_at wins; the earlier row stays as history
    current = latest_records(res.valid)
    assert len(current) == len(clinical_text)
    assert current.set_index("patient_id").loc[pid, "age"] == "66"
    assert list(res.valid.loc[res.valid["patient_id"] == pid, "age"]) == [clinical_text.loc[4, "age"], "66"]


def test_the_later_record_wins_whatever_the_line_order(clinical_text):
    df = _correction(clinical_text, 4, days=30, age="66")
    reordered = pd.concat([df.iloc[[-1]], df.iloc[:-1]], ignore_index=True)
    pid = clinical_text.loc[4, "patient_id"]
    assert latest_records(reordered).set_index("patient_id").loc[pid, "age"] == "66"
    assert newest_first(reordered).drop_duplicates("photo_id").set_index("photo_id").loc[
        clinical_text.loc[4, "photo_id"], "age"] == "66"


def test_a_correction_takes_the_photo_date_it_corrects(clinical_text):
    """Latents are attributed through the latest record of their photo."""
    from features.store import join_latents

    fixed_at = "2013-05-05T10:00:00+00:00"
    df = _correction(clinical_text, 4, days=400, photo_taken_at=fixed_at)
    lat = pd.DataFrame({"photo_id": [clinical_text.loc[4, "photo_id"]], "photo_sha256": ["a" * 64]})
    rows, unmatched = join_latents(lat, newest_first(df), aligner_version="test-1")
    assert unmatched.empty and rows.loc[0, "photo_taken_at"] == fixed_at


def test_a_photo_of_two_patients_is_quarantined(clinical_text, feat_params):
    df = clinical_text.copy()
    df.loc[3, "photo_id"] = df.loc[9, "photo_id"]
    res = run_contract("clinical", df, feat_params)
    assert list(res.quarantine.index) == [3, 9]
    assert set(res.quarantine["reason"]) == {"photo_id appears with more than one patient_id"}


def test_record_known_at_may_be_slightly_ahead_of_this_clock(clinical_text, feat_params):
    df = clinical_text.copy()
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    df.loc[2, "record_known_at"] = soon.isoformat()
    assert run_contract("clinical", df, feat_params).summary["failing"] == 0
    df.loc[2, "record_known_at"] = (soon + dt.timedelta(days=1)).isoformat()
    res = run_contract("clinical", df, feat_params)
    assert list(res.quarantine.index) == [2] and "in the future" in res.quarantine.loc[2, "reason"]


@pytest.mark.slow
def test_a_correction_is_registered_and_wins_in_the_training_set(workspace, cohort, make_latents, capsys):
    """features write keeps both rows (history); training-set takes each patient's latest record once."""
    w = ["-w", str(workspace.root)]
    text = cohort.astype(str)
    fix = text.loc[[4]].copy()
    fix["record_known_at"] = (pd.Timestamp(fix["record_known_at"].iloc[0]) + pd.Timedelta(days=30)).isoformat()
    fix["age"] = "66.0"
    path = workspace.root / "clinical.csv"
    pd.concat([text, fix], ignore_index=True).to_csv(path, index=False)
    lat_path = workspace.root / "latents.parquet"
    make_latents(cohort["photo_id"].tolist(), seed=3).to_parquet(lat_path)
    assert main(["features", "write", "--clinical", str(path), "--latents", str(lat_path),
                 "--aligner-version", "pre-aligned-1", *w]) == 0
    printed = capsys.readouterr().out
    assert f"clinical: {len(cohort) + 1} new rows" in printed and "quarantined" not in printed
    out = workspace.root / "train.parquet"
    assert main(["features", "training-set", "--entities", str(path), "--out", str(out), *w]) == 0
    assert "1 superseded rows" in capsys.readouterr().out
    df = pd.read_parquet(out)
    assert len(df) == len(cohort) and df["patient_id"].is_unique
    assert df.set_index("patient_id").loc[cohort.loc[4, "patient_id"], "age"] == 66.0
