"""Serving the training part's real champion (training.pipeline.train + training.registry.promote)."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.slow


def test_serves_the_promoted_training_champion(champion_registry, params, repo_root, tmp_path, auth):
    from facesurv.components import Components
    from features.cohort import covariate_columns
    from ground.workspace import Workspace
    from serving.app import create_app
    from serving.auth import TokenStore
    from serving.ledger import SQLiteLedger
    from serving.scoring import DataFrameFeatureReader, LineageContext, Scorer, load_champion
    from tests.serving.conftest import TOKEN
    from training.gates import GatePolicy
    from training.pipeline import train
    from training.registry import promote

    shutil.copyfile(repo_root / "params.yaml", tmp_path / "params.yaml")
    ws = Workspace(tmp_path)
    quick = dataclasses.replace(
        params, training=dataclasses.replace(params.training, deepsurv_epochs=3, fusion_folds=2),
        evaluation=dataclasses.replace(params.evaluation, bootstrap=0),
        registry=dataclasses.replace(params.registry, require_contracts=False))  # a table no contract checked
    df = champion_registry.cohort.head(240)
    uri = Components(ws, quick).tracking_uri
    train(df.drop(columns=["photo_id", "photo_taken_at", "record_known_at"]), params=quick, tracking_uri=uri,
          artifact_root=ws.mlflow_dir / "artifacts")
    r = quick.registry
    decision = promote(tracking_uri=uri, model_name=r.model_name, policy=GatePolicy.from_params(quick),
                       experiment=r.experiment, artifact_root=ws.mlflow_dir / "artifacts")
    assert decision.promoted

    model = load_champion(r.model_name, tracking_uri=uri)
    numeric, categorical = covariate_columns("gbsg2")
    reader = DataFrameFeatureReader(df, feature_columns=["age", "sex", "cancer_type", *numeric, *categorical],
                                    timestamp_column="record_known_at", feature_service="prognosis_v1")
    scorer = Scorer(model=model, read_features=reader, context=LineageContext("test", quick.params_hash, {}))
    tokens = TokenStore()
    tokens.add(TOKEN, "tester")
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    app = create_app(scorer=scorer, ledger=ledger, tokens=tokens, settings=quick.serving, pseudonym_key=b"k")
    with TestClient(app) as c:
        res = c.post("/v1/scores", json={"patient_id": "gbsg2-00003"}, headers=auth)
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["model"]["version"] == decision.challenger_version and body["model"]["run_id"] == model.run_id
    assert [s["days"] for s in body["survival"]] == list(quick.training.horizons_days)
    rec = ledger.get(body["score_id"]).record
    assert rec["model"]["alias"] == "champion" and rec["inputs"]["feature_values"]["hor_th"] in ("yes", "no")
    # the score's lineage names the artifact manifest the served files were verified against
    from mlflow import MlflowClient

    from training.integrity import DIGEST_TAG

    tags = MlflowClient(tracking_uri=uri, registry_uri=uri).get_model_version(r.model_name, model.version).tags
    assert rec["model"]["artifacts_sha256"] == model.artifacts_sha256 == tags[DIGEST_TAG]
    ledger.close()
