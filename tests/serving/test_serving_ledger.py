"""The ledger chain: appends, concurrency, and tampering done directly in the database."""

from __future__ import annotations

import sqlite3
import threading
import uuid

import pytest

from serving.ledger import (
    GENESIS,
    PostgresLedger,
    SQLiteLedger,
    canonical_json,
    check_chain,
    open_ledger,
)
from tests.conftest import require_server


def _record(i: int, patient: str = "p1") -> dict:
    return {"score_id": f"s{i:04d}", "patient_id": patient, "risk_score": 0.1 * i,
            "model": {"name": "m", "version": "1"}}


def _filled(path, n: int = 5) -> SQLiteLedger:
    led = SQLiteLedger(path)
    for i in range(1, n + 1):
        led.append(_record(i, patient=f"p{i}"))
    return led


def _tamper(path, *sql: str) -> None:
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("DROP TRIGGER IF EXISTS ledger_no_update")
    con.execute("DROP TRIGGER IF EXISTS ledger_no_delete")
    for stmt in sql:
        con.execute(stmt)
    con.close()


def test_ledger_append_chains_records(tmp_path):
    led = _filled(tmp_path / "l.db", 3)
    entries = list(led.entries())
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[0].prev_hash == GENESIS
    assert entries[1].prev_hash == entries[0].hash and entries[2].prev_hash == entries[1].hash
    assert led.get("s0002").record["patient_id"] == "p2"
    assert led.get("nope") is None
    rep = led.verify()
    assert rep.ok and rep.records == 3 and rep.head_seq == 3 and rep.head_hash == entries[2].hash


def test_ledger_reopen_continues_the_chain(tmp_path):
    led = _filled(tmp_path / "l.db", 2)
    led.close()
    led = SQLiteLedger(tmp_path / "l.db")
    e = led.append(_record(3))
    assert e.seq == 3 and led.verify().ok


def test_ledger_rejects_record_without_ids(tmp_path):
    led = SQLiteLedger(tmp_path / "l.db")
    with pytest.raises(ValueError, match="non-empty string 'score_id'"):
        led.append({"patient_id": "p"})
    with pytest.raises(ValueError, match="non-empty string 'patient_id'"):
        led.append({"score_id": "s"})
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        led.append(_record(1))
        led.append(_record(1))
    assert led.count() == 1 and led.verify().ok


def test_ledger_refuses_nan_so_hashes_stay_canonical():
    with pytest.raises(ValueError, match="not JSON compliant"):
        canonical_json({"x": float("nan")})


def test_ledger_triggers_refuse_update_and_delete(tmp_path):
    _filled(tmp_path / "l.db", 2)
    con = sqlite3.connect(tmp_path / "l.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("UPDATE ledger SET patient_id = 'x' WHERE seq = 1")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("DELETE FROM ledger WHERE seq = 1")


def test_ledger_triggers_keep_the_head(tmp_path):
    # the head moves with each insert (no UPDATE needed by the writer), an insert must extend it,
    # and the head row cannot be deleted
    led = _filled(tmp_path / "l.db", 2)
    con = sqlite3.connect(tmp_path / "l.db")
    assert con.execute("SELECT seq FROM ledger_head").fetchone() == (2,)
    with pytest.raises(sqlite3.IntegrityError, match="must extend the head"):
        con.execute("INSERT INTO ledger (seq, score_id, patient_id, created_at, prev_hash, hash, body) "
                    "VALUES (7, 'x', 'p', 't', 'a', 'b', '{}')")
    with pytest.raises(sqlite3.IntegrityError, match="kept by the ledger"):
        con.execute("DELETE FROM ledger_head")
    con.close()
    assert led.verify().ok


def test_ledger_verify_catches_edited_body(tmp_path):
    path = tmp_path / "l.db"
    _filled(path).close()
    _tamper(path, "UPDATE ledger SET body = replace(body, '\"risk_score\":0.2', '\"risk_score\":0.9') WHERE seq = 2")
    rep = SQLiteLedger(path).verify()
    assert not rep.ok
    assert any("seq 2: record edited" in p for p in rep.problems), rep.problems


def test_ledger_verify_catches_edited_column(tmp_path):
    path = tmp_path / "l.db"
    _filled(path).close()
    _tamper(path, "UPDATE ledger SET patient_id = 'someone-else' WHERE seq = 3")
    rep = SQLiteLedger(path).verify()
    assert rep.problems == ("seq 3: column patient_id edited (disagrees with the hashed record)",)


def test_ledger_verify_catches_rehashed_edit(tmp_path):
    # an attacker who rewrites a body and its hash still breaks the next record's link
    import hashlib

    path = tmp_path / "l.db"
    _filled(path).close()
    con = sqlite3.connect(path)
    body = con.execute("SELECT body FROM ledger WHERE seq = 2").fetchone()[0].replace('"p2"', '"px"')
    con.close()
    h = hashlib.sha256(body.encode()).hexdigest()
    _tamper(path, f"UPDATE ledger SET body = '{body}', hash = '{h}', patient_id = 'px' WHERE seq = 2")
    rep = SQLiteLedger(path).verify()
    assert not rep.ok
    assert any(p.startswith("seq 3: does not follow seq 2") for p in rep.problems), rep.problems


def test_ledger_verify_catches_deleted_row(tmp_path):
    path = tmp_path / "l.db"
    _filled(path).close()
    _tamper(path, "DELETE FROM ledger WHERE seq = 3")
    rep = SQLiteLedger(path).verify()
    assert not rep.ok
    assert any("seq 3 missing: deleted" in p for p in rep.problems), rep.problems


def test_ledger_verify_catches_deleted_tail(tmp_path):
    path = tmp_path / "l.db"
    _filled(path).close()
    _tamper(path, "DELETE FROM ledger WHERE seq >= 4")
    rep = SQLiteLedger(path).verify()
    assert rep.problems == ("record(s) seq 4..5 missing at the end: deleted from the ledger (the head says 5)",)


def test_ledger_verify_catches_swapped_rows(tmp_path):
    path = tmp_path / "l.db"
    _filled(path).close()
    _tamper(path, "UPDATE ledger SET seq = -1 WHERE seq = 2", "UPDATE ledger SET seq = 2 WHERE seq = 4",
            "UPDATE ledger SET seq = 4 WHERE seq = -1")
    rep = SQLiteLedger(path).verify()
    assert not rep.ok
    assert any("seq 2: holds the record written as seq 4: records reordered" in p for p in rep.problems)
    assert any("seq 4: holds the record written as seq 2: records reordered" in p for p in rep.problems)


def test_ledger_concurrent_appends_do_not_fork(tmp_path):
    # two connections (as two server processes would have) writing from several threads
    a, b = SQLiteLedger(tmp_path / "l.db"), SQLiteLedger(tmp_path / "l.db")
    errors: list[BaseException] = []

    def work(led, k):
        try:
            for i in range(20):
                led.append(_record(1000 * k + i))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(a if k % 2 else b, k)) for k in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    rep = a.verify()
    assert rep.ok and rep.records == 80


def test_check_chain_reports_missing_head():
    rep = check_chain([], None)
    assert rep.problems == ("ledger head is missing (deleted)",)


def test_open_ledger_picks_backend(tmp_path):
    assert isinstance(open_ledger(tmp_path / "x.db"), SQLiteLedger)


PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture()
def pg_ledger():
    require_server("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    schema = f"ledger_test_{uuid.uuid4().hex[:10]}"
    led = PostgresLedger(PG_URL, schema=schema)
    yield led, schema
    led.close()
    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _pg_tamper(schema: str, *sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f"DROP TRIGGER IF EXISTS ledger_no_change ON {schema}.ledger")
        for stmt in sql:
            con.execute(stmt.format(s=schema))


@pytest.mark.services
def test_pg_ledger_chain_and_tampering(pg_ledger):
    import psycopg

    led, schema = pg_ledger
    for i in range(1, 6):
        led.append(_record(i, patient=f"p{i}"))
    assert led.count() == 5 and led.verify().ok
    assert led.get("s0003").record["patient_id"] == "p3"
    with psycopg.connect(PG_URL, autocommit=True) as con, pytest.raises(psycopg.errors.RaiseException,
                                                                        match="append-only"):
        con.execute(f"DELETE FROM {schema}.ledger WHERE seq = 1")

    _pg_tamper(schema, "UPDATE {s}.ledger SET body = replace(body, '\"p2\"', '\"px\"') WHERE seq = 2")
    assert any("seq 2: record edited" in p for p in led.verify().problems)


@pytest.mark.services
def test_pg_ledger_detects_delete_and_swap(pg_ledger):
    led, schema = pg_ledger
    for i in range(1, 6):
        led.append(_record(i))
    _pg_tamper(schema, "DELETE FROM {s}.ledger WHERE seq = 2")
    assert any("seq 2 missing: deleted" in p for p in led.verify().problems)
    _pg_tamper(schema, "UPDATE {s}.ledger SET seq = -1 WHERE seq = 3", "UPDATE {s}.ledger SET seq = 3 WHERE seq = 5",
               "UPDATE {s}.ledger SET seq = 5 WHERE seq = -1")
    probs = led.verify().problems
    assert any("seq 3: holds the record written as seq 5: records reordered" in p for p in probs), probs


@pytest.mark.services
def test_pg_ledger_concurrent_writers_share_one_chain(pg_ledger):
    led, schema = pg_ledger
    other = PostgresLedger(PG_URL, schema=schema)
    try:
        threads = [threading.Thread(target=lambda lg=lg, k=k: [lg.append(_record(100 * k + i)) for i in range(15)])
                   for k, lg in enumerate((led, other, led, other), start=1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rep = led.verify()
        assert rep.ok and rep.records == 60
    finally:
        other.close()
