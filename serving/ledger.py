"""An append-only, hash-chained lineage ledger: one record per risk score.

Each record is stored as the canonical JSON of {seq, score_id, created_at, prev_hash,
record}; its hash is the sha256 of exactly that text, and the next record carries it as
prev_hash. A one-row head table holds the last seq and hash, so trimming records from the
end is caught too. `verify` walks the chain and names every edited, deleted or reordered
record. Triggers refuse UPDATE/DELETE so nothing changes a record by accident; someone with
write access to the database can drop them, which is what the hash chain is for (and what
the tests do). Anchor the head hash somewhere else (`facesurv audit verify --expect-head`)
to catch a rewrite of the whole chain.

Appends take the chain lock inside the database (SQLite `BEGIN IMMEDIATE`, PostgreSQL
`SELECT ... FOR UPDATE` on the head row), so concurrent writers, threads or processes,
cannot fork the chain.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

GENESIS = "0" * 64
MAX_PROBLEMS = 50
_COLUMNS = "seq, score_id, patient_id, created_at, prev_hash, hash, body"


@dataclasses.dataclass(frozen=True)
class LedgerEntry:
    seq: int
    score_id: str
    created_at: str
    prev_hash: str
    hash: str
    record: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    ok: bool
    records: int
    head_seq: int
    head_hash: str
    problems: tuple[str, ...]


def _jsonable(obj: Any) -> Any:
    # numpy scalars and arrays without importing numpy here
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, dt.datetime | dt.date):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"ledger record value of type {type(obj).__name__} is not JSON-serialisable")


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, no NaN: the same record always gives the same text."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False, default=_jsonable)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")


def _check_record(record: dict[str, Any]) -> None:
    for key in ("score_id", "patient_id"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise ValueError(f"ledger record needs a non-empty string {key!r}")


def _seal(seq: int, prev_hash: str, record: dict[str, Any], created_at: str) -> tuple[str, str]:
    body = canonical_json({"seq": seq, "score_id": record["score_id"], "created_at": created_at,
                           "prev_hash": prev_hash, "record": record})
    return body, sha256_text(body)


def _entry(row: Sequence[Any]) -> LedgerEntry:
    seq, score_id, _patient, created_at, prev_hash, hash_, body = row
    return LedgerEntry(int(seq), score_id, created_at, prev_hash, hash_, json.loads(body)["record"])


def check_chain(rows: Iterable[Sequence[Any]], head: tuple[int, str] | None) -> VerifyReport:
    """Walk rows (seq order) and the head; report every break. Pure: rows in, report out.

    rows: (seq, score_id, patient_id, created_at, prev_hash, hash, body) tuples.
    """
    problems: list[str] = []

    def flag(msg: str) -> None:
        if len(problems) < MAX_PROBLEMS:
            problems.append(msg)

    expected, prev_hash, count, last_seq = 1, GENESIS, 0, 0
    for seq, score_id, patient_id, created_at, prev_col, hash_col, body in rows:
        seq = int(seq)
        count += 1
        if seq != expected:
            if seq > expected:
                gap = f"seq {expected}" if seq == expected + 1 else f"seq {expected}..{seq - 1}"
                flag(f"record(s) {gap} missing: deleted from the ledger")
            else:
                flag(f"seq {seq}: duplicate or out-of-order sequence number")
        if sha256_text(body) != hash_col:
            flag(f"seq {seq}: record edited (its content no longer matches its hash)")
        try:
            payload = json.loads(body)
            claimed = payload["seq"]
            stored = {"score_id": payload["score_id"], "patient_id": payload["record"]["patient_id"],
                      "created_at": payload["created_at"], "prev_hash": payload["prev_hash"]}
        except (ValueError, KeyError, TypeError):
            flag(f"seq {seq}: record body is not a ledger record (edited)")
        else:
            if claimed != seq:
                flag(f"seq {seq}: holds the record written as seq {claimed}: records reordered")
            for name, value in zip(("score_id", "patient_id", "created_at", "prev_hash"),
                                   (score_id, patient_id, created_at, prev_col), strict=True):
                if stored[name] != value:
                    flag(f"seq {seq}: column {name} edited (disagrees with the hashed record)")
            if stored["prev_hash"] != prev_hash and seq == expected:
                flag(f"seq {seq}: does not follow seq {seq - 1} (previous-record hash differs): "
                     "a record before it was edited, replaced or reordered")
        prev_hash, last_seq, expected = hash_col, seq, seq + 1
    if head is None:
        flag("ledger head is missing (deleted)")
        head_seq, head_hash = last_seq, prev_hash
    else:
        head_seq, head_hash = int(head[0]), head[1]
        if head_seq > last_seq:
            gap = f"seq {last_seq + 1}" if head_seq == last_seq + 1 else f"seq {last_seq + 1}..{head_seq}"
            flag(f"record(s) {gap} missing at the end: deleted from the ledger (the head says {head_seq})")
        elif head_seq < last_seq or head_hash != prev_hash:
            flag(f"ledger head (seq {head_seq}) does not match the last record (seq {last_seq}): edited")
    return VerifyReport(ok=not problems, records=count, head_seq=head_seq, head_hash=head_hash,
                        problems=tuple(problems))


class _LedgerBase:
    """The chain logic; subclasses supply the connection, SQL dialect and chain lock."""

    _lock: threading.Lock

    def append(self, record: dict[str, Any]) -> LedgerEntry:
        """Write one record (must hold score_id and patient_id); returns it with its hash."""
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[dict[str, Any]]) -> list[LedgerEntry]:
        """Write records in order in one transaction (one insert each, one commit)."""
        for r in records:
            _check_record(r)
        if not records:
            return []
        with self._lock:
            return self._append_locked(list(records))

    def _append_locked(self, records: list[dict[str, Any]]) -> list[LedgerEntry]:
        raise NotImplementedError

    def _link(self, seq: int, prev: str, records: list[dict[str, Any]]) -> list[tuple[LedgerEntry, tuple]]:
        out = []
        for record in records:
            seq += 1
            created_at = record.get("time") or _now()
            body, h = _seal(seq, prev, record, created_at)
            out.append((LedgerEntry(seq, record["score_id"], created_at, prev, h, record),
                        (seq, record["score_id"], record["patient_id"], created_at, prev, h, body)))
            prev = h
        return out


class SQLiteLedger(_LedgerBase):
    """The embedded ledger: one SQLite file (WAL, fsync at every commit)."""

    def __init__(self, path: Path | str, *, timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None,
                                     check_same_thread=False)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(f"""
                BEGIN IMMEDIATE;
                CREATE TABLE IF NOT EXISTS ledger (
                    seq INTEGER PRIMARY KEY, score_id TEXT NOT NULL UNIQUE, patient_id TEXT NOT NULL,
                    created_at TEXT NOT NULL, prev_hash TEXT NOT NULL UNIQUE, hash TEXT NOT NULL UNIQUE,
                    body TEXT NOT NULL);
                CREATE INDEX IF NOT EXISTS ledger_patient ON ledger (patient_id);
                CREATE TABLE IF NOT EXISTS ledger_head (
                    id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL);
                INSERT OR IGNORE INTO ledger_head VALUES (1, 0, '{GENESIS}');
                CREATE TRIGGER IF NOT EXISTS ledger_no_update BEFORE UPDATE ON ledger
                    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
                CREATE TRIGGER IF NOT EXISTS ledger_no_delete BEFORE DELETE ON ledger
                    BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
                COMMIT;""")

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def _append_locked(self, records: list[dict[str, Any]]) -> list[LedgerEntry]:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")  # the database-wide write lock: other processes wait here
        try:
            seq, prev = c.execute("SELECT seq, hash FROM ledger_head WHERE id = 1").fetchone()
            linked = self._link(int(seq), prev, records)
            c.executemany(f"INSERT INTO ledger ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                          [row for _, row in linked])
            last = linked[-1][0]
            c.execute("UPDATE ledger_head SET seq = ?, hash = ? WHERE id = 1", (last.seq, last.hash))
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return [e for e, _ in linked]

    def get(self, score_id: str) -> LedgerEntry | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {_COLUMNS} FROM ledger WHERE score_id = ?", (score_id,)).fetchone()
        return _entry(row) if row else None

    def count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM ledger").fetchone()[0])

    def entries(self) -> Iterator[LedgerEntry]:
        for row in self._rows():
            yield _entry(row)

    def _rows(self) -> list[tuple]:
        with self._lock:
            return self._conn.execute(f"SELECT {_COLUMNS} FROM ledger ORDER BY seq").fetchall()

    def verify(self) -> VerifyReport:
        with self._lock:
            # one read transaction so rows and head are a consistent snapshot
            self._conn.execute("BEGIN")
            try:
                rows = self._conn.execute(f"SELECT {_COLUMNS} FROM ledger ORDER BY seq").fetchall()
                head = self._conn.execute("SELECT seq, hash FROM ledger_head WHERE id = 1").fetchone()
            finally:
                self._conn.execute("COMMIT")
        return check_chain(rows, head)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresLedger(_LedgerBase):
    """The scale-profile ledger: tables in one schema of a PostgreSQL database."""

    def __init__(self, conninfo: str, *, schema: str = "facesurv_ledger") -> None:
        import psycopg

        if not _IDENT.match(schema):
            raise ValueError(f"ledger schema {schema!r} must be lower-case letters, digits and '_'")
        self.conninfo, self.schema = conninfo, schema
        self._lock = threading.Lock()
        self._conn = psycopg.connect(conninfo, autocommit=False)
        s = schema
        with self._lock, self._conn.transaction():
            # serialise concurrent first-time set-up from several processes
            self._conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"facesurv-ledger-{s}",))
            self._conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            self._conn.execute(f"""CREATE TABLE IF NOT EXISTS {s}.ledger (
                seq BIGINT PRIMARY KEY, score_id TEXT NOT NULL UNIQUE, patient_id TEXT NOT NULL,
                created_at TEXT NOT NULL, prev_hash TEXT NOT NULL UNIQUE, hash TEXT NOT NULL UNIQUE,
                body TEXT NOT NULL)""")
            self._conn.execute(f"CREATE INDEX IF NOT EXISTS ledger_patient ON {s}.ledger (patient_id)")
            self._conn.execute(f"""CREATE TABLE IF NOT EXISTS {s}.ledger_head (
                id INTEGER PRIMARY KEY CHECK (id = 1), seq BIGINT NOT NULL, hash TEXT NOT NULL)""")
            self._conn.execute(f"INSERT INTO {s}.ledger_head VALUES (1, 0, %s) ON CONFLICT (id) DO NOTHING",
                               (GENESIS,))
            self._conn.execute(f"""CREATE OR REPLACE FUNCTION {s}.ledger_append_only() RETURNS trigger
                LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the ledger is append-only'; END $$""")
            self._conn.execute(f"""CREATE OR REPLACE TRIGGER ledger_no_change BEFORE UPDATE OR DELETE
                ON {s}.ledger FOR EACH ROW EXECUTE FUNCTION {s}.ledger_append_only()""")
            self._conn.execute(f"""CREATE OR REPLACE TRIGGER ledger_no_truncate BEFORE TRUNCATE
                ON {s}.ledger FOR EACH STATEMENT EXECUTE FUNCTION {s}.ledger_append_only()""")

    def describe(self) -> str:
        return f"postgresql schema {self.schema}"

    def _append_locked(self, records: list[dict[str, Any]]) -> list[LedgerEntry]:
        s = self.schema
        with self._conn.transaction(), self._conn.cursor() as cur:
            # the head row lock is the chain lock across every process writing this ledger
            cur.execute(f"SELECT seq, hash FROM {s}.ledger_head WHERE id = 1 FOR UPDATE")
            seq, prev = cur.fetchone()
            linked = self._link(int(seq), prev, records)
            cur.executemany(f"INSERT INTO {s}.ledger ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                            [row for _, row in linked])
            last = linked[-1][0]
            cur.execute(f"UPDATE {s}.ledger_head SET seq = %s, hash = %s WHERE id = 1", (last.seq, last.hash))
        return [e for e, _ in linked]

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()

    def get(self, score_id: str) -> LedgerEntry | None:
        rows = self._query(f"SELECT {_COLUMNS} FROM {self.schema}.ledger WHERE score_id = %s", (score_id,))
        return _entry(rows[0]) if rows else None

    def count(self) -> int:
        return int(self._query(f"SELECT count(*) FROM {self.schema}.ledger")[0][0])

    def entries(self) -> Iterator[LedgerEntry]:
        for row in self._query(f"SELECT {_COLUMNS} FROM {self.schema}.ledger ORDER BY seq"):
            yield _entry(row)

    def verify(self) -> VerifyReport:
        s = self.schema
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur.execute(f"SELECT {_COLUMNS} FROM {s}.ledger ORDER BY seq")
            rows = cur.fetchall()
            cur.execute(f"SELECT seq, hash FROM {s}.ledger_head WHERE id = 1")
            head = cur.fetchone()
        return check_chain(rows, head)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


Ledger = SQLiteLedger | PostgresLedger


def open_ledger(target: Path | str, *, schema: str = "facesurv_ledger") -> Ledger:
    """A ledger from a file path or sqlite:PATH (SQLite), or a postgresql:// URL (schema names its tables)."""
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresLedger(text, schema=schema)
    if text.startswith("sqlite:"):
        text = text.removeprefix("sqlite:")
        text = "/" + text.lstrip("/") if text.startswith("///") else text
    return SQLiteLedger(Path(text))
