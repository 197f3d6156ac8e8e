"""Checking the ledger: pure functions from stored rows (and a key, and anchors) to a report.

rows are (seq, score_id, patient_id, created_at, prev_hash, hash, body, sig) tuples in seq
order. Nothing here touches a database, so the server (reads, checkpoints) and
`facesurv audit verify` apply exactly the same rules.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from serving.anchor import Anchor, LedgerKey, entry_message
from serving.canonical import canonical_json, sha256_text  # noqa: F401 - re-exported

GENESIS = "0" * 64
MAX_PROBLEMS = 50


@dataclasses.dataclass(frozen=True)
class VerifyReport:
    ok: bool
    records: int
    head_seq: int
    head_hash: str
    problems: tuple[str, ...]
    signatures_checked: bool = False   # a public key was at hand and every signature was checked
    signed_records: int = 0
    anchors_matched: int = 0
    anchored_seq: int = 0              # the latest anchor that matched; records after it are covered by signatures only
    notes: tuple[str, ...] = ()        # not problems: what this check could not rule out

    def plus(self, problems: Iterable[str]) -> VerifyReport:
        extra = tuple(problems)
        return dataclasses.replace(self, ok=False, problems=self.problems + extra) if extra else self


def record_problems(row: Sequence[Any]) -> tuple[list[str], str | None]:
    """What is wrong with one row on its own (hash, body, columns), and the prev_hash its body holds."""
    seq, score_id, patient_id, created_at, prev_col, hash_col, body, _sig = row
    seq = int(seq)
    problems = []
    if sha256_text(body) != hash_col:
        problems.append(f"seq {seq}: record edited (its content no longer matches its hash)")
    try:
        payload = json.loads(body)
        claimed = payload["seq"]
        stored = {"score_id": payload["score_id"], "patient_id": payload["record"]["patient_id"],
                  "created_at": payload["created_at"], "prev_hash": payload["prev_hash"]}
    except (ValueError, KeyError, TypeError):
        problems.append(f"seq {seq}: record body is not a ledger record (edited)")
        return problems, None
    if claimed != seq:
        problems.append(f"seq {seq}: holds the record written as seq {claimed}: records reordered")
    for name, value in zip(("score_id", "patient_id", "created_at", "prev_hash"),
                           (score_id, patient_id, created_at, prev_col), strict=True):
        if stored[name] != value:
            problems.append(f"seq {seq}: column {name} edited (disagrees with the hashed record)")
    return problems, stored["prev_hash"]


def _span(lo: int, hi: int) -> str:
    return f"seq {lo}" if lo == hi else f"seq {lo}..{hi}"


def check_chain(rows: Iterable[Sequence[Any]], head: tuple[int, str] | None, *,
                key: LedgerKey | None = None, anchors: Sequence[Anchor] = (),
                start: tuple[int, str] = (0, GENESIS), allow_unanchored_legacy: bool = False,
                known_signatures: Mapping[int, tuple[str, str]] | None = None) -> VerifyReport:
    """Walk rows (seq order) and the head; report every break.

    key: the ledger's public key: every signature is checked, and unsigned records are allowed
    only before the first signed one (ledgers from before signing) and under an anchor.
    anchors: signed checkpoints (each must be a prefix of this chain) and bare expected hashes
    (must occur in it). start: (seq, hash) the rows continue from, for checking a segment.
    known_signatures: seq -> (hash, sig) the caller signed itself with `key` (the writer's anchor):
    a row holding exactly that pair needs no signature check, its hash and links are still checked.
    """
    problems: list[str] = []

    def flag(msg: str) -> None:
        if len(problems) < MAX_PROBLEMS:
            problems.append(msg)

    by_seq: dict[int, list[Anchor]] = {}
    expected_hashes: dict[str, Anchor] = {}
    for a in anchors:
        if not a.sig:
            expected_hashes.setdefault(a.hash, a)
        elif key is None:
            flag(f"{a.label()}: its signature cannot be checked without the ledger's public key")
        elif (bad := a.check_signature(key)) is not None:
            flag(bad)
        else:
            by_seq.setdefault(a.seq, []).append(a)

    expected, prev_hash, last_seq = start[0] + 1, start[1], start[0]
    count = signed = unsigned_from = unsigned_to = 0
    matched: list[Anchor] = []
    for row in rows:
        seq, hash_col, sig = int(row[0]), row[5], row[7]
        count += 1
        if seq != expected:
            if seq > expected:
                flag(f"record(s) {_span(expected, seq - 1)} missing: deleted from the ledger")
            else:
                flag(f"seq {seq}: duplicate or out-of-order sequence number")
        own, claimed_prev = record_problems(row)
        for p in own:
            flag(p)
        if claimed_prev is not None and claimed_prev != prev_hash and seq == expected:
            flag(f"seq {seq}: does not follow seq {seq - 1} (previous-record hash differs): "
                 "a record before it was edited, replaced or reordered")
        if sig:
            signed += 1
            if key is not None and (known_signatures or {}).get(seq) != (hash_col, sig) \
                    and not key.verify(entry_message(hash_col), sig):
                flag(f"seq {seq}: signature does not verify: inserted or rewritten without the ledger key")
        elif signed:
            flag(f"seq {seq}: not signed although earlier records are: inserted without the ledger key (forged)")
        else:
            unsigned_from, unsigned_to = unsigned_from or seq, seq
        for a in by_seq.pop(seq, ()):
            if a.hash == hash_col:
                matched.append(a)
            else:
                flag(f"{a.label()}: the record there now has another hash: the chain was rewritten up to seq {seq}")
        expected_hashes.pop(hash_col, None)
        prev_hash, last_seq, expected = hash_col, seq, seq + 1

    for a_seq, group in sorted(by_seq.items()):
        for a in group:
            if a_seq > last_seq:
                flag(f"{a.label()}: the ledger now ends at seq {last_seq}: record(s) "
                     f"{_span(last_seq + 1, a_seq)} were deleted from the end")
            else:
                flag(f"{a.label()}: record seq {a_seq} is missing: deleted from the ledger")
    for h in expected_hashes:
        flag(f"expected head {h} is not in the chain: the chain was rewritten (or the hash is from another ledger)")
    anchored = max((a.seq for a in matched), default=0)
    if key is not None and unsigned_to and anchored < unsigned_to and not allow_unanchored_legacy:
        flag(f"record(s) {_span(unsigned_from, unsigned_to)} are not signed and no anchor covers them: they "
             "cannot be told from forgeries (if they predate signing, check them and run `facesurv audit anchor`)")

    if head is None:
        flag("ledger head is missing (deleted)")
        head_seq, head_hash = last_seq, prev_hash
    else:
        head_seq, head_hash = int(head[0]), head[1]
        if head_seq > last_seq:
            flag(f"record(s) {_span(last_seq + 1, head_seq)} missing at the end: deleted from the ledger "
                 f"(the head says {head_seq})")
        elif head_seq < last_seq or head_hash != prev_hash:
            flag(f"ledger head (seq {head_seq}) does not match the last record (seq {last_seq}): edited")

    notes = []
    if key is None and signed:
        notes.append("signatures not checked (no public key): a forged or rewritten record would pass")
    elif key is not None and last_seq > anchored:
        notes.append(f"record(s) {_span(anchored + 1, last_seq)} come after the latest anchor: their signatures "
                     "rule out forgeries, but deleting them from the end would not show until the next anchor")
    return VerifyReport(ok=not problems, records=count, head_seq=head_seq, head_hash=head_hash,
                        problems=tuple(problems), signatures_checked=key is not None, signed_records=signed,
                        anchors_matched=len(matched), anchored_seq=anchored, notes=tuple(notes))
