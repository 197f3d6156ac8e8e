from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from facesurv.cli import main
from features.cohort import COHORTS, clinical_columns, import_cohort, reverse_km_median, summarize
from ground.errors import DataError

KW = {"seed": 0, "admission_start": "2012-01-01", "admission_span_days": 1460, "record_lag_days": 14}


@pytest.mark.parametrize("base", sorted(COHORTS))
def test_every_base_imports_in_schema(base: str) -> None:
    df = import_cohort(base, **KW)
    assert list(df.columns) == clinical_columns(base)
    assert df["patient_id"].is_unique and df["photo_id"].is_unique
    assert (df["time_days"] > 0).all() and set(df["event"].unique()) <= {0, 1}
    assert df["event"].sum() > 0
    assert set(df["sex"]) <= {"female", "male", "unknown"}
    taken = pd.to_datetime(df["photo_taken_at"])
    known = pd.to_datetime(df["record_known_at"])
    assert (taken <= known).all()
    assert not df.drop(columns=["photo_taken_at", "record_known_at"]).isna().any().any()


def test_flchain_drops_the_leaking_cause_of_death() -> None:
    df = import_cohort("flchain", **KW)
    assert "chapter" not in df.columns
    assert df["creatinine_missing"].sum() > 0


def test_import_is_deterministic_and_seeded() -> None:
    a = import_cohort("gbsg2", **KW).to_csv(index=False)
    b = import_cohort("gbsg2", **KW).to_csv(index=False)
    c = import_cohort("gbsg2", **{**KW, "seed": 1}).to_csv(index=False)
    assert a == b
    assert a != c


def test_unknown_base() -> None:
    with pytest.raises(DataError, match="unknown base dataset 'metabric'; choose one of: gbsg2"):
        import_cohort("metabric", **KW)


def test_summary_and_reverse_km() -> None:
    df = import_cohort("gbsg2", **KW)
    s = summarize(df)
    assert s["patients"] == 686 and s["events"] == 299
    # reverse KM on a hand-checkable case: censored at 2 and 4 among 4 patients
    t = np.array([1.0, 2.0, 3.0, 4.0])
    e = np.array([True, False, True, False])
    assert reverse_km_median(t, e) == 4.0


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_cli_import_twice_gives_identical_files(workspace, tmp_path: Path, capsys) -> None:
    for d in ("a", "b"):
        assert main(["cohort", "import", "--base", "veterans_lung_cancer", "--out", str(tmp_path / d),
                     "--workspace", str(workspace.root)]) == 0
    assert _sha(tmp_path / "a" / "clinical.csv") == _sha(tmp_path / "b" / "clinical.csv")
    assert "137 patients, 128 events" in capsys.readouterr().out


def test_cli_unknown_base_is_one_line(workspace, tmp_path: Path, capsys) -> None:
    rc = main(["cohort", "import", "--base", "metabric", "--out", str(tmp_path / "x"), "--workspace", str(workspace.root)])
    err = capsys.readouterr().err
    assert rc != 0
    assert err.strip().count("\n") == 0 and "cohort.base must be one of" in err
    assert not (tmp_path / "x").exists()


def test_cli_unwritable_output_is_one_line(workspace, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    rc = main(["cohort", "import", "--out", str(blocker / "sub"), "--workspace", str(workspace.root)])
    err = capsys.readouterr().err
    assert rc != 0 and err.startswith("error: ") and err.strip().count("\n") == 0
    assert "cannot create output directory" in err


def test_cli_malformed_params_is_one_line(workspace, tmp_path: Path, capsys) -> None:
    workspace.params_path.write_text("cohort: [unclosed\n")
    rc = main(["cohort", "import", "--out", str(tmp_path / "y"), "--workspace", str(workspace.root)])
    err = capsys.readouterr().err
    assert rc != 0 and "malformed YAML" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "y").exists()
