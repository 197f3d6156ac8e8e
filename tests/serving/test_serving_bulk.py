"""Re-scoring every patient (serving.bulk, `facesurv score`): the API's code path, every record in the ledger."""

from __future__ import annotations

import shutil

import pytest

from facesurv.cli import main


@pytest.fixture()
def scorer(champion, feature_reader, params, tmp_path, repo_root):
    from ground.workspace import code_version
    from serving.scoring import LineageContext, Scorer, dvc_photo_version

    ctx = LineageContext(code_version=code_version(repo_root), params_hash=params.params_hash,
                         photo_data=dvc_photo_version(tmp_path / "data"))
    return Scorer(model=champion, read_features=feature_reader, context=ctx)


@pytest.fixture()
def ledger(tmp_path):
    from serving.ledger import SQLiteLedger

    led = SQLiteLedger(tmp_path / "ledger.db")
    yield led
    led.close()


def test_rescore_all_scores_everyone_in_chunks_and_the_ledger_verifies(scorer, ledger, champion_registry):
    from serving.bulk import rescore_all

    ids = [str(p) for p in champion_registry.cohort["patient_id"].head(25)]
    calls: list[tuple[int, int]] = []
    summary = rescore_all(scorer, ledger, ids, chunk=10, requested_by="nightly",
                          progress=lambda done, total: calls.append((done, total)))
    assert (summary.scored, summary.failed, summary.patients) == (25, [], 25)
    assert calls == [(10, 25), (20, 25), (25, 25)]
    assert (summary.first_seq, summary.last_seq) == (1, 25) and ledger.count() == 25
    assert ledger.verify().ok
    entry = ledger.get(summary.score_ids[3])
    assert entry.record["patient_id"] == ids[3] and entry.record["requested_by"] == "nightly"
    assert entry.record["model"]["version"] == summary.model_version == "1"
    assert entry.record["inputs"]["kind"] == "online_features"  # the API's record, not a bulk variant
    assert set(summary.timings) == {"read_s", "predict_s", "record_s", "ledger_s"}
    assert summary.to_dict()["ledger_seq"] == [1, 25] and "re-scored 25/25 patients" in summary.line()


def test_an_unknown_patient_is_reported_and_the_rest_of_its_chunk_is_written(scorer, ledger, champion_registry):
    from serving.bulk import rescore_all

    known = [str(p) for p in champion_registry.cohort["patient_id"].head(4)]
    ids = [known[0], "nobody", *known[1:]]
    summary = rescore_all(scorer, ledger, ids, chunk=5)
    assert summary.scored == 4 and ledger.count() == 4
    assert [pid for pid, _ in summary.failed] == ["nobody"]
    assert "has no online features" in summary.failed[0][1]
    assert sorted(e.record["patient_id"] for e in ledger.entries()) == sorted(known)
    assert summary.reasons() == {summary.failed[0][1].replace("'nobody'", "PATIENT"): 1}


def test_a_row_the_model_chokes_on_is_isolated_and_its_chunk_still_written(champion, params, ledger, tmp_path,
                                                                            champion_registry, repo_root):
    from ground.workspace import code_version
    from serving.bulk import rescore_all
    from serving.scoring import DataFrameFeatureReader, LineageContext, Scorer, dvc_photo_version

    df = champion_registry.cohort.head(8).copy()
    df["age"] = df["age"].astype(object)
    df.loc[df.index[5], "age"] = "seventy"  # a value the real CoxPH pyfunc cannot turn into a number
    reader = DataFrameFeatureReader(df, feature_columns=champion_registry.features, timestamp_column="record_known_at",
                                    feature_service="prognosis_v1")
    ctx = LineageContext(code_version=code_version(repo_root), params_hash=params.params_hash,
                         photo_data=dvc_photo_version(tmp_path / "data"))
    scorer = Scorer(model=champion, read_features=reader, context=ctx)
    ids = [str(p) for p in df["patient_id"]]
    summary = rescore_all(scorer, ledger, ids, chunk=8)
    assert summary.scored == 7 and ledger.count() == 7 and ledger.verify().ok
    assert [pid for pid, _ in summary.failed] == [ids[5]]


def test_rescore_all_refuses_bad_options(scorer, ledger):
    from ground.errors import ConfigError, DataError
    from serving.bulk import rescore_all

    with pytest.raises(ConfigError, match="chunk must be a whole number >= 1"):
        rescore_all(scorer, ledger, ["a"], chunk=0)
    with pytest.raises(ConfigError, match="requested_by must be a non-empty name"):
        rescore_all(scorer, ledger, ["a"], requested_by=" ")
    with pytest.raises(DataError, match="patient id"):
        rescore_all(scorer, ledger, ["a", ""])
    assert ledger.count() == 0


@pytest.mark.slow
def test_bulk_feast_read_equals_feasts_own_conversion_across_chunks(champion_registry, tmp_path, params):
    """The reader's proto-to-columns conversion gives what OnlineResponse.to_dict gives, chunked or not."""
    import numpy as np
    import pandas as pd

    import features.store as fs
    from serving.online import LINEAGE_COLUMNS, FeastFeatureReader

    repo = tmp_path / "repo"
    clinical = champion_registry.cohort.head(7)
    store = fs.apply_repo(repo, params)
    fs.write_clinical(repo, clinical, params)
    rng = np.random.default_rng(1)
    latents = pd.DataFrame({
        "photo_id": clinical["photo_id"].head(3), "latent": [rng.standard_normal(512).astype(np.float32)
                                                           for _ in range(3)],
        "space": "w", "steps": 50, "perceptual_loss": 0.2, "mse": 0.04, "generator_sha256": "cd" * 32,
        "generator_is_random_init": False, "generator_version": [None, "g v1", None],
        "perceptual_network": "lpips-vgg16", "perceptual_is_stand_in": False,
        "photo_sha256": [f"{i:064x}" for i in range(3)]})
    rows, _ = fs.join_latents(latents, clinical, aligner_version="a1")
    fs.write_latents(repo, rows, params)
    fs.materialize(repo, params, store=store)
    ids = [*map(str, clinical["patient_id"]), "nobody"]

    chunked = FeastFeatureReader(repo, params, store=store, chunk=3)(ids)
    whole = FeastFeatureReader(repo, params, store=store)(ids)
    assert chunked == whole and whole[-1] is None and whole[0].values["latent"] is not None
    ref = store.get_online_features(features=store.get_feature_service(params.features.feature_service),
                                    entity_rows=[{"patient_id": p} for p in ids]).to_dict()
    for i, feats in enumerate(whole[:-1]):
        for name, value in {**feats.values, **feats.lineage}.items():
            assert value == ref[name][i], (name, i)
        assert set(feats.lineage) <= LINEAGE_COLUMNS
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        FeastFeatureReader(repo, params, store=store, chunk=0)


@pytest.fixture()
def scoring_workspace(champion_registry, tmp_path):
    """A workspace with the session champion and 6 patients' clinical features materialised."""
    import features.store as fs
    from ground.workspace import Workspace

    src = champion_registry.workspace
    root = tmp_path / "ws"
    root.mkdir()
    shutil.copyfile(src.params_path, root / "params.yaml")
    shutil.copytree(src.mlflow_dir, root / "mlflow")
    ws = Workspace(root)
    params = ws.load_params()
    store = fs.apply_repo(ws.feature_repo_dir, params)
    fs.write_clinical(ws.feature_repo_dir, champion_registry.cohort.head(6), params)
    fs.materialize(ws.feature_repo_dir, params, store=store)
    return ws


@pytest.mark.slow
def test_cli_score_all_rescores_the_store_into_the_workspace_ledger(scoring_workspace, champion_registry, capsys):
    from serving.bulk import store_patients
    from serving.ledger import SQLiteLedger

    ws = scoring_workspace
    expected = sorted(str(p) for p in champion_registry.cohort["patient_id"].head(6))
    assert store_patients(ws.feature_repo_dir, ws.load_params()) == expected
    args = ["--workspace", str(ws.root)]
    assert main(["score", "--all", "--chunk", "4", "--requested-by", "after-promotion", *args]) == 0
    cap = capsys.readouterr()
    assert "re-scored 6/6 patients with facesurv-prognosis v1" in cap.out and "ledger seq 1-6" in cap.out
    assert "re-scoring with facesurv-prognosis v1: 6/6 patients" in cap.err
    assert main(["score", "--patient-id", expected[0], *args]) == 0
    assert f"patient {expected[0]}: risk score" in capsys.readouterr().out
    led = SQLiteLedger(ws.ledger_path)
    try:
        records = [e.record for e in led.entries()]
        assert len(records) == 7 and led.verify().ok
        assert sorted(r["patient_id"] for r in records[:6]) == expected
        assert {r["requested_by"] for r in records[:6]} == {"after-promotion"}
    finally:
        led.close()
    assert main(["score", "--patient-id", "nobody", *args]) == 2
    assert "patient 'nobody' has no online features" in capsys.readouterr().err


def test_cli_score_bad_arguments_are_one_line_errors(workspace, capsys):
    args = ["--workspace", str(workspace.root)]
    assert main(["score", *args]) == 2
    assert capsys.readouterr().err.strip() == "error: give either --all or --patient-id ID (one of them)"
    assert main(["score", "--all", "--patient-id", "p1", *args]) == 2
    assert "give either --all or --patient-id" in capsys.readouterr().err
    assert main(["score", "--all", "--chunk", "0", *args]) == 2
    assert capsys.readouterr().err.strip() == "error: --chunk must be >= 1 (got 0); 1000 suits most stores"
    assert main(["score", "--all", *args]) == 3  # no feature repo in a fresh workspace
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no feature repo at") and "\n" not in err
