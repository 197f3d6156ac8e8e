"""The PostgreSQL ledger against someone with database access but not the ledger key, a
read-only verify, and a serving role that may only INSERT and SELECT."""

from __future__ import annotations

import json
import uuid

import pytest

from serving.anchor import AnchorSettings
from serving.ledger import (
    GENESIS,
    LedgerTampered,
    PostgresLedger,
    TamperedRecord,
    grant_serving_role,
    open_ledger,
)
from tests.conftest import require_server
from tests.serving.test_serving_ledger_anchor import _record, _row

pytestmark = pytest.mark.services

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
TRIGGERS = ("ledger_no_change", "ledger_no_truncate", "ledger_link")


@pytest.fixture()
def pg(tmp_path):
    require_server("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    schema = f"ledger_anchor_{uuid.uuid4().hex[:10]}"
    settings = AnchorSettings(key_path=tmp_path / "keys" / "anchor.key", anchor_file=tmp_path / "a.jsonl", every=0)
    roles: list[str] = []
    yield schema, settings, roles
    with psycopg.connect(PG_URL, autocommit=True) as con:
        con.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        for role in roles:
            con.execute(f"DROP OWNED BY {role}")
            con.execute(f"DROP ROLE IF EXISTS {role}")


def _signed(schema, settings, n, anchor_at=None):
    led = open_ledger(PG_URL, schema=schema, anchoring=settings)
    for i in range(1, n + 1):
        led.append(_record(i))
        if i == anchor_at:
            led.checkpoint("test")
    return led


def _attack(schema, fn, *, drop_head_guard=False):
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as con:
        for t in TRIGGERS:
            con.execute(f"DROP TRIGGER IF EXISTS {t} ON {schema}.ledger")
        if drop_head_guard:
            con.execute(f"DROP TRIGGER IF EXISTS ledger_head_no_delete ON {schema}.ledger_head")
        fn(con)


def _insert(con, schema, rows):
    with con.cursor() as cur:
        cur.executemany(f"INSERT INTO {schema}.ledger VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", rows)
    con.execute(f"UPDATE {schema}.ledger_head SET seq = %s, hash = %s", (rows[-1][0], rows[-1][5]))


def _check(schema, settings):
    led = open_ledger(PG_URL, schema=schema, anchoring=settings, read_only=True)
    try:
        return led.verify()
    finally:
        led.close()


def test_pg_forged_append_and_full_rewrite_are_caught(pg):
    schema, settings, _ = pg
    _signed(schema, settings, 4, anchor_at=4).close()

    def forge(con):
        seq, prev = con.execute(f"SELECT seq, hash FROM {schema}.ledger_head").fetchone()
        _insert(con, schema, [_row(seq + 1, _record(90), prev)])

    _attack(schema, forge)
    assert "seq 5: not signed although earlier records are: inserted without the ledger key (forged)" \
        in _check(schema, settings).problems
    with pytest.raises(TamperedRecord, match="not signed"):
        open_ledger(PG_URL, schema=schema, anchoring=settings, read_only=True).get(_record(90)["score_id"])

    def rewrite(con):
        old = con.execute(f"SELECT body FROM {schema}.ledger ORDER BY seq").fetchall()
        con.execute(f"DELETE FROM {schema}.ledger")
        rows, prev = [], GENESIS
        for seq, (body,) in enumerate(old, start=1):
            record = json.loads(body)["record"]
            record["result"]["risk_score"] = 0.0
            rows.append(_row(seq, record, prev))
            prev = rows[-1][5]
        _insert(con, schema, rows)

    _attack(schema, rewrite)
    probs = _check(schema, settings).problems
    assert any("(seq 4): the record there now has another hash: the chain was rewritten" in p for p in probs), probs


def test_pg_verify_is_read_only(pg):
    import psycopg

    schema, settings, _ = pg
    _signed(schema, settings, 3).close()
    _attack(schema, lambda con: con.execute(f"DELETE FROM {schema}.ledger_head"), drop_head_guard=True)
    rep = _check(schema, settings)
    assert "ledger head is missing (deleted)" in rep.problems
    assert any(p.startswith("trigger ledger_link is missing") for p in rep.problems), rep.problems
    with psycopg.connect(PG_URL) as con:  # nothing was put back
        assert con.execute(f"SELECT count(*) FROM {schema}.ledger_head").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass",
                           (f"{schema}.ledger",)).fetchone() == (0,)
    led = PostgresLedger(PG_URL, schema=schema, read_only=True)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        led._read((f"INSERT INTO {schema}.ledger_head VALUES (1, 0, %s)", (GENESIS,)))
    led.close()
    with pytest.raises(LedgerTampered, match="head row is missing"):
        PostgresLedger(PG_URL, schema=schema)


def test_pg_serving_role_may_only_insert_and_select(pg):
    import psycopg

    schema, settings, roles = pg
    role = f"facesurv_srv_{uuid.uuid4().hex[:8]}"
    roles.append(role)
    grant_serving_role(PG_URL, schema=schema, role=role)
    role_url = f"postgresql://{role}@127.0.0.1:5432/test"
    led = open_ledger(role_url, schema=schema, anchoring=settings)  # no DDL: the schema is set up
    for i in range(1, 4):
        led.append(_record(i))  # the SECURITY DEFINER trigger moves the head for it
    assert led.get(_record(2)["score_id"]).seq == 2
    assert led.checkpoint("test").seq == 3
    assert led.verify().ok
    led.close()
    refused = [f"UPDATE {schema}.ledger SET patient_id = 'x'", f"DELETE FROM {schema}.ledger",
               f"TRUNCATE {schema}.ledger", f"DROP TRIGGER ledger_no_change ON {schema}.ledger",
               f"DROP TRIGGER ledger_link ON {schema}.ledger", f"UPDATE {schema}.ledger_head SET seq = 1",
               f"DELETE FROM {schema}.ledger_head", f"ALTER TABLE {schema}.ledger DISABLE TRIGGER ALL",
               f"DROP TABLE {schema}.ledger"]
    with psycopg.connect(role_url, autocommit=True) as con:
        for sql in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                con.execute(sql)
        # even a well-formed insert by hand must extend the head, and has no signature
        seq, prev = con.execute(f"SELECT seq, hash FROM {schema}.ledger_head").fetchone()
        with pytest.raises(psycopg.errors.RaiseException, match="must extend the head"):
            con.execute(f"INSERT INTO {schema}.ledger VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        _row(seq + 5, _record(50), prev))
    assert _check(schema, settings).ok


def test_pg_grant_refuses_a_superuser(pg):
    from ground.errors import ConfigError

    schema, _, _ = pg
    with pytest.raises(ConfigError, match="superuser"):
        grant_serving_role(PG_URL, schema=schema, role="postgres")
