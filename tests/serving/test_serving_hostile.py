"""Hostile requests: the gate checks the token, the rate and the body size before any body is
read; scopes decide who scores and who reads; /readyz tells an anonymous caller nothing inside."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from ground.errors import ConfigError
from serving.auth import TokenStore, add_token_to_file, read_token_entries, revoke_token_in_file
from tests.serving.conftest import TOKEN

PATIENT = "gbsg2-00001"
SCORER = "scorer-token-0123456789ab"
AUDITOR = "auditor-token-0123456789a"
OTHER = "other-scorer-0123456789ab"


@pytest.fixture()
def scoped(make_app):
    tokens = TokenStore()
    tokens.add(SCORER, "scorer", scopes=["score"])
    tokens.add(OTHER, "other", scopes=["score"])
    tokens.add(AUDITOR, "auditor", scopes=["read"])
    app, ledger = make_app(tokens=tokens)
    with TestClient(app) as c:
        yield c


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _raw_call(app, *, headers: list[tuple[bytes, bytes]], chunks: list[bytes]) -> tuple[int, dict, bool]:
    """Drive the ASGI app directly: (status, JSON body, whether the app read any of the body)."""
    read = {"any": False}
    queue = list(chunks)

    async def receive() -> dict:
        read["any"] = True
        body = queue.pop(0) if queue else b""
        return {"type": "http.request", "body": body, "more_body": bool(queue)}

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/scores", "raw_path": b"/v1/scores", "query_string": b"",
             "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), read["any"]


def test_a_request_without_a_token_is_refused_before_its_body_is_read(make_app):
    app, _ = make_app()
    big = b'{"patient_id": "' + b"x" * 300_000 + b'"}'
    status, body, read = _raw_call(app, headers=[(b"content-type", b"application/json"),
                                                 (b"content-length", str(len(big)).encode())], chunks=[big])
    assert status == 401 and "missing bearer token" in body["error"]["message"]
    assert read is False


def test_a_declared_body_over_the_limit_is_refused_unread(make_app):
    app, _ = make_app(max_body_bytes=1024)
    status, body, read = _raw_call(app, headers=[(b"authorization", f"Bearer {TOKEN}".encode()),
                                                 (b"content-type", b"application/json"),
                                                 (b"content-length", b"300000000")], chunks=[b"{}"])
    assert status == 413 and "exceeds the limit of 1024 bytes" in body["error"]["message"]
    assert read is False


def test_a_chunked_body_is_cut_at_the_limit(make_app):
    app, _ = make_app(max_body_bytes=1024)
    chunks = [b'{"patient_id": "', *[b"x" * 512] * 8, b'"}']  # no Content-Length: streamed
    status, body, _ = _raw_call(app, headers=[(b"authorization", f"Bearer {TOKEN}".encode()),
                                              (b"content-type", b"application/json")], chunks=chunks)
    assert status == 413 and "exceeds the limit of 1024 bytes" in body["error"]["message"]


def test_a_photo_upload_over_its_limit_is_refused_after_the_token(make_app):
    app, _ = make_app(max_upload_bytes=1000)
    with TestClient(app) as c:
        anon = c.post("/v1/scores/photo", content=b"x" * 200_000, headers={"content-type": "multipart/form-data"})
        big = c.post("/v1/scores/photo", content=b"x" * 200_000,
                     headers={**_bearer(TOKEN), "content-type": "multipart/form-data; boundary=b"})
    assert anon.status_code == 401
    assert big.status_code == 413 and "exceeds the limit" in big.json()["error"]["message"]


def test_a_score_token_cannot_read_the_status_or_other_clients_scores(scoped):
    mine = scoped.post("/v1/scores", json={"patient_id": PATIENT}, headers=_bearer(SCORER))
    assert mine.status_code == 200
    sid = mine.json()["score_id"]
    assert scoped.get(f"/v1/scores/{sid}", headers=_bearer(SCORER)).status_code == 200  # its own
    theirs = scoped.get(f"/v1/scores/{sid}", headers=_bearer(OTHER))
    assert theirs.status_code == 404 and f"no score {sid}" in theirs.json()["error"]["message"]
    status = scoped.get("/v1/status", headers=_bearer(SCORER))
    assert status.status_code == 403 and "lacks the 'read' scope" in status.json()["error"]["message"]


def test_a_read_token_reads_any_score_but_cannot_score(scoped):
    sid = scoped.post("/v1/scores", json={"patient_id": PATIENT}, headers=_bearer(SCORER)).json()["score_id"]
    got = scoped.get(f"/v1/scores/{sid}", headers=_bearer(AUDITOR))
    assert got.status_code == 200 and got.json()["lineage"]["requested_by"] == "scorer"
    refused = scoped.post("/v1/scores", json={"patient_id": PATIENT}, headers=_bearer(AUDITOR))
    assert refused.status_code == 403 and "lacks the 'score' scope" in refused.json()["error"]["message"]
    status = scoped.get("/v1/status", headers=_bearer(AUDITOR)).json()
    assert status["model"]["alias"] == "champion" and "batching" in status


def test_readyz_names_no_model_run_or_counter(scoped):
    body = scoped.get("/readyz").json()
    assert body == {"status": "ready", "problems": []}


def test_tokens_keep_their_history_and_can_be_revoked(tmp_path):
    path = tmp_path / "tokens.json"
    first = add_token_to_file(path, "lab-1", scopes=["score", "read"])
    created = read_token_entries(path)[0]["created_at"]
    add_token_to_file(path, "lab-2")
    entries = {e["name"]: e for e in read_token_entries(path)}
    assert entries["lab-1"]["created_at"] == created and entries["lab-1"]["scopes"] == ["score", "read"]
    assert entries["lab-2"]["scopes"] == ["score"]
    assert TokenStore.load(file=path).authenticate(first).scopes == {"score", "read"}
    revoke_token_in_file(path, "lab-1")
    assert TokenStore.load(file=path).authenticate(first) is None
    assert read_token_entries(path)[0]["revoked_at"]
    with pytest.raises(ConfigError, match="already revoked"):
        revoke_token_in_file(path, "lab-1")
    with pytest.raises(ConfigError, match="no token named 'lab-9'"):
        revoke_token_in_file(path, "lab-9")
    with pytest.raises(ConfigError, match="revoked names stay taken"):
        add_token_to_file(path, "lab-1")
    with pytest.raises(ConfigError, match="token scope admin is not known"):
        add_token_to_file(path, "lab-3", scopes=["admin"])


def test_a_tokens_file_without_scopes_keeps_both(tmp_path):
    from serving.auth import hash_token

    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [{"name": "old", "sha256": hash_token("x" * 20)}]}))
    assert TokenStore.load(file=path).authenticate("x" * 20).scopes == {"score", "read"}


@pytest.mark.parametrize(("host", "warned"), [
    ("0.0.0.0", True), ("::", True), ("192.168.1.5", True), ("example.org", True),
    ("127.0.0.1", False), ("127.0.0.2", False), ("::1", False), ("[::1]", False), ("localhost", False),
])
def test_a_bind_beyond_loopback_warns_about_plain_http(host, warned):
    from facesurv.cli.serve_cmd import plain_http_warning

    message = plain_http_warning(host)
    assert (message is not None) == warned
    if warned:
        assert "plain HTTP" in message and "docs/security.md" in message


class _NeverEmbed:
    """A photo pipeline that fails the test if a request gets as far as projecting."""

    def __call__(self, image: bytes):
        raise AssertionError("a request with bad clinical fields was projected")


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 90, 80)).save(buf, format="PNG")
    return buf.getvalue()


GOOD = {"age": "61", "estrec": "20", "pnodes": "3", "progrec": "40", "tsize": "25"}


@pytest.mark.parametrize(("field", "value", "reason"), [
    ("age", "-50", "age: '-50' is out of range"),
    ("age", "1e308", "age: '1e308' is out of range"),
    ("age", "nan", "age: 'nan' is not a finite number"),
    ("tsize", "inf", "tsize: 'inf' is not a finite number"),
    ("age", "old", "age: 'old' is not a"),
    ("pnodes", "-7", "pnodes: '-7' is out of range"),
    ("pnodes", "2.5", "pnodes: '2.5' is not a whole number"),
    ("tgrade", "IV", "tgrade: 'IV' is not a known level"),
])
def test_photo_clinical_fields_follow_the_contract_rules(make_app, auth, field, value, reason):
    app, ledger = make_app(embed_photo=_NeverEmbed())
    with TestClient(app) as c:
        r = c.post("/v1/scores/photo", files={"photo": ("a.png", _png(), "image/png")},
                   data={"patient_id": "new-1", **GOOD, field: value}, headers=auth)
    assert r.status_code == 422, r.text
    assert reason in r.json()["error"]["message"]
    assert ledger.count() == 0


def test_photo_patient_id_with_a_trailing_newline_is_refused(make_app, auth):
    app, ledger = make_app(embed_photo=_NeverEmbed())
    with TestClient(app) as c:
        r = c.post("/v1/scores/photo", files={"photo": ("a.png", _png(), "image/png")},
                   data={"patient_id": "p1\n", **GOOD}, headers=auth)
    assert r.status_code == 422 and "patient_id" in r.json()["error"]["message"]


def test_the_openapi_document_declares_the_bearer_scheme_on_v1_routes(make_app):
    app, _ = make_app()
    spec = app.openapi()
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer", "description": "an API token from `facesurv serve token NAME`"}
    for path, method in [("/v1/scores", "post"), ("/v1/scores/photo", "post"), ("/v1/scores/{score_id}", "get"),
                         ("/v1/status", "get")]:
        assert spec["paths"][path][method]["security"] == [{"HTTPBearer": []}], path
    assert "security" not in spec["paths"]["/readyz"]["get"]


def test_a_content_length_that_is_not_a_number_is_refused_unread(make_app):
    app, _ = make_app()
    status, body, read = _raw_call(app, headers=[(b"authorization", f"Bearer {TOKEN}".encode()),
                                                 (b"content-type", b"application/json"),
                                                 (b"content-length", b"-5")], chunks=[b"{}"])
    assert status == 400 and "Content-Length must be a whole number" in body["error"]["message"]
    assert read is False
