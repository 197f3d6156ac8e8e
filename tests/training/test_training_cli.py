"""`facesurv train` and `facesurv promote` through the real CLI entry point."""

from __future__ import annotations

import pytest
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

    # a table passed with --data went through no data contract: every other gate passes, that one keeps it out
    assert main(["promote", "--workspace", str(workspace.root)]) == 0
    out = capsys.readouterr().out
    assert "[PASS] delta_c: no champion" in out and "[FAIL] contracts: the training table was not checked" in out
    assert "KEPT: cli-prognosis challenger v1 vs champion (none)" in out

    ws = str(workspace.root)
    # a person's decision: refused while the gates failed, recorded as an override when told so
    assert main(["promote", "--approve", "--reason", "ok", "--by", "dr. a", "--workspace", ws]) == 2
    err = capsys.readouterr().err.strip()
    assert "failed promotion gate(s) contracts" in err and "--override-gates" in err and "\n" not in err
    assert main(["promote", "--approve", "--override-gates", "--reason", "validated by hand", "--by", "dr. a",
                 "--workspace", ws]) == 0
    out = capsys.readouterr().out
    assert "APPROVED (gates overridden): cli-prognosis v1 is the champion (was none); by dr. a" in out
    score_id = out.split("in the ledger as ")[1].split()[0]

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_store[0], registry_uri=mlflow_store[0])
    assert str(client.get_model_version_by_alias("cli-prognosis", "champion").version) == "1"
    tags = client.get_model_version("cli-prognosis", "1").tags
    assert tags["decision"] == "approved" and tags["decision.by"] == "dr. a" and tags["decision.override_gates"] == "true"
    assert tags["decision.reason"] == "validated by hand" and tags["decision.at"]
    assert client.get_run(tags["decision.run_id"]).data.tags["facesurv.kind"] == "promotion_decision"

    # rejecting the champion records it and says it keeps serving; nothing moves
    assert main(["promote", "--reject", "--reason", "drift found", "--version", "1", "--by", "dr. b",
                 "--workspace", ws]) == 0
    captured = capsys.readouterr()
    assert "REJECTED: cli-prognosis v1; the champion is unchanged (v1)" in captured.out
    assert "keeps serving" in captured.err
    assert str(client.get_model_version_by_alias("cli-prognosis", "champion").version) == "1"
    assert client.get_model_version("cli-prognosis", "1").tags["decision"] == "rejected"

    # both decisions are in the lineage ledger, which still verifies
    from serving.anchor import anchor_settings
    from serving.ledger import open_ledger

    params = workspace.load_params()
    ledger = open_ledger(workspace.ledger_path, anchoring=anchor_settings(workspace, params), read_only=True)
    records = [e.record for e in ledger.entries()]
    ledger.close()
    assert [r["decision"] for r in records] == ["approved", "rejected"] and records[0]["score_id"] == score_id
    assert records[0]["kind"] == "promotion_decision" and records[0]["override_gates"] is True
    assert records[0]["model"]["artifacts_sha256"] == tags["facesurv.artifact_manifest_sha256"]
    assert main(["audit", "verify", "--workspace", ws]) == 0
    assert "intact, 2 records, signatures checked" in capsys.readouterr().out
    assert main(["audit", "show", score_id, "--workspace", ws]) == 0
    assert "validated by hand" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--approve", "--reject", "--reason", "x"], "pass one of --approve and --reject, not both"),
    (["--approve"], "a decision needs a reason: pass --reason TEXT"),
    (["--reject", "--reason", "  "], "a decision needs a reason: pass --reason TEXT"),
    (["--reason", "x"], "--reason go(es) with --approve or --reject"),
    (["--version", "2"], "--version go(es) with --approve or --reject"),
    (["--reject", "--override-gates", "--reason", "x"], "--override-gates goes with --approve"),
    (["--approve", "--reason", "x", "--version", "v2"], "--version must be a model version number"),
])
def test_cli_promote_bad_arguments(workspace, capsys, args, message):
    from facesurv.cli import main

    assert main(["promote", *args, "--workspace", str(workspace.root)]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not workspace.ledger_path.exists()  # nothing half-written


def test_cli_decision_on_a_missing_version_writes_nothing(workspace, mlflow_store, capsys):
    from facesurv.cli import main

    raw = yaml.safe_load(workspace.params_path.read_text())
    raw["registry"].update(model_name="never-registered", tracking_uri=mlflow_store[0])
    workspace.params_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["promote", "--reject", "--reason", "x", "--by", "me", "--workspace", str(workspace.root)]) != 0
    err = capsys.readouterr().err.strip()
    assert "has no 'challenger' version; pass --version N" in err and "\n" not in err
    assert not workspace.ledger_path.exists()  # checked before anything was written


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
