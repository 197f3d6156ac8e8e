"""`facesurv validate ...` and `facesurv features ...` as a user runs them (in-process)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from facesurv.cli import main


@pytest.fixture()
def clinical_csv(workspace, cohort):
    path = workspace.root / "clinical.csv"
    cohort.to_csv(path, index=False)
    return path


def test_validate_clinical_writes_valid_quarantine_and_report(workspace, clinical_csv, tmp_path):
    df = pd.read_csv(clinical_csv, dtype=str)
    df.loc[3, "event"] = "7"
    df.to_csv(clinical_csv, index=False)
    out = tmp_path / "out"
    assert main(["validate", "clinical", str(clinical_csv), "--out", str(out), "-w", str(workspace.root)]) == 0
    valid = pd.read_csv(out / "valid.csv", dtype=str)
    assert len(valid) == len(df) - 1 and df.loc[3, "patient_id"] not in set(valid["patient_id"])
    q = pd.read_csv(out / "quarantine.csv", dtype=str)
    assert list(q.columns[-2:]) == ["reason", "expectation"]
    assert q["expectation"].iloc[0] == "expect_column_values_to_be_in_set(event)"
    assert (out / "report.html").is_file() and (out / "results.json").is_file()


def test_validate_exits_non_zero_above_the_threshold(workspace, clinical_csv, tmp_path, capsys):
    df = pd.read_csv(clinical_csv, dtype=str)
    df.loc[:9, "age"] = "-1"  # 10 of 30 rows
    df.to_csv(clinical_csv, index=False)
    out = tmp_path / "out"
    rc = main(["validate", "clinical", str(clinical_csv), "--out", str(out), "-w", str(workspace.root)])
    assert rc != 0
    err = capsys.readouterr().err
    assert "expect_column_values_to_be_between(age): 10 rows" in err and "10 of 30 rows" in err
    # the outputs are still written: valid rows proceed
    assert len(pd.read_csv(out / "valid.csv")) == 20
    rc = main(["validate", "clinical", str(clinical_csv), "--out", str(out), "--max-failing-fraction", "0.5",
               "-w", str(workspace.root)])
    assert rc == 0


def test_validate_exits_non_zero_on_an_unreadable_file(workspace, tmp_path, capsys):
    bad = tmp_path / "latents.parquet"
    bad.write_text("garbage")
    assert main(["validate", "latents", str(bad), "--out", str(tmp_path / "o"), "-w", str(workspace.root)]) != 0
    assert "cannot be read" in capsys.readouterr().err


@pytest.mark.slow
def test_features_commands_end_to_end(workspace, clinical_csv, cohort, make_latents, capsys):
    w = ["-w", str(workspace.root)]
    df = pd.read_csv(clinical_csv, dtype=str)
    df.loc[0, "age"] = "500"  # quarantined by the contract: neither the record nor its photo is written
    df.to_csv(clinical_csv, index=False)
    lat_path = workspace.root / "latents.parquet"
    make_latents(cohort["photo_id"].head(25).tolist(), seed=5).to_parquet(lat_path)
    assert main(["features", "apply", *w]) == 0
    write = ["features", "write", "--clinical", str(clinical_csv), "--latents", str(lat_path),
             "--aligner-version", "pre-aligned-1", *w]
    assert main(write) == 0
    printed = capsys.readouterr().out
    assert "clinical: 29 new rows" in printed and "face_latent: 24 new rows" in printed
    assert "1 latents not written" in printed
    assert main(write) == 0
    printed = capsys.readouterr().out
    assert "clinical: 0 new rows" in printed and "face_latent: 0 new rows" in printed
    assert main(["features", "materialize", *w]) == 0
    assert "face_latent: 24 new rows" in capsys.readouterr().out
    ts = workspace.root / "train.parquet"
    assert main(["features", "training-set", "--entities", str(clinical_csv), "--out", str(ts), *w]) == 0
    df = pd.read_parquet(ts)
    report = json.loads(ts.with_suffix(".report.json").read_text())
    assert len(df) == 24 and report == {**report, "rows_in": 30, "rows_out": 24, "unmatched": 6}
    assert report["unmatched_by_view"] == {"face_latent": 6, "clinical": 1}
    assert {"latent", "age", "tgrade", "time_days", "event"} <= set(df.columns)
    assert main(["features", "online", cohort["patient_id"].iloc[1], *w]) == 0
    assert "512 floats" in capsys.readouterr().out
