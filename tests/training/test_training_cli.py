"""`facesurv train` and `facesurv promote` through the real CLI entry point."""

from __future__ import annotations

import yaml


def test_cli_train_then_promote(workspace, cohort_df, mlflow_store, capsys):
    from facesurv.cli import main

    raw = yaml.safe_load(workspace.params_path.read_text())
    raw["training"].update(models=["coxph_clinical"], fusion_members=["coxph_clinical"], fusion_folds=3)
    raw["evaluation"]["bootstrap"] = 20
    raw["registry"].update(model_name="cli-prognosis", tracking_uri=mlflow_store[0])  # the session store
    workspace.params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    data = workspace.root / "clinical.csv"
    cohort_df.drop(columns=["latent"]).to_csv(data, index=False)

    assert main(["train", "--workspace", str(workspace.root), "--data", str(data)]) == 0
    out = capsys.readouterr().out
    assert "Harrell" in out and "coxph_clinical" in out and "fusion" in out and "Harrell C" in out
    assert "registered cli-prognosis version 1 as challenger" in out
    assert (workspace.artifacts_dir / "training" / "table1.csv").is_file()
    assert (workspace.artifacts_dir / "splits" / "test_split.json").is_file()
    assert (workspace.artifacts_dir / "training" / "fusion" / "fusion_km_tertiles.png").is_file()

    assert main(["promote", "--workspace", str(workspace.root)]) == 0
    assert "PROMOTED: cli-prognosis challenger v1 vs champion (none)" in capsys.readouterr().out
    assert main(["promote", "--workspace", str(workspace.root)]) == 0
    assert "KEPT" in capsys.readouterr().out


def test_cli_train_without_data_says_how_to_fix(workspace, capsys):
    from facesurv.cli import main

    assert main(["train", "--workspace", str(workspace.root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no training table in") and "pass --data FILE" in err and "\n" not in err


def test_training_table_readers(tmp_path, cohort_df):
    import json

    import numpy as np
    import pytest

    from ground.errors import DataError
    from training.frame import load_training_frame

    df = cohort_df.head(5).copy()
    csv = tmp_path / "t.csv"
    df.assign(latent=[json.dumps(list(map(float, v))) for v in df["latent"]]).to_csv(csv, index=False)
    back = load_training_frame(csv)
    np.testing.assert_allclose(np.stack(back["latent"]), np.stack(df["latent"]))
    pq = tmp_path / "t.parquet"
    df.assign(latent=[list(map(float, v)) for v in df["latent"]]).to_parquet(pq)
    assert np.stack(load_training_frame(pq)["latent"]).shape == (5, 16)
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(DataError, match=r"unsupported table format '\.txt'"):
        load_training_frame(tmp_path / "t.txt")
    with pytest.raises(DataError, match="no such training table"):
        load_training_frame(tmp_path / "missing.csv")
