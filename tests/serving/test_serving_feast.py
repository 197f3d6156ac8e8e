"""Id-based scoring from a real Feast online store (the features part's repo), lineage included."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def feast_reader(champion_registry, tmp_path_factory, params):
    import features.store as fs
    from serving.online import FeastFeatureReader

    repo = champion_registry.workspace.feature_repo_dir  # the demo test serves this workspace
    clinical = champion_registry.cohort.head(40)
    store = fs.apply_repo(repo, params)
    assert fs.write_clinical(repo, clinical, params) == 40
    rng = np.random.default_rng(0)
    latents = pd.DataFrame({
        "photo_id": clinical["photo_id"].head(5),
        "latent": [rng.standard_normal(512).astype(np.float32) for _ in range(5)],
        "space": "w", "steps": 100, "perceptual_loss": 0.3, "mse": 0.05,
        "generator_sha256": "ab" * 32, "generator_is_random_init": True,
        # the first patient's generator came from the registry; the others' had no registry name
        "generator_version": ["facesurv-generator v2", None, None, None, None],
        "perceptual_network": "stlpips", "perceptual_is_stand_in": True,
        "photo_sha256": [f"{i:064x}" for i in range(5)],
    })
    rows, unmatched = fs.join_latents(latents, clinical, aligner_version="facesurv-align-ffhq-1")
    assert unmatched.empty
    assert fs.write_latents(repo, rows, params) == 5
    fs.materialize(repo, params, store=store)
    return FeastFeatureReader(repo, params, store=store)


def test_feast_reader_returns_values_view_times_and_lineage(feast_reader):
    with_latent, clinical_only, unknown = feast_reader(["gbsg2-00001", "gbsg2-00010", "nobody"])
    assert unknown is None
    assert with_latent.values["age"] == 70.0 and len(with_latent.values["latent"]) == 512
    assert set(with_latent.event_timestamps) == {"clinical", "face_latent"}
    assert with_latent.event_timestamps["clinical"].startswith("2015-05-27")
    assert with_latent.lineage["photo_sha256"] == "0" * 64 and with_latent.lineage["generator_sha256"] == "ab" * 32
    assert with_latent.lineage["aligner_version"] == "facesurv-align-ffhq-1"
    assert with_latent.lineage["generator_version"] == "facesurv-generator v2"
    assert "generator_version" not in with_latent.values  # lineage, not a model input
    assert set(clinical_only.event_timestamps) == {"clinical"} and clinical_only.values["latent"] is None
    assert "photo_sha256" not in with_latent.values  # provenance is lineage, not model input


def test_feast_backed_api_records_feature_lineage(make_app, feast_reader, auth):
    app, ledger = make_app(read_features=feast_reader)
    with TestClient(app) as c:
        ok = c.post("/v1/scores", json={"patient_id": "gbsg2-00001"}, headers=auth)
        missing = c.post("/v1/scores", json={"patient_id": "gbsg2-00500"}, headers=auth)
    assert ok.status_code == 200, ok.text
    assert missing.status_code == 404
    rec = ledger.get(ok.json()["score_id"]).record
    inputs = rec["inputs"]
    assert inputs["feature_service"] == "prognosis_v1"
    assert set(inputs["feature_event_timestamps"]) == {"clinical", "face_latent"}
    assert inputs["photo"]["sha256"] == "0" * 64
    assert inputs["generator"] == {"sha256": "ab" * 32, "is_random_init": True, "version": "facesurv-generator v2"}
    assert inputs["alignment"]["aligner_version"] == "facesurv-align-ffhq-1"
    assert inputs["projection"]["steps"] == 100 and inputs["projection"]["space"] == "w"
    assert inputs["feature_values"]["latent"]["length"] == 512  # digest, not 512 floats


def test_a_latent_of_an_unnamed_generator_is_served_with_a_null_version(make_app, feast_reader, auth):
    app, ledger = make_app(read_features=feast_reader)
    with TestClient(app) as c:
        ok = c.post("/v1/scores", json={"patient_id": "gbsg2-00002"}, headers=auth)
    assert ok.status_code == 200, ok.text
    inputs = ledger.get(ok.json()["score_id"]).record["inputs"]
    assert inputs["photo"]["sha256"] == f"{1:064x}"  # a stored latent, so lineage was read
    assert inputs["generator"] == {"sha256": "ab" * 32, "is_random_init": True, "version": None}


def test_demo_scores_through_the_api_and_detects_tampering(champion_registry, feast_reader, params):
    from demo.api_tour import score_through_api

    lines: list[str] = []
    summary = score_through_api(champion_registry.workspace, params, patient_id="gbsg2-00002", log=lines.append)
    text = "\n".join(lines)
    assert "scored gbsg2-00002 via the API" in summary and "tampering detected" in summary
    assert "audit trail (`facesurv audit " in text and "inputs.feature_service" in text
    assert "curl -s" in text and "/v1/scores" in text
    assert "record edited" in text
