"""An append-only, hash-chained, signed lineage ledger: one record per risk score.

Each record is stored as the canonical JSON of {seq, score_id, created_at, prev_hash,
record}; its hash is the sha256 of exactly that text, and the next record carries it as
prev_hash. The writer signs every hash with the ledger key (Ed25519, serving/anchor.py), and
puts signed (seq, hash) anchors in a file outside the database every `anchor_every` appends
and at shutdown. So someone who can write the database but has not the key cannot add,
renumber or rewrite records unnoticed (no valid signature), and cannot delete records up to
the latest anchor unnoticed (the anchor's seq is past the end, or its hash no longer there).
Deleting records after the latest anchor is the one thing that is not caught: keep
`anchor_every` small where that matters.

A one-row head table, moved by an insert trigger (so a PostgreSQL serving role needs only
INSERT and SELECT), holds the last seq and hash. Triggers refuse UPDATE/DELETE and an insert
that does not extend the head; someone with write access can drop them, which is what the
hash chain, the signatures and the anchors are for (and what the tests do). `verify` walks the
chain and names every problem; it opens the database read-only and never repairs anything.
`get` checks the record it returns (hash, columns, link to the record before, signature).

Appends take the chain lock inside the database (SQLite `BEGIN IMMEDIATE`, a PostgreSQL
transaction-level advisory lock), so concurrent writers, threads or processes, cannot fork
the chain.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from ground.errors import ConfigError, NotAvailableError
from serving.anchor import AnchorLog, LedgerKey, create_private_file, tighten
from serving.ledger_base import (  # noqa: F401 - re-exported: the ledger's public names
    BASE_COLUMNS,
    COLUMNS,
    HEAD_MISSING,
    LedgerBase,
    LedgerEntry,
    LedgerTampered,
    TamperedRecord,
    log,
    missing_trigger,
)
from serving.ledger_check import (  # noqa: F401 - re-exported: the ledger's public names
    GENESIS,
    MAX_PROBLEMS,
    VerifyReport,
    canonical_json,
    check_chain,
    record_problems,
    sha256_text,
)
from serving.ledger_pg import PostgresLedger, grant_serving_role  # noqa: F401 - re-exported


class SQLiteLedger(LedgerBase):
    """The embedded ledger: one SQLite file (WAL, fsync at every commit, mode 0600)."""

    _p, _t, _h = "?", "ledger", "ledger_head"
    _GUARDS = {
        "ledger_no_update": "BEFORE UPDATE ON ledger BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END",
        "ledger_no_delete": "BEFORE DELETE ON ledger BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END",
        "ledger_link": "BEFORE INSERT ON ledger WHEN NEW.seq IS NOT (SELECT seq FROM ledger_head WHERE id = 1) + 1 "
                       "OR NEW.prev_hash IS NOT (SELECT hash FROM ledger_head WHERE id = 1) BEGIN SELECT "
                       "RAISE(ABORT, 'a ledger insert must extend the head (or the head row is missing)'); END",
        "ledger_head_advance": "AFTER INSERT ON ledger BEGIN "
                               "UPDATE ledger_head SET seq = NEW.seq, hash = NEW.hash WHERE id = 1; END",
        "ledger_head_no_delete": "BEFORE DELETE ON ledger_head "
                                 "BEGIN SELECT RAISE(ABORT, 'the ledger head is kept by the ledger'); END",
    }
    _LEGACY_GUARDS = ("ledger_no_update", "ledger_no_delete")

    def __init__(self, path: Path | str, *, timeout_s: float = 30.0, key: LedgerKey | None = None,
                 anchor_log: AnchorLog | None = None, anchor_every: int = 0, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.Lock()
        if read_only:
            if not self.path.is_file():
                raise NotAvailableError(f"{self.path}: no ledger there")
            # mode=ro: SQLite itself refuses every write, so checking can never repair or hide anything
            self._conn = sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True, timeout=timeout_s,
                                         isolation_level=None, check_same_thread=False)
        else:
            create_private_file(self.path)  # 0600 before SQLite opens it; -wal and -shm take its mode
            for suffix in ("-wal", "-shm"):
                tighten(self.path.with_name(self.path.name + suffix))
            self._conn = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None,
                                         check_same_thread=False)
            self._create()
        self._cols = self._columns()
        self._anchoring(key, anchor_log, anchor_every)

    def _columns(self) -> str:
        names = {r[1] for r in self._conn.execute("PRAGMA table_info(ledger)")}
        if not names:
            raise NotAvailableError(f"{self.path}: not a ledger (no ledger table)")
        return COLUMNS if "sig" in names else BASE_COLUMNS + ", NULL"

    def _create(self) -> None:
        c = self._conn
        with self._lock:
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=FULL")
            c.execute("BEGIN IMMEDIATE")
            try:
                existed = c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ledger'").fetchone()
                c.execute("""CREATE TABLE IF NOT EXISTS ledger (
                    seq INTEGER PRIMARY KEY, score_id TEXT NOT NULL UNIQUE, patient_id TEXT NOT NULL,
                    created_at TEXT NOT NULL, prev_hash TEXT NOT NULL UNIQUE, hash TEXT NOT NULL UNIQUE,
                    body TEXT NOT NULL, sig TEXT)""")
                if "sig" not in {r[1] for r in c.execute("PRAGMA table_info(ledger)")}:
                    c.execute("ALTER TABLE ledger ADD COLUMN sig TEXT")  # a ledger from before signing
                c.execute("CREATE INDEX IF NOT EXISTS ledger_patient ON ledger (patient_id)")
                c.execute("""CREATE TABLE IF NOT EXISTS ledger_head (
                    id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL)""")
                if not existed:  # only a new ledger gets a head: a deleted one is tampering, not a reset
                    c.execute("INSERT INTO ledger_head VALUES (1, 0, ?)", (GENESIS,))
                present = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
                for name, sql in self._GUARDS.items():
                    if name not in present:
                        c.execute(f"CREATE TRIGGER {name} {sql}")
                head = c.execute("SELECT 1 FROM ledger_head WHERE id = 1").fetchone()
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        dropped = [n for n in self._LEGACY_GUARDS if n not in present]
        if existed and dropped:
            log.warning("ledger %s: trigger(s) %s had been dropped; restored them (run `facesurv audit verify`)",
                        self.path, ", ".join(dropped))
        if head is None:
            c.close()
            raise LedgerTampered(f"{self.path}: {HEAD_MISSING}")

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def _append_locked(self, records: list[dict[str, Any]]) -> list[LedgerEntry]:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")  # the database-wide write lock: other processes wait here
        try:
            head = c.execute("SELECT seq, hash FROM ledger_head WHERE id = 1").fetchone()
            if head is None:
                raise LedgerTampered(f"{self.path}: {HEAD_MISSING}")
            linked = self._link(int(head[0]), head[1], records)
            # the ledger_head_advance trigger moves the head
            c.executemany(f"INSERT INTO ledger ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          [row for _, row in linked])
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return [e for e, _ in linked]

    def _read(self, *queries: tuple[str, tuple]) -> list[list[tuple]]:
        with self._lock:
            self._conn.execute("BEGIN")  # one read transaction: a consistent snapshot
            try:
                return [self._conn.execute(sql, args).fetchall() for sql, args in queries]
            finally:
                self._conn.execute("COMMIT")

    def _guard_problems(self) -> tuple[list[str], bool]:
        with self._lock:
            objects = dict(self._conn.execute("SELECT name, type FROM sqlite_master").fetchall())
        head_table = objects.get("ledger_head") == "table"
        problems = [] if head_table else ["table ledger_head is missing (dropped)"]
        wanted = self._LEGACY_GUARDS if self._cols.endswith("NULL") else self._GUARDS
        problems += [missing_trigger(n) for n in wanted if objects.get(n) != "trigger"]
        return problems, head_table


Ledger = LedgerBase  # SQLiteLedger or serving.ledger_pg.PostgresLedger


def open_ledger(target: Path | str, *, schema: str = "facesurv_ledger", anchoring: Any = None,
                read_only: bool = False, key: LedgerKey | None = None) -> Ledger:
    """A ledger from a file path or sqlite:PATH (SQLite), or a postgresql:// URL (schema names its tables).

    anchoring: serving.anchor.AnchorSettings: the writer signs with its key (created on first use)
    and anchors to its file; a read-only ledger checks with the public key. key overrides it.
    """
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        led: Ledger = PostgresLedger(text, schema=schema, read_only=read_only)
    else:
        if text.startswith("sqlite:"):
            text = text.removeprefix("sqlite:")
            text = "/" + text.lstrip("/") if text.startswith("///") else text
        led = SQLiteLedger(Path(text), read_only=read_only)
    if anchoring is None and key is None:
        return led
    try:
        if key is None:
            key = anchoring.public_key() if read_only else _writer_key(led, anchoring)
        led._anchoring(key, AnchorLog(anchoring.anchor_file) if anchoring is not None else None,
                       anchoring.every if anchoring is not None else 0)
    except BaseException:
        led.close()
        raise
    if not read_only and led._can_anchor():
        # anchor what is there: records since the last anchor (say, before a crash) once checked, and at
        # the first start with a key, a ledger from before signing (only the first anchor may cover those)
        led.checkpoint_quietly("start")
    return led


def _writer_key(led: LedgerBase, anchoring: Any) -> LedgerKey:
    """The signing key, created on first use, but never for a ledger signed by a key now lost: a new
    key would make every earlier signature fail."""
    if not anchoring.key_path.exists() and not anchoring.public_key_path.exists():
        (signed,) = led._read((f"SELECT seq FROM {led._t} WHERE sig IS NOT NULL LIMIT 1", ()))
        if signed:
            raise ConfigError(f"ledger {led.describe()} is signed but its key {anchoring.key_path} is missing: "
                              "restore it (and its .pub) from backup, or set serving.anchor_key to it")
    return anchoring.signing_key()
