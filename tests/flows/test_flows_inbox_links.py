"""The inbox reads only plain files inside it: links (to files or folders, inside or outside),
hard links, FIFOs and devices are quarantined with the reason, unread, and never reach the data
repository; the valid files of the same batch still do."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from features import inbox as inbox_mod
from features.inbox import ingest, mark_done, scan_inbox
from flows import embedding_steps
from ground.errors import DataError

SECRET = b"root:x:0:0:outside the inbox, must never be copied\n"


@pytest.fixture()
def box(tmp_path: Path) -> Path:
    """An inbox with one valid photo and clinical file, and a secret file outside it."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.png").write_bytes(SECRET)
    (tmp_path / "outside" / "secret.csv").write_bytes(SECRET)
    b = tmp_path / "inbox"
    (b / "photos").mkdir(parents=True)
    (b / "photos" / "good.png").write_bytes(b"GOOD")
    (b / "clinical.csv").write_text("patient_id\nP1\n")
    return b


def _outside(b: Path) -> Path:
    return b.parent / "outside"


KINDS = {
    "symlink to an outside file": (lambda b: os.symlink(_outside(b) / "secret.png", b / "photos" / "leak.png"),
                                   "photos/leak.png", "is a symbolic link, which is never followed"),
    "symlink to an inside file": (lambda b: os.symlink("good.png", b / "photos" / "leak.png"),
                                  "photos/leak.png", "is a symbolic link, which is never followed"),
    "symlink to /dev/null": (lambda b: os.symlink(os.devnull, b / "photos" / "leak.png"),
                             "photos/leak.png", "is a symbolic link"),
    "hard link": (lambda b: os.link(_outside(b) / "secret.png", b / "photos" / "leak.png"),
                  "photos/leak.png", r"is a hard link \(2 names for one file, possibly one outside the folder\)"),
    "FIFO": (lambda b: os.mkfifo(b / "photos" / "leak.png"), "photos/leak.png", r"is a FIFO \(named pipe\)"),
    "symlinked pre-aligned folder": (lambda b: os.symlink(_outside(b), b / "prealigned"),
                                     "prealigned", "prealigned/ is a symbolic link to a folder"),
    "symlinked clinical file": (lambda b: (os.mkdir(b / "clinical"),
                                           os.symlink(_outside(b) / "secret.csv", b / "clinical" / "x.csv")),
                                "clinical/x.csv", "is a symbolic link"),
}


@pytest.mark.timeout(30)  # a FIFO that is opened blocks forever
@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_is_quarantined_unread_and_the_rest_ingested(box: Path, tmp_path: Path, kind: str) -> None:
    make, rel, reason = KINDS[kind]
    make(box)
    state, data = tmp_path / "state.json", tmp_path / "data"
    batch = scan_inbox(box, state_path=state)
    assert [(r.path.relative_to(box).as_posix(), bool(re.search(reason, r.reason)))
            for r in batch.rejected] == [(rel, True)], [str(r) for r in batch.rejected]
    assert [f.photo_id for f in batch.photos] == ["good"] and not batch.prealigned and len(batch.clinical) == 1
    written = ingest(batch, data)
    assert written["photos"] == ["photos/good.png"] and len(written["clinical"]) == 1
    copied = [p for p in data.rglob("*") if p.is_file()]
    assert all(p.read_bytes() != SECRET for p in copied) and not any(p.is_symlink() for p in data.rglob("*"))
    assert sorted(p.name for p in copied if p.suffix == ".png") == ["good.png"]
    # quarantined entries are never marked done: reported again until they are fixed
    mark_done(batch, state_path=state)
    again = scan_inbox(box, state_path=state)
    assert len(again) == 0 and [r.path for r in again.rejected] == [r.path for r in batch.rejected]


def test_a_symlinked_photos_folder_is_not_descended(box: Path, tmp_path: Path) -> None:
    real = tmp_path / "real"
    (box / "photos").rename(real)
    os.symlink(real, box / "photos")
    batch = scan_inbox(box, state_path=tmp_path / "state.json")
    assert not batch.photos
    (rejected,) = batch.rejected
    assert rejected.path == box / "photos"
    assert "photos/ is a symbolic link to a folder, which is never followed; make photos/ a real folder" \
        in rejected.reason


def test_a_link_in_a_subfolder_by_name_is_ignored_like_any_non_photo(box: Path, tmp_path: Path) -> None:
    os.symlink(tmp_path / "outside", box / "photos" / "more")       # no photo suffix: not a photo
    batch = scan_inbox(box, state_path=tmp_path / "state.json")
    assert [f.photo_id for f in batch.photos] == ["good"] and not batch.rejected


def test_a_file_turned_into_a_link_after_the_scan_is_not_copied(box: Path, tmp_path: Path) -> None:
    (box / "photos" / "late.png").write_bytes(b"LATE")
    batch = scan_inbox(box, state_path=tmp_path / "state.json")
    assert sorted(f.photo_id for f in batch.photos) == ["good", "late"]
    (box / "photos" / "late.png").unlink()
    os.symlink(tmp_path / "outside" / "secret.png", box / "photos" / "late.png")
    data = tmp_path / "data"
    with pytest.raises(DataError, match=r"1 inbox file\(s\) changed after the scan and were not copied \(the "
                                         r"other files were\), first: .*late.png: is a symbolic link.*run again"):
        ingest(batch, data)
    assert (data / "photos" / "good.png").read_bytes() == b"GOOD"      # valid records are not lost
    assert not (data / "photos" / "late.png").exists()
    assert not [p for p in data.rglob(".*")]                             # nothing half-written


def test_a_failed_copy_keeps_the_old_version(box: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    ingest(scan_inbox(box, state_path=tmp_path / "s.json"), data)
    (box / "photos" / "good.png").unlink()
    (box / "photos" / "good.jpg").write_bytes(b"GOOD again, as a jpeg")
    batch = scan_inbox(box, state_path=tmp_path / "s.json")
    (box / "photos" / "good.jpg").unlink()
    os.mkfifo(box / "photos" / "good.jpg")
    with pytest.raises(DataError, match="good.jpg: is a FIFO"):
        ingest(batch, data)
    assert (data / "photos" / "good.png").read_bytes() == b"GOOD"      # not dropped for the refused re-delivery


def test_inbox_file_reads_go_through_the_one_check() -> None:
    assert inbox_mod.sha256_regular_file.__module__ == "embedding.fileio"
    assert inbox_mod.open_regular_file.__module__ == "embedding.fileio"


# --- the flow's own reads of the data repository ----------------------------------------------

@pytest.mark.timeout(300)
def test_the_flow_never_reads_a_link_in_the_data_repository(workspace, params, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(SECRET)
    photos, pre = workspace.data_dir / "photos", workspace.data_dir / "prealigned"
    photos.mkdir(parents=True)
    pre.mkdir()
    (photos / "good.png").write_bytes(b"GOOD")
    os.symlink(secret, photos / "leak.png")
    os.mkfifo(photos / "pipe.png")
    (pre / "ok.png").write_bytes(b"OK")
    os.symlink(secret, pre / "leak.png")
    os.link(secret, pre / "hard.png")
    for _ in range(2):  # quarantined again on the next run: never reused until it is replaced
        result = embedding_steps.align_photos(workspace, params)
        rows = {r["photo_id"]: r for r in result.rows}
        assert {k: (r["reason"], r["source_sha256"]) for k, r in rows.items()} == {
            "good": ("not_an_image", hashlib.sha256(b"GOOD").hexdigest()), "leak": ("unreadable", ""),
            "pipe": ("unreadable", "")}
        assert "is a symbolic link, which is never followed" in rows["leak"]["message"]
        assert "is a FIFO" in rows["pipe"]["message"]
    todo = embedding_steps.pending_batches(workspace, params)
    assert [p.photo_id for b in todo.batches for p in b] == ["ok"]
    reasons = {f.photo_id: f.reason for f in todo.failures}
    assert set(reasons) == {"leak", "hard"}
    assert "is a symbolic link" in reasons["leak"] and "is a hard link" in reasons["hard"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_nightly_flow_quarantines_links_and_commits_only_plain_files(workspace, prefect_api, tmp_path: Path) -> None:
    from flows.nightly_embedding import nightly_embedding
    from tests.flows.flows_helpers import fill_inbox, tiny_params

    tiny_params(workspace.root, contracts={"max_projection_loss": 100.0})
    ids = fill_inbox(workspace.root, start=0, count=3)
    secret = tmp_path / "secret.png"
    secret.write_bytes(SECRET)
    inbox = workspace.root / "inbox"
    (inbox / "photos").mkdir(exist_ok=True)
    os.symlink(secret, inbox / "photos" / "leak.png")
    os.symlink(secret, inbox / "prealigned" / "leak2.png")
    os.mkfifo(inbox / "prealigned" / "pipe.png")
    summary = nightly_embedding(str(workspace.root))
    assert summary["new_photos"] == len(ids) and summary["latent_rows_written"] == len(ids)
    assert sorted(Path(s.split(": ")[0]).name for s in summary["inbox_quarantined"]) == \
        ["leak.png", "leak2.png", "pipe.png"]
    # nothing of the secret anywhere: data repository, DVC cache and remote, artifacts
    leaked = [p for p in workspace.root.rglob("*")
              if p.is_file() and not p.is_symlink() and inbox not in p.parents and p.read_bytes() == SECRET]
    assert not leaked
    assert not (workspace.data_dir / "photos" / "leak.png").exists()
