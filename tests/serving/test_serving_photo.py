"""POST /v1/scores/photo with the real aligner (dlib) and projection (random-init generator stand-in)."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from fastapi.testclient import TestClient

pytestmark = pytest.mark.slow

CLINICAL = {"age": "61", "estrec": "20", "pnodes": "3", "progrec": "40", "tsize": "25", "sex": "female"}


@pytest.fixture(scope="module")
def quick_params(params):
    return dataclasses.replace(params, projection=dataclasses.replace(params.projection, steps=2))


@pytest.fixture(scope="module")
def pipeline(quick_params):
    from facesurv.components import Components

    return Components(None, quick_params).photo_pipeline()


def test_photo_scoring_records_photo_lineage_and_keeps_upload_for_retention(make_app, pipeline, auth, quick_params,
                                                                             shared_dir, tmp_path):
    from facesurv.components import Components

    photo = (shared_dir / "faces" / "astronaut.png").read_bytes()
    dogs = (shared_dir / "faces" / "dogs.jpg").read_bytes()
    uploads = tmp_path / "uploads"
    app, ledger = make_app(embed_photo=pipeline, upload_dir=uploads, upload_retention_s=3600)
    with TestClient(app) as c:
        r = c.post("/v1/scores/photo", files={"photo": ("a.png", photo, "image/png")},
                   data={"patient_id": "new-1", **CLINICAL}, headers=auth)
        no_face = c.post("/v1/scores/photo", files={"photo": ("d.jpg", dogs, "image/jpeg")},
                         data={"patient_id": "new-2", **CLINICAL}, headers=auth)
        lacking = c.post("/v1/scores/photo", files={"photo": ("a.png", photo, "image/png")},
                         data={"patient_id": "new-3", "age": "61"}, headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["inputs"] == "photo_upload" and len(body["survival"]) == 3
    rec = ledger.get(body["score_id"]).record
    inp = rec["inputs"]
    assert inp["photo"]["sha256"] == hashlib.sha256(photo).hexdigest()
    assert inp["alignment"]["aligner_version"] == "facesurv-align-ffhq-1"
    assert len(inp["alignment"]["landmark_model_sha256"]) == 64
    assert inp["generator"]["is_random_init"] is True and len(inp["generator"]["sha256"]) == 64
    assert inp["generator"]["version"] is None  # the stand-in has no registry name
    assert inp["projection"]["steps"] == 2 and inp["projection"]["final_loss"] > 0
    # the upload was projected by the flow's engine: the flow's run key, every setting recorded
    flow_engine = Components(None, quick_params).projection(with_stats=False)
    assert inp["projection"]["run_key"] == flow_engine.key
    for key, value in quick_params.projection.project_options().items():
        assert inp["projection"][key] == value, key
    assert inp["clinical"]["age"] == 61.0 and inp["clinical"]["sex"] == "female"
    assert [p.name for p in uploads.iterdir()] == [f"{body['score_id']}.png"]

    assert no_face.status_code == 422
    assert no_face.json()["error"]["message"].startswith("photo rejected: no_face")
    assert lacking.status_code == 422
    assert "missing clinical field(s) estrec, pnodes, progrec, tsize" in lacking.json()["error"]["message"]
    assert ledger.count() == 1 and ledger.verify().ok


def test_photo_scoring_records_the_generator_registry_version(make_app, pipeline, auth, shared_dir):
    """A generator from the registry: its version name reaches the score's lineage, next to the
    sha256 of its weights (the same weights, so the same run key as the unnamed one)."""
    from serving.photo import PhotoPipeline

    info = dataclasses.replace(pipeline.generator_info, version="facesurv-generator v2")
    named = PhotoPipeline(aligner=pipeline.aligner,
                          projection=dataclasses.replace(pipeline.projection, generator_info=info))
    photo = (shared_dir / "faces" / "astronaut.png").read_bytes()
    app, ledger = make_app(embed_photo=named)
    with TestClient(app) as c:
        r = c.post("/v1/scores/photo", files={"photo": ("a.png", photo, "image/png")},
                   data={"patient_id": "new-1", **CLINICAL}, headers=auth)
    assert r.status_code == 200, r.text
    inp = ledger.get(r.json()["score_id"]).record["inputs"]
    assert inp["generator"] == {"sha256": pipeline.generator_info.sha256, "is_random_init": True,
                                "version": "facesurv-generator v2"}
    assert inp["projection"]["run_key"] == pipeline.projection.key


def test_photo_uploads_not_written_with_zero_retention(make_app, pipeline, auth, shared_dir, tmp_path):
    photo = (shared_dir / "faces" / "astronaut.png").read_bytes()
    uploads = tmp_path / "uploads0"
    app, _ = make_app(embed_photo=pipeline, upload_dir=uploads, upload_retention_s=0)
    with TestClient(app) as c:
        r = c.post("/v1/scores/photo", files={"photo": ("a.png", photo, "image/png")},
                   data={"patient_id": "new-1", **CLINICAL}, headers=auth)
    assert r.status_code == 200, r.text
    assert not uploads.exists()
