"""GET /v1/scores/{id} must not hand out a record edited in the database as authentic.

serving/app.py maps the ledger's TamperedRecord to an error; until then FastAPI answers 500.
Either way: never 200 with the edited record.
"""

from __future__ import annotations

import sqlite3

from fastapi.testclient import TestClient

PATIENT = "gbsg2-00001"


def test_api_get_refuses_a_record_edited_in_the_database(make_app, auth):
    app, ledger = make_app()
    with TestClient(app, raise_server_exceptions=False) as c:
        first = c.post("/v1/scores", json={"patient_id": PATIENT}, headers=auth).json()
        assert c.get(f"/v1/scores/{first['score_id']}", headers=auth).status_code == 200
        con = sqlite3.connect(ledger.path, isolation_level=None)
        con.execute("DROP TRIGGER ledger_no_update")
        con.execute("UPDATE ledger SET body = replace(body, '\"risk_percentile\":', '\"risk_percentile\":1') "
                    "WHERE score_id = ?", (first["score_id"],))
        con.close()
        r = c.get(f"/v1/scores/{first['score_id']}", headers=auth)
    assert r.status_code >= 409, r.text
    assert '"risk_percentile":1' not in r.text
