"""The demo's last stage: score a patient through the real HTTP API, print its audit trail,
verify the ledger, and show that tampering (on a copy of the ledger) is detected.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

from ground.config import Params
from ground.workspace import Workspace


def tamper_copy_detected(ledger_path: Path, score_id: str) -> tuple[str, ...]:
    """Copy the SQLite ledger, change the score's risk in the copy as an attacker would
    (dropping the append-only trigger first), and return what verify reports on the copy."""
    from serving.ledger import SQLiteLedger

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "ledger-copy.db"
        src = sqlite3.connect(ledger_path)
        dst = sqlite3.connect(copy)
        src.backup(dst)  # consistent even with the WAL in use
        src.close()
        dst.execute("DROP TRIGGER IF EXISTS ledger_no_update")
        dst.execute("UPDATE ledger SET body = replace(body, '\"risk_percentile\":', '\"risk_percentile\":1') "
                    "WHERE score_id = ?", (score_id,))
        dst.commit()
        dst.close()
        led = SQLiteLedger(copy)
        try:
            return led.verify().problems
        finally:
            led.close()


def score_through_api(ws: Workspace, params: Params, *, patient_id: str | None = None,
                      log: Callable[[str], None] = print) -> str:
    """Start the API, score one patient over HTTP, print the audit trail; returns a one-line summary.

    patient_id None: the first patient of data/clinical/clinical.csv. Needs a champion in the
    workspace registry and materialised online features (the earlier demo stages).
    """
    import httpx

    from facesurv.components import build_server
    from ground.errors import DataError
    from serving.audit import provenance_lines
    from serving.auth import TOKEN_ENV, new_token
    from serving.examples import curl_examples
    from serving.threaded import serve_in_thread

    if patient_id is None:
        import pandas as pd

        clinical = ws.data_dir / "clinical" / "clinical.csv"
        patient_id = str(pd.read_csv(clinical, usecols=["patient_id"])["patient_id"].iloc[0])
    token = new_token()
    server = build_server(ws, params, env={**os.environ, TOKEN_ENV: token}, photo_scoring=False)
    for note in server.notes:
        log(f"note: {note}")
    with serve_in_thread(server.app) as base:
        log(f"API up at {base} (model {server.model}; ledger {server.ledger_location}); call it with\n"
            f"  export FACESURV_TOKEN=<a token from `facesurv serve token NAME` or {TOKEN_ENV}>\n"
            + curl_examples(base, patient_id=patient_id))
        headers = {"Authorization": f"Bearer {token}"}
        r = httpx.post(f"{base}/v1/scores", json={"patient_id": patient_id}, headers=headers, timeout=120)
        if r.status_code != 200:
            raise DataError(f"scoring {patient_id} through the API failed: {r.status_code} {r.text[:300]}")
        score = r.json()
        looked_up = httpx.get(f"{base}/v1/scores/{score['score_id']}", headers=headers, timeout=60).json()
    surv = ", ".join(f"{s['days']}d {s['probability']:.2f}" for s in score["survival"])
    log(f"POST /v1/scores {patient_id}: risk {score['risk_score']:.3f} (percentile {score['risk_percentile']:.0f}), "
        f"survival {surv}, score_id {score['score_id']}")
    entry = server.ledger.get(score["score_id"])
    if entry is None or looked_up["lineage"] != entry.record:
        raise DataError(f"score {score['score_id']} is not in the ledger as the API returned it")
    log("audit trail (`facesurv audit " + score["score_id"] + "`):")
    for line in provenance_lines(entry, where=server.ledger_location):
        log(line)
    rep = server.ledger.verify()
    log(f"`facesurv audit verify`: {'intact' if rep.ok else 'TAMPERED'}, {rep.records} records, "
        f"head {rep.head_hash[:16]}…")
    tamper = "skipped (PostgreSQL ledger)"
    if server.ledger_location.startswith("sqlite:"):
        problems = tamper_copy_detected(ws.ledger_path, score["score_id"])
        tamper = "detected" if problems else "NOT DETECTED"
        log(f"tampering with a copy of the ledger (risk percentile edited): {tamper}: "
            + ("; ".join(problems) if problems else "-"))
    server.ledger.close()
    if not rep.ok or tamper == "NOT DETECTED":
        raise DataError("the lineage ledger failed its integrity check; run `facesurv audit verify`")
    return (f"scored {patient_id} via the API (risk {score['risk_score']:.3f}, score_id {score['score_id']}); "
            f"ledger intact with {rep.records} records; tampering {tamper}")


