"""The API over a real champion (MLflow registry) and a real SQLite ledger."""

from __future__ import annotations

import io
import logging

import pytest
from fastapi.testclient import TestClient

PATIENT = "gbsg2-00001"


@pytest.fixture()
def client(make_app):
    app, ledger = make_app()
    with TestClient(app) as c:
        c.ledger = ledger
        yield c


def test_api_scores_a_patient_and_records_lineage_first(client, auth, champion, params):
    r = client.post("/v1/scores", json={"patient_id": PATIENT}, headers=auth)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["patient_id"] == PATIENT and body["inputs"] == "online_features"
    assert 0 <= body["risk_percentile"] <= 100
    assert [s["days"] for s in body["survival"]] == [365, 1095, 1825]
    probs = [s["probability"] for s in body["survival"]]
    assert all(0 <= p <= 1 for p in probs) and probs == sorted(probs, reverse=True)
    assert body["model"] == {"name": champion.name, "version": "1", "alias": "champion", "run_id": champion.run_id}

    entry = client.ledger.get(body["score_id"])
    rec = entry.record
    assert rec["result"]["risk_score"] == body["risk_score"]
    assert rec["params_hash"] == params.params_hash and rec["code_version"]
    assert rec["requested_by"] == "tester" and len(rec["request_sha256"]) == 64
    assert rec["model"]["run_id"] == champion.run_id and rec["model"]["uri"].endswith("@champion")
    assert rec["inputs"]["feature_service"] == "prognosis_v1"
    assert rec["inputs"]["feature_event_timestamps"]["clinical"].startswith("2015-05-27")
    assert rec["inputs"]["feature_values"]["age"] == 70.0
    for key in ("photo", "alignment", "generator", "projection"):
        assert key in rec["inputs"]

    got = client.get(f"/v1/scores/{body['score_id']}", headers=auth)
    assert got.status_code == 200
    g = got.json()
    assert g["score"] == body and g["lineage"] == rec
    assert g["ledger"] == {"seq": 1, "hash": entry.hash, "prev_hash": "0" * 64}
    assert client.ledger.verify().ok


def test_api_unknown_patient_is_404_with_reason(client, auth):
    r = client.post("/v1/scores", json={"patient_id": "nobody-1"}, headers=auth)
    assert r.status_code == 404
    assert "'nobody-1' has no online features" in r.json()["error"]["message"]
    assert client.ledger.count() == 0


@pytest.mark.parametrize(("body", "reason"), [
    ({}, "patient_id: Field required"),
    ({"patient_id": "x y"}, "patient_id: String should match pattern"),
    ({"patient_id": 5}, "patient_id: Input should be a valid string"),
    ({"patient_id": "a", "extra": 1}, "extra: Extra inputs are not permitted"),
])
def test_api_bad_score_body_is_422_with_reason(client, auth, body, reason):
    r = client.post("/v1/scores", json=body, headers=auth)
    assert r.status_code == 422
    assert reason in r.json()["error"]["message"]


def test_api_malformed_json_is_422(client, auth):
    r = client.post("/v1/scores", content=b"{not json", headers={**auth, "content-type": "application/json"})
    assert r.status_code == 422
    assert "JSON decode error" in r.json()["error"]["message"]


@pytest.mark.parametrize(("headers", "reason"), [
    ({}, "missing bearer token"),
    ({"Authorization": "Basic abc"}, "missing bearer token"),
    ({"Authorization": "Bearer wrong-token-0123456789"}, "unknown or revoked API token"),
])
def test_api_requires_a_known_token(client, headers, reason):
    r = client.post("/v1/scores", json={"patient_id": PATIENT}, headers=headers)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert reason in r.json()["error"]["message"]
    assert client.get("/v1/scores/" + "0" * 32, headers=headers).status_code == 401


def test_api_rate_limit_per_token(make_app, auth):
    app, _ = make_app(rate_limit_per_minute=2)
    with TestClient(app) as c:
        codes = [c.post("/v1/scores", json={"patient_id": PATIENT}, headers=auth).status_code for _ in range(3)]
        last = c.post("/v1/scores", json={"patient_id": PATIENT}, headers=auth)
    assert codes == [200, 200, 429]
    assert "rate limit of 2 requests per minute" in last.json()["error"]["message"]
    assert int(last.headers["retry-after"]) >= 1


def test_api_get_score_bad_and_unknown_ids(client, auth):
    r = client.get("/v1/scores/not-an-id", headers=auth)
    assert r.status_code == 422 and "32 lower-case hex" in r.json()["error"]["message"]
    r = client.get("/v1/scores/" + "a" * 32, headers=auth)
    assert r.status_code == 404 and "no score" in r.json()["error"]["message"]


def test_api_internal_error_hides_the_traceback(make_app, auth, caplog):
    def broken_reader(ids):
        raise RuntimeError("secret detail from the feature store")

    app, ledger = make_app(read_features=broken_reader)
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level(logging.ERROR, "facesurv.serving"):
        r = c.post("/v1/scores", json={"patient_id": PATIENT}, headers=auth)
    assert r.status_code == 500
    msg = r.json()["error"]["message"]
    assert msg.startswith("internal error (request id ") and "secret" not in r.text and "Traceback" not in r.text
    assert "secret detail" in caplog.text  # the operator still sees it
    assert ledger.count() == 0


def test_api_logs_pseudonymise_patient_ids(client, auth, caplog):
    from serving.privacy import pseudonym

    with caplog.at_level(logging.INFO, "facesurv.serving"):
        r = client.post("/v1/scores", json={"patient_id": PATIENT}, headers=auth)
    assert r.status_code == 200
    assert PATIENT not in caplog.text
    assert pseudonym(PATIENT, b"k" * 32) in caplog.text and r.json()["score_id"] in caplog.text


def test_api_health_ready_openapi_and_headers(client, auth):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "problems": []}
    status = client.get("/v1/status", headers=auth).json()
    assert status["model"]["alias"] == "champion" and status["photo_scoring"] is False
    spec = client.get("/openapi.json").json()
    assert {"/v1/scores", "/v1/scores/photo", "/v1/scores/{score_id}", "/healthz", "/readyz"} <= set(spec["paths"])
    r = client.get("/healthz")
    assert r.headers["x-content-type-options"] == "nosniff" and "default-src 'self'" in r.headers["content-security-policy"]
    assert client.get("/docs").status_code == 404  # the stock docs page needs a CDN


def test_api_readyz_without_feature_store(make_app):
    app, _ = make_app(read_features=None)
    with TestClient(app) as c:
        r = c.get("/readyz")
    assert r.status_code == 503 and "no online feature store" in r.json()["problems"][0]


def _png(w: int = 64, h: int = 64) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (120, 90, 80)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(("files", "data", "status", "reason"), [
    ({"photo": ("a.gif", b"GIF89a....", "image/gif")}, {"patient_id": "p1"}, 415, "'image/gif' is not accepted"),
    ({"photo": ("a.png", b"not an image", "image/png")}, {"patient_id": "p1"}, 415, "not a readable JPEG or PNG"),
    ({"photo": ("a.jpg", _png(), "image/jpeg")}, {"patient_id": "p1"}, 415, "declared JPEG but the file is PNG"),
    ({"photo": ("a.png", b"", "image/png")}, {"patient_id": "p1"}, 422, "the file is empty"),
    ({"doc": ("a.png", _png(), "image/png")}, {"patient_id": "p1"}, 422, "a file part named 'photo' is required"),
    ({"photo": ("a.png", _png(), "image/png")}, {}, 422, "patient_id: required"),
    ({"photo": ("a.png", _png(), "image/png")}, {"patient_id": "p1", "Bad-Name": "1"}, 422,
     "clinical fields are lower_snake_case"),
    ({"photo": ("a.png", _png(200, 300), "image/png")}, {"patient_id": "p1"}, 413,
     "200x300 = 60000 pixels; the limit is 50000"),
    ({"photo": ("a.png", _png(), "image/png")}, {"patient_id": "p1"}, 503, "photo scoring is not available"),
])
def test_api_photo_upload_checks(make_app, auth, files, data, status, reason):
    app, ledger = make_app(max_upload_pixels=50_000)
    with TestClient(app) as c:
        r = c.post("/v1/scores/photo", files=files, data=data, headers=auth)
    assert r.status_code == status, r.text
    assert reason in r.json()["error"]["message"]
    assert ledger.count() == 0


def test_api_photo_upload_size_limit(make_app, auth):
    app, _ = make_app(max_upload_bytes=1000)
    with TestClient(app) as c:
        r = c.post("/v1/scores/photo", files={"photo": ("a.png", _png(400, 400), "image/png")},
                   data={"patient_id": "p1"}, headers=auth)
        json_body = c.post("/v1/scores/photo", json={"patient_id": "p1"}, headers=auth)
    assert r.status_code == 413 and "exceeds the limit of 1000 bytes" in r.json()["error"]["message"]
    assert json_body.status_code == 415 and "multipart/form-data" in json_body.json()["error"]["message"]


def test_api_photo_upload_needs_content_length(make_app, auth):
    app, _ = make_app()

    def chunks():
        yield b"--x\r\nContent-Disposition: form-data; name=\"patient_id\"\r\n\r\np1\r\n--x--\r\n"

    with TestClient(app) as c:
        r = c.post("/v1/scores/photo", content=chunks(),
                   headers={**auth, "content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 411 and "Content-Length" in r.json()["error"]["message"]


def test_api_fast_path_answers_as_the_route_does(client, auth):
    # application/json: the gate's fast path answers; another JSON media type: FastAPI's route does
    fast = client.post("/v1/scores", json={"patient_id": PATIENT}, headers=auth)
    routed = client.post("/v1/scores", content=b'{"patient_id": "%s"}' % PATIENT.encode(),
                         headers={**auth, "content-type": "application/vnd.facesurv+json"})
    assert fast.status_code == routed.status_code == 200
    a, b = fast.json(), routed.json()
    assert list(a) == list(b) and {k: type(v) for k, v in a.items()} == {k: type(v) for k, v in b.items()}
    assert {k: v for k, v in a.items() if k not in ("score_id", "created_at")} == \
        {k: v for k, v in b.items() if k not in ("score_id", "created_at")}
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
    assert fast.headers["x-frame-options"] == routed.headers["x-frame-options"] == "DENY"
    assert client.ledger.get(a["score_id"]) is not None and client.ledger.get(b["score_id"]) is not None


def test_api_fast_path_leaves_a_read_only_token_to_the_route(make_app):
    from serving.auth import TokenStore

    tokens = TokenStore()
    tokens.add("reader-token-0123456789", "reader", scopes=("read",))
    app, ledger = make_app(tokens=tokens)
    with TestClient(app) as c:
        r = c.post("/v1/scores", json={"patient_id": PATIENT},
                   headers={"Authorization": "Bearer reader-token-0123456789"})
    assert r.status_code == 403 and "lacks the 'score' scope" in r.json()["error"]["message"]
    assert ledger.count() == 0


def test_api_score_log_setting_is_honoured(make_app, auth, caplog):
    app, _ = make_app(score_log=False)
    with TestClient(app) as c, caplog.at_level(logging.INFO, "facesurv.serving"):
        r = c.post("/v1/scores", json={"patient_id": PATIENT}, headers=auth)
    assert r.status_code == 200 and r.json()["score_id"] not in caplog.text


def test_api_stage_timers_setting_is_honoured(make_app, auth):
    app, _ = make_app(stage_timers=True)
    with TestClient(app) as c:
        assert c.post("/v1/scores", json={"patient_id": PATIENT}, headers=auth).status_code == 200
        stages = c.get("/v1/status", headers=auth).json()["stages"]
    assert stages["process_cpu_s"] > 0 and stages["score_thread_cpu_s"] > 0
    assert {"feature_read_s", "predict_s", "records_s"} <= set(stages["score"])
    assert {"seal_sign_s", "ledger_append_s"} <= set(stages["ledger"])
    app, _ = make_app(stage_timers=False)
    with TestClient(app) as c:
        status = c.get("/v1/status", headers=auth).json()
    assert "stages" not in status and status["batching"]["score_cpu_s"] == 0.0


@pytest.mark.parametrize("key", ["score_log", "stage_timers"])
def test_api_bad_serving_switch_is_a_one_line_error(tmp_path, repo_root, key):
    import yaml

    from ground.config import load_params
    from ground.errors import ConfigError

    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    raw["serving"][key] = "sometimes"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=rf"serving\.{key}") as info:
        load_params(path)
    assert "\n" not in str(info.value)
