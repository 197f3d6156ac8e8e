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

import dataclasses
import datetime as dt
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from facesurv.errors import ConfigError, FacesurvError, NotAvailableError
from serving.anchor import Anchor, AnchorLog, LedgerKey, create_private_file, entry_message, tighten
from serving.ledger_check import (  # noqa: F401 - re-exported: the ledger's public names
    GENESIS,
    MAX_PROBLEMS,
    VerifyReport,
    canonical_json,
    check_chain,
    record_problems,
    sha256_text,
)

log = logging.getLogger("facesurv.ledger")
BASE_COLUMNS = "seq, score_id, patient_id, created_at, prev_hash, hash, body"
COLUMNS = BASE_COLUMNS + ", sig"
HEAD_MISSING = ("the ledger head row is missing (deleted outside facesurv), so appends cannot continue: "
                 "run `facesurv audit verify` and restore the ledger from a backup")


class LedgerTampered(FacesurvError):
    """The ledger fails a check: records edited, deleted or forged outside facesurv."""

    exit_code = 1


class TamperedRecord(LedgerTampered):
    """A record read back fails its own check (hash, columns, link, signature)."""

    def __init__(self, score_id: str, seq: int, reason: str) -> None:
        self.score_id, self.seq, self.reason = score_id, seq, reason
        super().__init__(f"score {score_id} (ledger seq {seq}) failed verification: {reason}; "
                         "run `facesurv audit verify`")


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
    seq, score_id, _patient, created_at, prev_hash, hash_, body = row[:7]
    return LedgerEntry(int(seq), score_id, created_at, prev_hash, hash_, json.loads(body)["record"])


def _reason(problem: str) -> str:
    return problem.split(": ", 1)[1] if problem.startswith("seq ") else problem


class LedgerBase:
    """The chain logic; subclasses supply the connection, SQL dialect, chain lock and guards."""

    _lock: threading.Lock
    _p: str                 # the SQL placeholder
    _t: str                 # the records table
    _h: str                 # the head table
    _cols: str              # the columns read (sig as NULL on a ledger from before signing)
    read_only: bool

    def _anchoring(self, key: LedgerKey | None, anchor_log: AnchorLog | None, anchor_every: int) -> None:
        self.key, self.anchor_log, self.anchor_every = key, anchor_log, anchor_every
        self._anchor_lock = threading.Lock()
        self._since_anchor = 0
        self._anchors = self._valid_anchors()

    def _valid_anchors(self) -> list[Anchor]:
        if self.key is None or self.anchor_log is None:
            return []
        anchors, _ = self.anchor_log.read()
        return [a for a in anchors if a.check_signature(self.key) is None]

    # -- backend hooks ------------------------------------------------------------------
    def _read(self, *queries: tuple[str, tuple]) -> list[list[tuple]]:
        """Run read queries in one consistent snapshot."""
        raise NotImplementedError

    def _append_locked(self, records: list[dict[str, Any]]) -> list[LedgerEntry]:
        raise NotImplementedError

    def _guard_problems(self) -> tuple[list[str], bool]:
        """(missing triggers or tables, head table present)."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    # -- writing ------------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> LedgerEntry:
        """Write one record (must hold score_id and patient_id); returns it with its hash."""
        return self.append_many([record])[0]

    def append_many(self, records: Sequence[dict[str, Any]]) -> list[LedgerEntry]:
        """Write records in order in one transaction (one insert each, one commit)."""
        for r in records:
            _check_record(r)
        if not records:
            return []
        if self.read_only:
            raise ConfigError(f"ledger {self.describe()} is open read-only (for checking): nothing can be appended")
        with self._lock:
            entries = self._append_locked(list(records))
        if self.anchor_every and self._can_anchor():
            self._since_anchor += len(entries)
            if self._since_anchor >= self.anchor_every:
                self._since_anchor = 0
                self.checkpoint_quietly(f"every {self.anchor_every} appends")
        return entries

    def _link(self, seq: int, prev: str, records: list[dict[str, Any]]) -> list[tuple[LedgerEntry, tuple]]:
        sign = self.key.sign if self.key is not None and self.key.can_sign else None
        out = []
        for record in records:
            seq += 1
            created_at = record.get("time") or _now()
            body, h = _seal(seq, prev, record, created_at)
            sig = sign(entry_message(h)) if sign else None
            out.append((LedgerEntry(seq, record["score_id"], created_at, prev, h, record),
                        (seq, record["score_id"], record["patient_id"], created_at, prev, h, body, sig)))
            prev = h
        return out

    # -- anchoring ----------------------------------------------------------------------
    def _can_anchor(self) -> bool:
        return self.key is not None and self.key.can_sign and self.anchor_log is not None

    @property
    def anchors_at_shutdown(self) -> bool:
        """Whether the server should take a checkpoint when it stops (a signing, anchoring writer)."""
        return self._can_anchor()

    def checkpoint(self, reason: str) -> Anchor | None:
        """Sign the current (seq, hash) into the anchors file, after checking every record since the
        latest anchor, so an anchor never vouches for a forged record. None: nothing new to anchor.
        Raises LedgerTampered (and anchors nothing) when that check fails."""
        if not self._can_anchor():
            raise ConfigError("anchoring needs the ledger's private key and an anchors file (serving.anchor_key, "
                              "serving.anchor_file)")
        assert self.anchor_log is not None and self.key is not None
        with self._anchor_lock:
            lines, bad_lines = self.anchor_log.read()
            valid = [a for a in lines if a.check_signature(self.key) is None]
            last = max(valid, key=lambda a: a.seq, default=None)
            from_seq = last.seq if last else 1
            rows, heads = self._read((f"SELECT {self._cols} FROM {self._t} WHERE seq >= {self._p} ORDER BY seq",
                                      (from_seq,)), (f"SELECT seq, hash FROM {self._h} WHERE id = 1", ()))
            start = (from_seq - 1, rows[0][4] if rows and last else GENESIS)
            # unsigned records (from before signing) are vouched for only by the very first anchor
            rep = check_chain(rows, heads[0] if heads else None, key=self.key, anchors=[last] if last else [],
                              start=start, allow_unanchored_legacy=not lines and not bad_lines)
            if not rep.ok:
                raise LedgerTampered(f"not anchoring {self.describe()}: {rep.problems[0]} "
                                     f"({len(rep.problems)} problem(s); run `facesurv audit verify`)")
            if rep.head_seq == 0 or (last is not None and rep.head_seq == last.seq):
                return None
            anchor = Anchor.take(self.key, seq=rep.head_seq, hash=rep.head_hash, reason=reason,
                                 ledger=self.describe())
            self.anchor_log.append(anchor)
            self._anchors.append(anchor)
            return anchor

    def checkpoint_quietly(self, reason: str) -> Anchor | None:
        """checkpoint() for the server: a failure is logged, never raised into a request."""
        try:
            anchor = self.checkpoint(reason)
        except Exception as exc:  # noqa: BLE001 - scoring goes on; the log and `audit verify` say why
            log.error("ledger anchor (%s) not taken: %s", reason, exc)
            return None
        if anchor is not None:
            log.info("ledger anchored at seq %d (%s) in %s", anchor.seq, reason, self.anchor_log.path)
        return anchor

    # -- reading ------------------------------------------------------------------------
    def get(self, score_id: str) -> LedgerEntry | None:
        """The record of a score, checked first; TamperedRecord when it fails (never returned as authentic)."""
        (rows,) = self._read((f"SELECT {self._cols} FROM {self._t} WHERE score_id = {self._p}", (score_id,)))
        if not rows:
            return None
        self._check_read(rows[0])
        return _entry(rows[0])

    def _check_read(self, row: Sequence[Any]) -> None:
        seq, score_id, prev_col, hash_col, sig = int(row[0]), row[1], row[4], row[5], row[7]
        own, _ = record_problems(row)
        if own:
            raise TamperedRecord(score_id, seq, _reason(own[0]))
        if seq == 1:
            before = GENESIS
        else:
            (prev,) = self._read((f"SELECT hash FROM {self._t} WHERE seq = {self._p}", (seq - 1,)))
            before = prev[0][0] if prev else None
        if before != prev_col:
            raise TamperedRecord(score_id, seq, "the record before it is missing or was changed")
        if self.key is None:
            return
        if sig:
            if not self.key.verify(entry_message(hash_col), sig):
                raise TamperedRecord(score_id, seq, "its signature does not verify: it was inserted or rewritten "
                                     "without the ledger key")
            return
        self._check_unsigned(row)

    def _check_unsigned(self, row: Sequence[Any]) -> None:
        """A record from before signing is authentic only if the chain from it reaches an anchor."""
        seq, score_id, prev_col = int(row[0]), row[1], row[4]
        covering = [a for a in self._anchors if a.seq >= seq] or \
            [a for a in self._valid_anchors() if a.seq >= seq]
        if not covering:
            raise TamperedRecord(score_id, seq, "it is not signed and no anchor covers it")
        anchor = min(covering, key=lambda a: a.seq)
        (rows,) = self._read((f"SELECT {self._cols} FROM {self._t} WHERE seq >= {self._p} AND seq <= {self._p} "
                              "ORDER BY seq", (seq, anchor.seq)))
        rep = check_chain(rows, (anchor.seq, anchor.hash), key=self.key, anchors=[anchor], start=(seq - 1, prev_col))
        if not rep.ok:
            raise TamperedRecord(score_id, seq, f"it is not signed and the chain to the {anchor.label()} is broken: "
                                 + _reason(rep.problems[0]))

    def count(self) -> int:
        (rows,) = self._read((f"SELECT count(*) FROM {self._t}", ()))
        return int(rows[0][0])

    def entries(self) -> Iterator[LedgerEntry]:
        (rows,) = self._read((f"SELECT {self._cols} FROM {self._t} ORDER BY seq", ()))
        for row in rows:
            yield _entry(row)

    def verify(self, anchors: Sequence[Anchor] | None = None) -> VerifyReport:
        """Walk the whole chain: records, links, signatures (with the ledger's key), the head, the
        protective triggers, and anchors (default: the anchors file's). Reads only."""
        guards, head_table = self._guard_problems()
        extra: list[str] = []
        if anchors is None:
            anchors, extra = self.anchor_log.read() if self.anchor_log is not None else ([], [])
        queries = [(f"SELECT {self._cols} FROM {self._t} ORDER BY seq", ())]
        if head_table:
            queries.append((f"SELECT seq, hash FROM {self._h} WHERE id = 1", ()))
        results = self._read(*queries)
        head = results[1][0] if head_table and results[1] else None
        return check_chain(results[0], head, key=self.key, anchors=anchors).plus(extra + guards)

    def close(self) -> None:
        """Anchor what was appended since the latest anchor (when this ledger signs), then close."""
        if not self.read_only and self._can_anchor():
            self.checkpoint_quietly("close")
        with self._lock:
            self._conn.close()

    _conn: Any


def missing_trigger(name: str) -> str:
    return (f"trigger {name} is missing (dropped by someone with write access): the ledger's own guard is "
            "off; the server restores it when it next starts as the ledger's owner")


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


def __getattr__(name: str) -> Any:
    # the PostgreSQL half lives in serving/ledger_pg.py; `from serving.ledger import PostgresLedger` still works
    if name in ("PostgresLedger", "grant_serving_role"):
        from serving import ledger_pg

        return getattr(ledger_pg, name)
    raise AttributeError(f"module 'serving.ledger' has no attribute {name!r}")


def open_ledger(target: Path | str, *, schema: str = "facesurv_ledger", anchoring: Any = None,
                read_only: bool = False, key: LedgerKey | None = None) -> Ledger:
    """A ledger from a file path or sqlite:PATH (SQLite), or a postgresql:// URL (schema names its tables).

    anchoring: serving.anchor.AnchorSettings: the writer signs with its key (created on first use)
    and anchors to its file; a read-only ledger checks with the public key. key overrides it.
    """
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")):
        from serving.ledger_pg import PostgresLedger

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
