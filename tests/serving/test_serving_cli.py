"""`facesurv audit show|verify` and `facesurv serve token` on a workspace ledger."""

from __future__ import annotations

import sqlite3

from facesurv.cli import main
from serving.ledger import SQLiteLedger


def _ledger(ws, n=3):
    led = SQLiteLedger(ws.ledger_path)
    ids = []
    for i in range(n):
        rec = {"score_id": f"{i:032x}", "patient_id": f"p{i}", "time": f"2026-01-0{i + 1}T00:00:00+00:00",
               "result": {"risk_score": 0.5 + i}, "model": {"name": "m", "version": "3", "run_id": "r1"},
               "inputs": {"feature_service": "prognosis_v1", "photo": {"sha256": "ab" * 32}}}
        ids.append(led.append(rec).score_id)
    led.close()
    return ids


def test_cli_audit_show_prints_provenance(workspace, capsys):
    ids = _ledger(workspace)
    assert main(["audit", "show", ids[1], "--workspace", str(workspace.root)]) == 0
    text = capsys.readouterr().out
    assert f"score {ids[1]}  (ledger seq 2" in text
    assert "inputs.photo.sha256" in text and "ab" * 32 in text and "model.run_id" in text
    assert "ledger chain: intact, 3 records" in text
    # bare form
    assert main(["audit", ids[0], "--workspace", str(workspace.root)]) == 0
    assert f"score {ids[0]}" in capsys.readouterr().out


def test_cli_audit_unknown_score_and_missing_ledger(workspace, capsys):
    assert main(["audit", "show", "f" * 32, "--workspace", str(workspace.root)]) == 3
    assert "no ledger yet" in capsys.readouterr().err
    _ledger(workspace)
    assert main(["audit", "show", "f" * 32, "--workspace", str(workspace.root)]) == 2
    assert f"no score '{'f' * 32}' in the ledger" in capsys.readouterr().err


def test_cli_audit_verify_detects_tampering(workspace, capsys):
    _ledger(workspace)
    assert main(["audit", "verify", "--workspace", str(workspace.root)]) == 0
    out = capsys.readouterr().out
    assert "intact, 3 records" in out
    head = out.split("hash ")[-1].strip()
    assert main(["audit", "verify", "--expect-head", head, "--workspace", str(workspace.root)]) == 0
    assert main(["audit", "verify", "--expect-head", "0" * 64, "--workspace", str(workspace.root)]) == 1
    assert "the chain was rewritten" in capsys.readouterr().err

    con = sqlite3.connect(workspace.ledger_path, isolation_level=None)
    con.execute("DROP TRIGGER ledger_no_update")
    con.execute("UPDATE ledger SET body = replace(body, '\"risk_score\":1.5', '\"risk_score\":0.1') WHERE seq = 2")
    con.close()
    assert main(["audit", "verify", "--workspace", str(workspace.root)]) == 1
    err = capsys.readouterr().err
    assert "TAMPERED: seq 2: record edited" in err
    assert main(["audit", "show", "0" * 31 + "1", "--workspace", str(workspace.root)]) == 1
    assert "TAMPERED" in capsys.readouterr().out


def test_cli_serve_token_prints_once_and_stores_hash(workspace, capsys):
    from serving.auth import TokenStore

    assert main(["serve", "token", "lab-1", "--workspace", str(workspace.root)]) == 0
    cap = capsys.readouterr()
    token = cap.out.strip()
    path = workspace.root / "serving" / "tokens.json"
    assert "only its hash is stored" in cap.err and token not in path.read_text()
    assert TokenStore.load(file=path).authenticate(token).name == "lab-1"


def test_cli_serve_token_scopes_list_and_revoke(workspace, capsys):
    from serving.auth import TokenStore

    root = ["--workspace", str(workspace.root)]
    assert main(["serve", "token", "auditor", "--scope", "read", *root]) == 0
    token = capsys.readouterr().out.strip()
    path = workspace.root / "serving" / "tokens.json"
    assert TokenStore.load(file=path).authenticate(token).scopes == {"read"}
    assert main(["serve", "token", "bad", "--scope", "admin", *root]) != 0
    assert "token scope admin is not known" in capsys.readouterr().err
    assert main(["serve", "token", "auditor", "--revoke", *root]) == 0
    assert "revoked token 'auditor'" in capsys.readouterr().err
    assert TokenStore.load(file=path).authenticate(token) is None
    assert main(["serve", "tokens", *root]) == 0
    listed = capsys.readouterr().out
    assert "auditor  read  created " in listed and "revoked " in listed and token not in listed


def test_cli_serve_tls_options_go_together(workspace, tmp_path, capsys):
    cert = tmp_path / "cert.pem"
    cert.write_text("not checked before the pair is complete")
    assert main(["serve", "--tls-cert", str(cert), "--workspace", str(workspace.root)]) != 0
    assert "give --tls-cert and --tls-key together" in capsys.readouterr().err
    assert main(["serve", "--tls-cert", str(cert), "--tls-key", str(tmp_path / "nope.pem"),
                 "--workspace", str(workspace.root)]) != 0
    assert "nope.pem: no such file" in capsys.readouterr().err
