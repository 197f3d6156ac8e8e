"""The ledger against someone with write access to its database but not the ledger key.

The four attacks of issue 13 (a forged append, deleting the tail and moving the head back,
delete-and-renumber, a full rewrite) each pass a bare hash chain; here each is caught by the
record signatures and/or an anchor. Also: an old anchor stays valid after later appends,
checking never writes, reads refuse a tampered record, and the files are 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat

import pytest

from ground.errors import ConfigError
from serving.anchor import Anchor, AnchorLog, AnchorSettings, LedgerKey
from serving.ledger import (
    GENESIS,
    LedgerTampered,
    SQLiteLedger,
    TamperedRecord,
    canonical_json,
    open_ledger,
    sha256_text,
)

TRIGGERS = ("ledger_no_update", "ledger_no_delete", "ledger_link", "ledger_head_advance", "ledger_head_no_delete")


def _record(i: int) -> dict:
    return {"score_id": f"{i:032x}", "patient_id": f"p{i}", "result": {"risk_score": 0.1 * i},
            "model": {"name": "m", "version": "1"}}


@pytest.fixture()
def settings(tmp_path):
    # key and anchors in folders apart from the database, as the defaults are
    return AnchorSettings(key_path=tmp_path / "keys" / "anchor.key", anchor_file=tmp_path / "anchors" / "a.jsonl",
                          every=0)


def _signed(path, settings, n=5, anchor_at=None):
    led = open_ledger(path, anchoring=settings)
    for i in range(1, n + 1):
        led.append(_record(i))
        if i == anchor_at:
            assert led.checkpoint("test").seq == i
    return led


def _check(path, settings, anchors=None):
    led = open_ledger(path, anchoring=settings, read_only=True)
    try:
        return led.verify(anchors)
    finally:
        led.close()


def _row(seq, record, prev, sig=None, created_at="2026-01-01T00:00:00+00:00"):
    body = canonical_json({"seq": seq, "score_id": record["score_id"], "created_at": created_at,
                           "prev_hash": prev, "record": record})
    return (seq, record["score_id"], record["patient_id"], created_at, prev, sha256_text(body), body, sig)


def _attack(path, fn, *, restore=True):
    """What someone with write access to the database file can do: drop every guard, write, and
    (a careful attacker) put the guards back."""
    con = sqlite3.connect(path, isolation_level=None)
    for t in TRIGGERS:
        con.execute(f"DROP TRIGGER IF EXISTS {t}")
    fn(con)
    if restore:
        for name, sql in SQLiteLedger._GUARDS.items():
            con.execute(f"CREATE TRIGGER {name} {sql}")
    con.close()


def _insert(con, rows):
    con.executemany("INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    con.execute("UPDATE ledger_head SET seq = ?, hash = ? WHERE id = 1", (rows[-1][0], rows[-1][5]))


def _head(con):
    return con.execute("SELECT seq, hash FROM ledger_head").fetchone()


# -- attack (a): a forged append with a correct hash ------------------------------------

def test_forged_append_after_the_last_anchor_is_caught(tmp_path, settings):
    path = tmp_path / "l.db"
    _signed(path, settings, 5, anchor_at=5).close()
    other = LedgerKey.create(tmp_path / "other.key")  # not the ledger key

    def forge(con):
        seq, prev = _head(con)
        unsigned = _row(seq + 1, _record(90), prev)
        _insert(con, [unsigned])
        badly_signed = _row(seq + 2, _record(91), unsigned[5])
        _insert(con, [badly_signed[:7] + (other.sign(b"x"),)])

    _attack(path, forge)
    rep = _check(path, settings)
    assert not rep.ok
    assert "seq 6: not signed although earlier records are: inserted without the ledger key (forged)" in rep.problems
    assert "seq 7: signature does not verify: inserted or rewritten without the ledger key" in rep.problems
    led = open_ledger(path, anchoring=settings, read_only=True)
    with pytest.raises(TamperedRecord, match="not signed"):
        led.get(_record(90)["score_id"])
    with pytest.raises(TamperedRecord, match="signature does not verify"):
        led.get(_record(91)["score_id"])
    assert led.get(_record(5)["score_id"]).seq == 5  # the genuine records still read


def test_forged_append_through_the_triggers_is_caught(tmp_path, settings):
    # the link trigger accepts an insert that extends the head; only the signature tells it apart
    path = tmp_path / "l.db"
    _signed(path, settings, 3).close()
    con = sqlite3.connect(path, isolation_level=None)
    seq, prev = _head(con)
    con.execute("INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?)", _row(seq + 1, _record(9), prev))
    assert _head(con)[0] == 4  # the head moved with it
    con.close()
    assert any("seq 4: not signed" in p for p in _check(path, settings).problems)


# -- attack (b): delete the tail and move the head back ---------------------------------

def test_tail_deletion_after_an_anchor_is_caught(tmp_path, settings):
    path = tmp_path / "l.db"
    _signed(path, settings, 5, anchor_at=5).close()

    def trim(con):
        h3 = con.execute("SELECT hash FROM ledger WHERE seq = 3").fetchone()[0]
        con.execute("DELETE FROM ledger WHERE seq > 3")
        con.execute("UPDATE ledger_head SET seq = 3, hash = ? WHERE id = 1", (h3,))

    _attack(path, trim)
    rep = _check(path, settings)
    assert not rep.ok
    assert len(rep.problems) == 1, rep.problems
    assert "(seq 5): the ledger now ends at seq 3: record(s) seq 4..5 were deleted from the end" in rep.problems[0]


def test_tail_deletion_after_the_last_anchor_is_the_documented_window(tmp_path, settings):
    # records after the latest anchor can be trimmed unnoticed: verify says so in a note
    path = tmp_path / "l.db"
    led = _signed(path, settings, 5, anchor_at=3)
    led.anchor_log = None  # as after a crash: no anchor at close
    led.close()

    def trim(con):
        h4 = con.execute("SELECT hash FROM ledger WHERE seq = 4").fetchone()[0]
        con.execute("DELETE FROM ledger WHERE seq = 5")
        con.execute("UPDATE ledger_head SET seq = 4, hash = ? WHERE id = 1", (h4,))

    _attack(path, trim)
    rep = _check(path, settings)
    assert rep.ok and rep.anchored_seq == 3, rep.problems
    assert any("seq 4 come after the latest anchor" in n and "deleting them" in n for n in rep.notes)


# -- attack (c): delete a record and renumber the rest ----------------------------------

def test_delete_and_renumber_is_caught(tmp_path, settings):
    path = tmp_path / "l.db"
    _signed(path, settings, 5, anchor_at=5).close()

    def renumber(con):
        kept = con.execute("SELECT body, sig FROM ledger WHERE seq > 3 ORDER BY seq").fetchall()
        prev = con.execute("SELECT hash FROM ledger WHERE seq = 2").fetchone()[0]
        con.execute("DELETE FROM ledger WHERE seq >= 3")
        rows = []
        for seq, (body, sig) in enumerate(kept, start=3):
            rows.append(_row(seq, json.loads(body)["record"], prev, sig=sig))  # the old signatures, re-used
            prev = rows[-1][5]
        _insert(con, rows)

    _attack(path, renumber)
    rep = _check(path, settings)
    assert "seq 3: signature does not verify: inserted or rewritten without the ledger key" in rep.problems
    assert "seq 4: signature does not verify: inserted or rewritten without the ledger key" in rep.problems
    assert any("the ledger now ends at seq 4: record(s) seq 5 were deleted from the end" in p for p in rep.problems)
    # with no anchor at all, the signatures alone catch it
    rep = _check(path, settings, anchors=[])
    assert not rep.ok and any("seq 3: signature does not verify" in p for p in rep.problems)


# -- attack (d): rewrite the whole chain ------------------------------------------------

@pytest.mark.parametrize("sigs", ["dropped", "copied"])
def test_full_rewrite_is_caught(tmp_path, settings, sigs):
    path = tmp_path / "l.db"
    _signed(path, settings, 5, anchor_at=4).close()

    def rewrite(con):
        old = con.execute("SELECT body, sig FROM ledger ORDER BY seq").fetchall()
        con.execute("DELETE FROM ledger")
        rows, prev = [], GENESIS
        for seq, (body, sig) in enumerate(old, start=1):
            record = json.loads(body)["record"]
            record["result"]["risk_score"] = 0.0  # every score changed
            rows.append(_row(seq, record, prev, sig=sig if sigs == "copied" else None))
            prev = rows[-1][5]
        _insert(con, rows)

    _attack(path, rewrite)
    rep = _check(path, settings)
    assert not rep.ok
    assert any("(seq 4): the record there now has another hash: the chain was rewritten up to seq 4" in p
               for p in rep.problems), rep.problems
    if sigs == "dropped":  # looks like a ledger from before signing, but no anchor covers it
        assert any("record(s) seq 1..5 are not signed and no anchor covers them" in p for p in rep.problems)
    else:
        assert "seq 1: signature does not verify: inserted or rewritten without the ledger key" in rep.problems
    # and without the anchors file the signatures still tell
    assert not _check(path, settings, anchors=[]).ok


# -- anchors: any earlier one is accepted; anchors are files apart from the ledger ------

def test_an_old_anchor_is_accepted_after_later_appends(tmp_path, settings):
    path = tmp_path / "l.db"
    led = _signed(path, settings, 3, anchor_at=3)
    for i in range(4, 8):
        led.append(_record(i))
    assert led.checkpoint("later").seq == 7
    led.close()
    anchors, bad = AnchorLog(settings.anchor_file).read()
    assert [a.seq for a in anchors] == [3, 7] and not bad
    rep = _check(path, settings, anchors=anchors[:1])  # only the old one, as a copy kept elsewhere would be
    assert rep.ok and rep.anchors_matched == 1 and rep.anchored_seq == 3, rep.problems
    rep = _check(path, settings)
    assert rep.ok and rep.anchors_matched == 2 and rep.anchored_seq == 7 and not rep.notes


def test_a_forged_or_edited_anchor_is_named(tmp_path, settings):
    path = tmp_path / "l.db"
    _signed(path, settings, 3, anchor_at=3).close()
    (genuine,), _ = AnchorLog(settings.anchor_file).read()
    import dataclasses

    edited = dataclasses.replace(genuine, seq=2)
    rep = _check(path, settings, anchors=[edited])
    assert rep.problems == (f"anchor of {genuine.time} (seq 2): signature does not verify: "
                            "the anchor was forged or edited",)
    other = Anchor.take(LedgerKey.create(tmp_path / "other.key"), seq=3, hash=genuine.hash, reason="x", ledger="y")
    assert "was signed by key" in _check(path, settings, anchors=[other]).problems[0]
    with open(settings.anchor_file, "a") as f:
        f.write('{"seq": 9}\n')
    assert _check(path, settings).problems == (f"{settings.anchor_file} line 2: not an anchor (edited or truncated)",)


def test_checkpoint_never_vouches_for_a_forged_record(tmp_path, settings):
    path = tmp_path / "l.db"
    _signed(path, settings, 3, anchor_at=3).close()
    _attack(path, lambda con: _insert(con, [_row(4, _record(9), _head(con)[1])]))
    led = open_ledger(path, anchoring=settings, read_only=True, key=settings.signing_key())
    before = settings.anchor_file.read_bytes()
    with pytest.raises(LedgerTampered, match="not anchoring .*seq 4: not signed"):
        led.checkpoint("on demand")
    assert settings.anchor_file.read_bytes() == before


def test_server_anchors_every_n_appends_and_at_close(tmp_path):
    s = AnchorSettings(key_path=tmp_path / "k" / "anchor.key", anchor_file=tmp_path / "a.jsonl", every=2)
    led = open_ledger(tmp_path / "l.db", anchoring=s)
    for i in range(1, 6):
        led.append(_record(i))
    assert [a.seq for a in AnchorLog(s.anchor_file).read()[0]] == [2, 4]
    led.close()
    assert [(a.seq, a.reason) for a in AnchorLog(s.anchor_file).read()[0]][-1] == (5, "close")
    # a restart after a crash anchors what was appended since (here: nothing new)
    open_ledger(tmp_path / "l.db", anchoring=s).close()
    assert len(AnchorLog(s.anchor_file).read()[0]) == 3


def test_the_app_anchors_at_shutdown(tmp_path, settings, make_app):
    from fastapi.testclient import TestClient

    led = _signed(tmp_path / "l.db", settings, 2)
    app, _ = make_app(ledger=led)
    with TestClient(app):
        led.append(_record(3))
    assert [a.reason for a in AnchorLog(settings.anchor_file).read()[0]] == ["shutdown"]
    assert AnchorLog(settings.anchor_file).read()[0][0].seq == 3


def test_a_ledger_from_before_signing_is_covered_by_its_first_anchor(tmp_path, settings):
    path = tmp_path / "l.db"
    legacy = SQLiteLedger(path)  # no key: as every ledger was before
    for i in range(1, 4):
        legacy.append(_record(i))
    legacy.close()
    led = open_ledger(path, anchoring=settings)  # the first start with a key anchors seq 3
    assert [a.seq for a in AnchorLog(settings.anchor_file).read()[0]] == [3]
    led.append(_record(4))
    assert led.get(_record(2)["score_id"]).seq == 2  # unsigned, but the chain from it reaches the anchor
    led.close()
    assert _check(path, settings).ok
    # an unsigned record slipped in after the signed ones is not legacy
    _attack(path, lambda con: _insert(con, [_row(5, _record(9), _head(con)[1])]))
    assert any("seq 5: not signed although earlier records are" in p for p in _check(path, settings).problems)


def test_a_rehashed_record_from_before_signing_fails_its_read(tmp_path, settings):
    path = tmp_path / "l.db"
    legacy = SQLiteLedger(path)
    for i in range(1, 4):
        legacy.append(_record(i))
    legacy.close()
    open_ledger(path, anchoring=settings).close()

    def rehash(con):
        body = con.execute("SELECT body FROM ledger WHERE seq = 2").fetchone()[0].replace('"p2"', '"px"')
        h = hashlib.sha256(body.encode()).hexdigest()
        con.execute("UPDATE ledger SET body = ?, hash = ?, patient_id = 'px' WHERE seq = 2", (body, h))

    _attack(path, rehash)
    led = open_ledger(path, anchoring=settings, read_only=True)
    with pytest.raises(TamperedRecord, match="not signed and the chain to the anchor .* is broken"):
        led.get(_record(2)["score_id"])


# -- reads check what they return -------------------------------------------------------

def test_get_refuses_an_edited_record(tmp_path, settings):
    path = tmp_path / "l.db"
    _signed(path, settings, 3).close()
    sid = _record(2)["score_id"]
    _attack(path, lambda con: con.execute(
        "UPDATE ledger SET body = replace(body, '\"risk_score\":0.2', '\"risk_score\":0.9') WHERE seq = 2"))
    led = open_ledger(path, anchoring=settings, read_only=True)
    with pytest.raises(TamperedRecord) as err:
        led.get(sid)
    assert str(err.value) == (f"score {sid} (ledger seq 2) failed verification: record edited (its content no "
                              "longer matches its hash); run `facesurv audit verify`")
    assert err.value.exit_code == 1 and isinstance(err.value, LedgerTampered)


def test_get_refuses_a_rehashed_record_and_a_broken_link(tmp_path, settings):
    path = tmp_path / "l.db"
    _signed(path, settings, 4).close()

    def rehash(con):  # body and hash rewritten together: only the signature (and the next link) tell
        # the risk score only: a text replace of "0.2" could hit created_at too, a different finding
        doc = json.loads(con.execute("SELECT body FROM ledger WHERE seq = 2").fetchone()[0])
        doc["record"]["result"]["risk_score"] = 0.9
        body = canonical_json(doc)
        con.execute("UPDATE ledger SET body = ?, hash = ? WHERE seq = 2", (body, sha256_text(body)))

    _attack(path, rehash)
    led = open_ledger(path, anchoring=settings, read_only=True)
    with pytest.raises(TamperedRecord, match="seq 2.*signature does not verify"):
        led.get(_record(2)["score_id"])
    with pytest.raises(TamperedRecord, match="seq 3.*the record before it is missing or was changed"):
        led.get(_record(3)["score_id"])
    assert led.get(_record(4)["score_id"]).seq == 4


def test_get_without_a_key_still_checks_hash_and_link(tmp_path):
    led = SQLiteLedger(tmp_path / "l.db")
    for i in range(1, 4):
        led.append(_record(i))
    led.close()
    _attack(tmp_path / "l.db", lambda con: con.execute("DELETE FROM ledger WHERE seq = 1"))
    with pytest.raises(TamperedRecord, match="the record before it is missing"):
        SQLiteLedger(tmp_path / "l.db", read_only=True).get(_record(2)["score_id"])


# -- verify never writes ----------------------------------------------------------------

def _files(path):
    return {p.name: p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name)}


def test_verify_leaves_a_tampered_database_as_it_found_it(tmp_path, settings):
    path = tmp_path / "l.db"
    _signed(path, settings, 3, anchor_at=3).close()
    _attack(path, lambda con: con.execute("DELETE FROM ledger_head"), restore=False)
    before = path.read_bytes()
    rep = _check(path, settings)
    assert path.read_bytes() == before  # byte-identical: no trigger, no head row recreated
    assert {k: v for k, v in _files(path).items() if k != path.name} in ({}, {path.name + "-wal": b"",
                                                                            path.name + "-shm": _files(path).get(
                                                                                path.name + "-shm")})
    assert "ledger head is missing (deleted)" in rep.problems
    for t in TRIGGERS:
        assert any(p.startswith(f"trigger {t} is missing") for p in rep.problems), rep.problems
    con = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    assert con.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM ledger_head").fetchone() == (0,)
    con.close()


def test_cli_verify_does_not_write_and_a_writer_refuses_a_deleted_head(workspace, capsys):
    from facesurv.cli import main
    from serving.anchor import anchor_settings

    s = anchor_settings(workspace, workspace.load_params())
    _signed(workspace.ledger_path, s, 3).close()
    _attack(workspace.ledger_path, lambda con: con.execute("DELETE FROM ledger_head"), restore=False)
    before = workspace.ledger_path.read_bytes()
    assert main(["audit", "verify", "--workspace", str(workspace.root)]) == 1
    err = capsys.readouterr().err
    assert "TAMPERED: ledger head is missing (deleted)" in err
    assert "TAMPERED: trigger ledger_no_update is missing" in err
    assert workspace.ledger_path.read_bytes() == before
    # the server does not paper over it either (a new head at seq 0 would fail every append)
    with pytest.raises(LedgerTampered, match="head row is missing"):
        open_ledger(workspace.ledger_path, anchoring=s)


def test_read_only_ledger_refuses_appends(tmp_path):
    SQLiteLedger(tmp_path / "l.db").close()
    with pytest.raises(ConfigError, match="read-only"):
        SQLiteLedger(tmp_path / "l.db", read_only=True).append(_record(1))


# -- files are 0600 -----------------------------------------------------------------------

def test_ledger_key_and_anchor_files_are_private(tmp_path, settings):
    old = os.umask(0o022)
    try:
        led = _signed(tmp_path / "l.db", settings, 2)
        led.checkpoint("test")
        names = [tmp_path / "l.db", tmp_path / "l.db-wal", tmp_path / "l.db-shm", settings.key_path,
                 settings.anchor_file]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in names}  # -wal/-shm exist while open
        led.close()
    finally:
        os.umask(old)
    assert modes == dict.fromkeys(modes, 0o600)
    assert settings.public_key_path.exists()


def test_an_existing_world_readable_ledger_is_tightened(tmp_path):
    path = tmp_path / "l.db"
    SQLiteLedger(path).close()
    os.chmod(path, 0o644)
    SQLiteLedger(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_handling_refuses_what_would_break_signatures(tmp_path, settings):
    settings.signing_key()
    os.chmod(settings.key_path, 0o644)
    with pytest.raises(ConfigError, match="readable by others .* chmod 600"):
        settings.signing_key()
    os.chmod(settings.key_path, 0o600)
    settings.key_path.unlink()
    with pytest.raises(ConfigError, match="missing but its public key .* exists: restore the private key"):
        settings.signing_key()


def test_a_signed_ledger_whose_key_is_lost_gets_no_new_key(tmp_path, settings):
    _signed(tmp_path / "l.db", settings, 2).close()
    settings.key_path.unlink()
    settings.public_key_path.unlink()
    with pytest.raises(ConfigError, match="is signed but its key .* is missing: restore it"):
        open_ledger(tmp_path / "l.db", anchoring=settings)
    assert not settings.key_path.exists()


def test_cli_anchor_and_verify_with_an_anchor_copy(workspace, capsys, tmp_path):
    from facesurv.cli import main
    from serving.anchor import anchor_settings

    s = anchor_settings(workspace, workspace.load_params())
    assert s.key_path == workspace.root / "serving" / "anchor.key"
    assert s.anchor_file == workspace.root / "serving" / "anchors.jsonl"
    led = _signed(workspace.ledger_path, s, 2)
    w = ["--workspace", str(workspace.root)]
    assert main(["audit", "anchor", *w]) == 0
    assert "anchored seq 2" in capsys.readouterr().out
    copy = tmp_path / "anchors-copy.jsonl"
    copy.write_bytes(s.anchor_file.read_bytes())
    old_head = led.verify().head_hash
    led.append(_record(3))
    led.close()  # anchors seq 3
    assert main(["audit", "verify", "--anchor", str(copy), *w]) == 0
    assert "intact, 3 records, signatures checked, 1 anchor(s) matched" in capsys.readouterr().out
    assert main(["audit", "verify", "--expect-head", old_head, *w]) == 0  # an earlier head is a prefix too
    assert "deprecated" in capsys.readouterr().err

    def trim(con):
        con.execute("DELETE FROM ledger WHERE seq = 3")
        con.execute("UPDATE ledger_head SET seq = 2, hash = ? WHERE id = 1", (old_head,))

    _attack(workspace.ledger_path, trim)
    # the copy predates the deletion: seq 3 was in the window after its anchor ...
    assert main(["audit", "verify", "--anchor", str(copy), *w]) == 0
    assert "record(s) seq 3 come after the latest anchor" not in capsys.readouterr().err  # nothing left after it
    assert main(["audit", "verify", *w]) == 1  # ... the workspace's file has the anchor taken at close
    err = capsys.readouterr().err
    assert "(seq 3): the ledger now ends at seq 2: record(s) seq 3 were deleted from the end" in err
    assert err.count("TAMPERED") == 1


_OLD_LAYOUT = f"""
    CREATE TABLE ledger (seq INTEGER PRIMARY KEY, score_id TEXT NOT NULL UNIQUE, patient_id TEXT NOT NULL,
        created_at TEXT NOT NULL, prev_hash TEXT NOT NULL UNIQUE, hash TEXT NOT NULL UNIQUE, body TEXT NOT NULL);
    CREATE TABLE ledger_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL);
    INSERT INTO ledger_head VALUES (1, 0, '{GENESIS}');
    CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger BEGIN SELECT RAISE(ABORT, 'append-only'); END;
    CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger BEGIN SELECT RAISE(ABORT, 'append-only'); END;
"""


def test_a_ledger_in_the_old_layout_is_checked_read_only_then_upgraded(tmp_path, settings):
    path = tmp_path / "l.db"
    con = sqlite3.connect(path, isolation_level=None)
    con.executescript(_OLD_LAYOUT)
    prev = GENESIS
    for i in range(1, 4):
        row = _row(i, _record(i), prev)[:7]
        con.execute("INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?)", row)
        prev = row[5]
    con.execute("UPDATE ledger_head SET seq = 3, hash = ?", (prev,))
    con.close()
    before = path.read_bytes()
    rep = _check(path, settings)  # no key yet, no sig column: the chain alone, as before
    assert rep.ok and rep.records == 3 and not rep.signatures_checked, rep.problems
    assert path.read_bytes() == before
    led = open_ledger(path, anchoring=settings)  # the server's first start: upgrade, key, first anchor
    led.append(_record(4))
    assert led.get(_record(1)["score_id"]).seq == 1
    led.close()
    rep = _check(path, settings)
    assert rep.ok and rep.signatures_checked and rep.signed_records == 1 and rep.anchored_seq == 4, rep.problems
