"""The PostgreSQL ledger (scale profile): tables, triggers and a serving role that may only
INSERT and SELECT. The chain logic is serving/ledger.py's; this adds the dialect and the guards.

The owner (whoever first opens the schema, or `facesurv audit grant`) creates the tables and
triggers. The head row is moved by a SECURITY DEFINER insert trigger owned by the owner, so the
serving role needs no UPDATE privilege, and the chain lock is a transaction-level advisory lock,
which needs none either.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from ground.errors import ConfigError, NotAvailableError
from serving.anchor import AnchorLog, LedgerKey
from serving.ledger_base import (
    BASE_COLUMNS,
    COLUMNS,
    GENESIS,
    HEAD_MISSING,
    LedgerBase,
    LedgerEntry,
    LedgerTampered,
    missing_trigger,
)

log = logging.getLogger("facesurv.ledger")


_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresLedger(LedgerBase):
    """The scale-profile ledger: tables in one schema of a PostgreSQL database.

    The owner (whoever first opens it, or `facesurv audit grant`) creates the tables and triggers;
    a serving role with only INSERT and SELECT (`grant_serving_role`) can then append and read,
    because the head is moved by a SECURITY DEFINER trigger, not by the role.
    """

    _p = "%s"
    _TRIGGERS = ("ledger_no_change", "ledger_no_truncate", "ledger_link", "ledger_head_no_delete")
    _LEGACY_TRIGGERS = ("ledger_no_change", "ledger_no_truncate")

    def __init__(self, conninfo: str, *, schema: str = "facesurv_ledger", key: LedgerKey | None = None,
                 anchor_log: AnchorLog | None = None, anchor_every: int = 0, read_only: bool = False) -> None:
        import psycopg

        if not _IDENT.match(schema):
            raise ValueError(f"ledger schema {schema!r} must be lower-case letters, digits and '_'")
        self.conninfo, self.schema, self.read_only = conninfo, schema, read_only
        self._t, self._h = f"{schema}.ledger", f"{schema}.ledger_head"
        self._lock = threading.Lock()
        self._conn = psycopg.connect(conninfo, autocommit=False)
        if read_only:
            self._conn.read_only = True  # every transaction is READ ONLY: PostgreSQL refuses writes
        try:
            state = self._state()
            if not state["ledger"]:
                if read_only:
                    raise NotAvailableError(f"postgresql schema {schema} has no ledger yet")
                self._create()
            elif not read_only and (not state["sig"] or set(self._TRIGGERS) - state["triggers"]):
                self._create()  # an older layout, or dropped triggers: only the owner can do this
            elif not read_only and not state["head_row"]:
                raise LedgerTampered(f"postgresql schema {schema}: {HEAD_MISSING}")
            self._cols = COLUMNS if self._state()["sig"] else BASE_COLUMNS + ", NULL"
        except BaseException:
            self._conn.close()
            raise
        self._anchoring(key, anchor_log, anchor_every)

    def _state(self) -> dict[str, Any]:
        s = self.schema
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute("SELECT to_regclass(%s), to_regclass(%s)", (self._t, self._h))
            ledger, head = (x is not None for x in cur.fetchone())
            cur.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = %s "
                        "AND table_name = 'ledger' AND column_name = 'sig'", (s,))
            sig = cur.fetchone()[0] > 0
            cur.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgrelid IN "
                        "(SELECT oid FROM pg_class WHERE relnamespace = to_regnamespace(%s))", (s,))
            triggers = {r[0] for r in cur.fetchall()}
            head_row = False
            if head:
                cur.execute(f"SELECT count(*) FROM {self._h}")
                head_row = cur.fetchone()[0] > 0
        return {"ledger": ledger, "head": head, "sig": sig, "triggers": triggers, "head_row": head_row}

    def _create(self) -> None:
        import psycopg

        s = self.schema
        try:
            with self._lock, self._conn.transaction():
                c = self._conn
                # serialise concurrent first-time set-up from several processes
                c.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"facesurv-ledger-{s}",))
                existed = c.execute("SELECT to_regclass(%s)", (self._t,)).fetchone()[0] is not None
                c.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
                c.execute(f"""CREATE TABLE IF NOT EXISTS {s}.ledger (
                    seq BIGINT PRIMARY KEY, score_id TEXT NOT NULL UNIQUE, patient_id TEXT NOT NULL,
                    created_at TEXT NOT NULL, prev_hash TEXT NOT NULL UNIQUE, hash TEXT NOT NULL UNIQUE,
                    body TEXT NOT NULL, sig TEXT)""")
                c.execute(f"ALTER TABLE {s}.ledger ADD COLUMN IF NOT EXISTS sig TEXT")
                c.execute(f"CREATE INDEX IF NOT EXISTS ledger_patient ON {s}.ledger (patient_id)")
                c.execute(f"""CREATE TABLE IF NOT EXISTS {s}.ledger_head (
                    id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash TEXT NOT NULL)""")
                if not existed:  # only a new ledger gets a head: a deleted one is tampering, not a reset
                    c.execute(f"INSERT INTO {s}.ledger_head VALUES (1, 0, %s) ON CONFLICT (id) DO NOTHING",
                              (GENESIS,))
                c.execute(f"""CREATE OR REPLACE FUNCTION {s}.ledger_append_only() RETURNS trigger
                    LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the ledger is append-only'; END $$""")
                # SECURITY DEFINER: the serving role inserts; the owner's function moves the head
                c.execute(f"""CREATE OR REPLACE FUNCTION {s}.ledger_extend_head() RETURNS trigger
                    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
                    DECLARE h_seq bigint; h_hash text;
                    BEGIN
                        SELECT seq, hash INTO h_seq, h_hash FROM {s}.ledger_head WHERE id = 1;
                        IF NOT FOUND THEN RAISE EXCEPTION 'the ledger head row is missing'; END IF;
                        IF NEW.seq <> h_seq + 1 OR NEW.prev_hash <> h_hash THEN
                            RAISE EXCEPTION 'a ledger insert must extend the head (seq %)', h_seq;
                        END IF;
                        UPDATE {s}.ledger_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1;
                        RETURN NEW;
                    END $$""")
                c.execute(f"REVOKE ALL ON FUNCTION {s}.ledger_extend_head() FROM PUBLIC")
                for name, when, table, level, fn in (
                        ("ledger_no_change", "BEFORE UPDATE OR DELETE", "ledger", "ROW", "ledger_append_only"),
                        ("ledger_no_truncate", "BEFORE TRUNCATE", "ledger", "STATEMENT", "ledger_append_only"),
                        ("ledger_link", "BEFORE INSERT", "ledger", "ROW", "ledger_extend_head"),
                        ("ledger_head_no_delete", "BEFORE DELETE OR TRUNCATE", "ledger_head", "STATEMENT",
                         "ledger_append_only")):
                    c.execute(f"CREATE OR REPLACE TRIGGER {name} {when} ON {s}.{table} "
                              f"FOR EACH {level} EXECUTE FUNCTION {s}.{fn}()")
                head = c.execute(f"SELECT count(*) FROM {s}.ledger_head").fetchone()[0]
        except psycopg.errors.InsufficientPrivilege:
            raise ConfigError(f"ledger schema {s} is missing, outdated or has dropped triggers, and this database "
                              "role may not set it up: run `facesurv audit grant ROLE` as the ledger's owner") from None
        if existed:
            log.warning("ledger schema %s: (re)created its triggers and columns", s)
        if not head:
            raise LedgerTampered(f"postgresql schema {s}: {HEAD_MISSING}")

    def describe(self) -> str:
        return f"postgresql schema {self.schema}"

    def _append_locked(self, records: list[dict[str, Any]]) -> list[LedgerEntry]:
        s = self.schema
        with self._conn.transaction(), self._conn.cursor() as cur:
            # the chain lock across every process writing this ledger; needs no UPDATE privilege
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"facesurv-ledger-append-{s}",))
            cur.execute(f"SELECT seq, hash FROM {s}.ledger_head WHERE id = 1")
            head = cur.fetchone()
            if head is None:
                raise LedgerTampered(f"postgresql schema {s}: {HEAD_MISSING}")
            linked = self._link(int(head[0]), head[1], records)
            # the ledger_link trigger checks each row extends the head, and moves it
            cur.executemany(f"INSERT INTO {s}.ledger ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                            [row for _, row in linked])
        return [e for e, _ in linked]

    def _read(self, *queries: tuple[str, tuple]) -> list[list[tuple]]:
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            out = []
            for sql, args in queries:
                cur.execute(sql, args)
                out.append(cur.fetchall())
            return out

    def _guard_problems(self) -> tuple[list[str], bool]:
        state = self._state()
        problems = [] if state["head"] else [f"table {self._h} is missing (dropped)"]
        wanted = self._TRIGGERS if state["sig"] else self._LEGACY_TRIGGERS
        problems += [missing_trigger(n) for n in wanted if n not in state["triggers"]]
        return problems, state["head"]


def grant_serving_role(conninfo: str, *, schema: str, role: str) -> None:
    """As the ledger's owner: set the schema up, create `role` (LOGIN, no password) if needed, and
    give it USAGE on the schema, INSERT and SELECT on the records, SELECT on the head, nothing else."""
    import psycopg

    if not _IDENT.match(role):
        raise ConfigError(f"role {role!r} must be lower-case letters, digits and '_'")
    PostgresLedger(conninfo, schema=schema).close()
    with psycopg.connect(conninfo, autocommit=True) as con:
        found = con.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if found and found[0]:
            raise ConfigError(f"role {role} is a superuser: PostgreSQL checks no privileges for it; "
                              "pick a plain role for serving")
        schema_row = con.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = %s",
                                 (schema,)).fetchone()
        assert schema_row is not None  # PostgresLedger(...) above created the schema
        owner = schema_row[0]
        if owner == role:
            raise ConfigError(f"role {role} owns schema {schema}: an owner can drop its triggers; "
                              "pick another role for serving")
        if not found:
            con.execute(f"CREATE ROLE {role} LOGIN")
        con.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {role}")
        con.execute(f"REVOKE ALL ON SCHEMA {schema} FROM {role}")
        con.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        con.execute(f"GRANT SELECT, INSERT ON {schema}.ledger TO {role}")
        con.execute(f"GRANT SELECT ON {schema}.ledger_head TO {role}")
