"""What the SQLite and PostgreSQL ledgers share: the record format, sealing and signing,
the chain lock protocol, verified reads and anchoring (see serving/ledger.py for the design)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ground.errors import ConfigError, FacesurvError
from serving.anchor import Anchor, AnchorLog, LedgerKey, entry_message
from serving.ledger_check import (
    GENESIS,
    VerifyReport,
    canonical_json,
    check_chain,
    record_problems,
    sha256_text,
)

log = logging.getLogger("facesurv.ledger")
BASE_COLUMNS = "seq, score_id, patient_id, created_at, prev_hash, hash, body"
COLUMNS = BASE_COLUMNS + ", sig"
# signatures this writer made since its latest anchor, kept so that anchor need not verify them again;
# beyond this many (a server anchoring rarely) the rest are verified as any other
KNOWN_SIGNATURES_CAP = 20_000
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
    if record.get("kind") == PROMOTION_KIND:
        _check_promotion(record)


# --- promotion decisions (`facesurv promote --approve|--reject`) ----------------------------------
# They share the chain with the scores, so an audit sees who put which model in service and when.
# They concern no patient, and their ids can never be taken for a score's (32 hex characters).
PROMOTION_KIND = "promotion_decision"
PROMOTION_ID_PREFIX = "promotion-"
NO_PATIENT = "-"
PROMOTION_FIELDS = ("model_name", "version", "decision", "reason", "by")


def _check_promotion(record: dict[str, Any]) -> None:
    if not record["score_id"].startswith(PROMOTION_ID_PREFIX) or record["patient_id"] != NO_PATIENT:
        raise ValueError(f"a promotion-decision ledger record needs a score_id starting {PROMOTION_ID_PREFIX!r} "
                         f"and patient_id {NO_PATIENT!r}")
    missing = [k for k in PROMOTION_FIELDS if not isinstance(record.get(k), str) or not record[k].strip()]
    if missing:
        raise ValueError(f"a promotion-decision ledger record needs non-empty strings {missing}")
    if record["decision"] not in ("approved", "rejected"):
        raise ValueError(f"a promotion decision is 'approved' or 'rejected', got {record['decision']!r}")


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
    # stage name -> CPU seconds of appends and anchors (serving.stage_timers); None: not measured
    timers: dict[str, float] | None = None

    def _anchoring(self, key: LedgerKey | None, anchor_log: AnchorLog | None, anchor_every: int) -> None:
        self.key, self.anchor_log, self.anchor_every = key, anchor_log, anchor_every
        self._anchor_lock = threading.Lock()
        self._since_anchor = 0
        self._anchors = self._valid_anchors()
        self._signed_here: dict[int, tuple[str, str]] = {}  # seq -> (hash, sig) this writer signed
        self._anchor_thread: threading.Thread | None = None

    def _add_time(self, stage: str, since: float) -> None:
        if self.timers is not None:
            self.timers[stage] = self.timers.get(stage, 0.0) + time.thread_time() - since

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

    def append_many(self, records: Sequence[dict[str, Any]], *, anchor_later: bool = False) -> list[LedgerEntry]:
        """Write records in order in one transaction (one insert each, one commit).

        anchor_later: an anchor that falls due is taken on a background thread (the server's
        commit stage: the next batch's responses need not wait for the anchor's read-back).
        """
        for r in records:
            _check_record(r)
        if not records:
            return []
        if self.read_only:
            raise ConfigError(f"ledger {self.describe()} is open read-only (for checking): nothing can be appended")
        cpu = time.thread_time()
        with self._lock:
            entries = self._append_locked(list(records))
        self._add_time("ledger_append_s", cpu)
        if self.anchor_every and self._can_anchor():
            self._since_anchor += len(entries)
            if self._since_anchor >= self.anchor_every:
                self._since_anchor = 0
                reason = f"every {self.anchor_every} appends"
                if anchor_later:
                    self._anchor_in_background(reason)
                else:
                    self.checkpoint_quietly(reason)
        return entries

    def _anchor_in_background(self, reason: str) -> None:
        # one at a time: while one runs, the anchor falling due is left to the next one, which covers it
        running = self._anchor_thread
        if running is not None and running.is_alive():
            return

        def anchor() -> None:
            cpu = time.thread_time()
            self.checkpoint_quietly(reason)
            self._add_time("anchor_s", cpu)

        self._anchor_thread = threading.Thread(target=anchor, name="ledger-anchor", daemon=True)
        self._anchor_thread.start()

    def _link(self, seq: int, prev: str, records: list[dict[str, Any]]) -> list[tuple[LedgerEntry, tuple]]:
        cpu = time.thread_time()
        sign = self.key.sign if self.key is not None and self.key.can_sign else None
        known = self._signed_here if sign and self.anchor_log is not None else None
        out = []
        for record in records:
            seq += 1
            created_at = record.get("time") or _now()
            body, h = _seal(seq, prev, record, created_at)
            sig = sign(entry_message(h)) if sign else None
            if known is not None and sig and len(known) < KNOWN_SIGNATURES_CAP:
                known[seq] = (h, sig)
            out.append((LedgerEntry(seq, record["score_id"], created_at, prev, h, record),
                        (seq, record["score_id"], record["patient_id"], created_at, prev, h, body, sig)))
            prev = h
        self._add_time("seal_sign_s", cpu)
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
                              start=start, allow_unanchored_legacy=not lines and not bad_lines,
                              known_signatures=dict(self._signed_here))
            if not rep.ok:
                raise LedgerTampered(f"not anchoring {self.describe()}: {rep.problems[0]} "
                                     f"({len(rep.problems)} problem(s); run `facesurv audit verify`)")
            if rep.head_seq == 0 or (last is not None and rep.head_seq == last.seq):
                return None
            anchor = Anchor.take(self.key, seq=rep.head_seq, hash=rep.head_hash, reason=reason,
                                 ledger=self.describe())
            self.anchor_log.append(anchor)
            self._anchors.append(anchor)
            for seq in [s for s in list(self._signed_here) if s <= anchor.seq]:
                self._signed_here.pop(seq, None)
            return anchor

    def checkpoint_quietly(self, reason: str) -> Anchor | None:
        """checkpoint() for the server: a failure is logged, never raised into a request."""
        try:
            anchor = self.checkpoint(reason)
        except Exception as exc:  # noqa: BLE001 - scoring goes on; the log and `audit verify` say why
            log.error("ledger anchor (%s) not taken: %s", reason, exc)
            return None
        if anchor is not None:
            assert self.anchor_log is not None  # checkpoint() only returns an anchor it appended there
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
        before: str | None
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
        running = getattr(self, "_anchor_thread", None)
        if running is not None:
            running.join()
        if not self.read_only and self._can_anchor():
            self.checkpoint_quietly("close")
        with self._lock:
            self._conn.close()

    _conn: Any


def missing_trigger(name: str) -> str:
    return (f"trigger {name} is missing (dropped by someone with write access): the ledger's own guard is "
            "off; the server restores it when it next starts as the ledger's owner")
