"""Inbox pick-up by content hash, and the one-run-at-a-time lock."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from features.inbox import ingest, mark_done, scan_inbox
from features.lock import LockTimeout, data_repo_lock
from ground.errors import DataError


@pytest.fixture()
def inbox(tmp_path: Path) -> Path:
    box = tmp_path / "inbox"
    (box / "photos").mkdir(parents=True)
    (box / "photos" / "a.png").write_bytes(b"A")
    (box / "photos" / "b.jpg").write_bytes(b"B")
    (box / "photos" / "notes.txt").write_text("not a photo")
    (box / "clinical.csv").write_text("patient_id\nP1\n")
    return box


def test_scan_ingest_and_mark_done(inbox: Path, tmp_path: Path) -> None:
    state, data = tmp_path / "state.json", tmp_path / "data"
    batch = scan_inbox(inbox, state_path=state)
    assert [f.photo_id for f in batch.photos] == ["a", "b"] and len(batch.clinical) == 1
    written = ingest(batch, data)
    assert written["photos"] == ["photos/a.png", "photos/b.jpg"]
    assert (data / "photos" / "a.png").read_bytes() == b"A"
    assert ingest(batch, data) == written  # idempotent
    assert len(list((data / "clinical").iterdir())) == 1
    # a crash before mark_done: the next scan sees the same files again
    assert len(scan_inbox(inbox, state_path=state)) == 3
    assert mark_done(batch, state_path=state) == 3
    assert len(scan_inbox(inbox, state_path=state)) == 0
    (inbox / "photos" / "c.png").write_bytes(b"C")
    (inbox / "photos" / "a.png").write_bytes(b"A2")  # a re-taken photo is new content
    assert sorted(f.photo_id for f in scan_inbox(inbox, state_path=state).photos) == ["a", "c"]


def test_missing_inbox_is_empty(tmp_path: Path) -> None:
    assert len(scan_inbox(tmp_path / "nowhere", state_path=tmp_path / "s.json")) == 0


def test_two_photos_with_one_photo_id_are_refused(inbox: Path, tmp_path: Path) -> None:
    (inbox / "photos" / "a.jpg").write_bytes(b"other A")
    with pytest.raises(DataError, match="share the photo_id 'a'"):
        scan_inbox(inbox, state_path=tmp_path / "s.json")


def test_corrupt_state_says_how_to_recover(inbox: Path, tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text("{not json")
    with pytest.raises(DataError, match="delete it to rescan"):
        scan_inbox(inbox, state_path=tmp_path / "s.json")


HOLD = """
import sys, time
from features.lock import data_repo_lock
with data_repo_lock(sys.argv[1], timeout_s=0, what="holder process"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_second_run_waits_then_exits_with_a_clear_message(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        t0 = time.monotonic()
        with pytest.raises(LockTimeout, match=r"busy: holder process \(pid \d+.*waited 1 s.*flows.lock_timeout_s"):
            with data_repo_lock(tmp_path, timeout_s=1.0):
                pass
        assert time.monotonic() - t0 >= 0.9  # it did wait
        # the holder dies without cleanup (like a crash): the lock is free at once
        holder.kill()
        holder.wait()
        with data_repo_lock(tmp_path, timeout_s=5.0, what="after crash") as root:
            assert root == tmp_path
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_lock_is_reentrant_across_sequential_runs(tmp_path: Path) -> None:
    for _ in range(2):
        with data_repo_lock(tmp_path, timeout_s=0):
            assert (tmp_path / ".facesurv-run.holder.json").exists()
        assert not (tmp_path / ".facesurv-run.holder.json").exists()
