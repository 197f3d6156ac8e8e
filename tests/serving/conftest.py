"""Serving fixtures: one real MLflow registry with a real champion per session, apps, a live server."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from tests.serving.reference_champion import FEATURES, cohort, register_reference_champion

MODEL_NAME = "facesurv-prognosis"
TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="session")
def champion_registry(tmp_path_factory, repo_root):
    """A session workspace whose MLflow store (mlflow/mlflow.db) holds a champion."""
    from ground.workspace import Workspace

    root = tmp_path_factory.mktemp("serving-ws")
    shutil.copyfile(repo_root / "params.yaml", root / "params.yaml")
    ws = Workspace(root)
    uri = register_reference_champion(ws.mlflow_dir, model_name=MODEL_NAME)
    return SimpleNamespace(workspace=ws, tracking_uri=uri, model_name=MODEL_NAME, cohort=cohort(), features=FEATURES)


@pytest.fixture(scope="session")
def champion(champion_registry):
    from serving.scoring import load_champion

    return load_champion(champion_registry.model_name, tracking_uri=champion_registry.tracking_uri)


@pytest.fixture(scope="session")
def feature_reader(champion_registry):
    from serving.scoring import DataFrameFeatureReader

    return DataFrameFeatureReader(champion_registry.cohort, feature_columns=champion_registry.features,
                                  timestamp_column="record_known_at", feature_service="prognosis_v1")


@pytest.fixture()
def make_app(champion, feature_reader, params, tmp_path, repo_root):
    """Build an app over the session champion and a fresh SQLite ledger; returns (app, ledger)."""
    import dataclasses

    from ground.workspace import code_version
    from serving.app import create_app
    from serving.auth import TokenStore
    from serving.ledger import SQLiteLedger
    from serving.scoring import LineageContext, Scorer, dvc_photo_version

    opened = []

    def build(*, read_features=feature_reader, embed_photo=None, upload_dir=None, tokens=None, ledger=None,
              **serving):
        ledger = ledger or SQLiteLedger(tmp_path / f"ledger-{len(opened)}.db")
        opened.append(ledger)
        ctx = LineageContext(code_version=code_version(repo_root), params_hash=params.params_hash,
                             photo_data=dvc_photo_version(tmp_path / "data"))
        scorer = Scorer(model=champion, read_features=read_features, context=ctx, embed_photo=embed_photo)
        if tokens is None:
            tokens = TokenStore()
            tokens.add(TOKEN, "tester")
        settings = dataclasses.replace(params.serving, **serving)
        return create_app(scorer=scorer, ledger=ledger, tokens=tokens, settings=settings,
                          clinical_base=params.cohort.base,
                          age_range=(params.contracts.age_min, params.contracts.age_max),
                          pseudonym_key=b"k" * 32, upload_dir=upload_dir), ledger

    yield build
    for led in opened:
        led.close()


@pytest.fixture()
def auth():
    return {"Authorization": f"Bearer {TOKEN}"}


def live_server(app):
    """Run the app under a real uvicorn on a free loopback port; yields the base URL."""
    from serving.threaded import serve_in_thread

    return serve_in_thread(app, start_timeout_s=30)
