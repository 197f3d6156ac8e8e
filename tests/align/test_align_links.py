"""Only plain files inside the input folder are opened: links, hard links, FIFOs, devices and
sockets are quarantined with the reason, unread (embedding.fileio.open_regular_file)."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import stat
from pathlib import Path

import pytest

from embedding import fileio
from embedding.align import AlignRejected, align_directory, read_manifest, read_source
from embedding.fileio import UnsafeFileError, file_problem, open_regular_file, read_regular_file

SECRET = b"outside the folder: must never be read\n"


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """An input folder with one plain file, and a secret file outside it."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.png").write_bytes(SECRET)
    box = tmp_path / "in"
    box.mkdir()
    (box / "plain.png").write_bytes(b"plain")
    return box


def _stat(mode: int, nlink: int = 1) -> os.stat_result:
    return os.stat_result((mode, 1, 1, nlink, 0, 0, 0, 0, 0, 0))


# --- the one check ---------------------------------------------------------------------------

@pytest.mark.parametrize(("mode", "nlink", "match"), [
    (stat.S_IFREG | 0o644, 1, None),
    (stat.S_IFLNK | 0o777, 1, "is a symbolic link"),
    (stat.S_IFDIR | 0o755, 2, "is a directory"),
    (stat.S_IFIFO | 0o644, 1, "is a FIFO"),
    (stat.S_IFSOCK | 0o755, 1, "is a socket"),
    # device nodes cannot be made without root: the mode is checked on a stat result instead
    (stat.S_IFCHR | 0o666, 1, "is a device"),
    (stat.S_IFBLK | 0o660, 1, "is a device"),
    (stat.S_IFREG | 0o644, 2, r"is a hard link \(2 names"),
])
def test_file_problem_names_every_kind(mode: int, nlink: int, match: str | None) -> None:
    problem = file_problem(_stat(mode, nlink))
    if match is None:
        assert problem is None
    else:
        assert problem is not None and re.search(match, problem), problem


def test_a_device_is_refused_before_it_is_opened(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (folder / "tty.png").write_bytes(b"")
    real_stat = os.stat
    opened = []
    real_open = os.open

    def fake_stat(path, *args, **kw):  # the folder's tty.png claims to be a character device
        st = real_stat(path, *args, **kw)
        return _stat(stat.S_IFCHR | 0o666) if str(path) == "tty.png" else st

    def spy_open(path, *args, **kw):
        opened.append(str(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(fileio.os, "stat", fake_stat)
    monkeypatch.setattr(fileio.os, "open", spy_open)
    with pytest.raises(UnsafeFileError, match="tty.png: is a device, not a file; only plain files are read"):
        read_regular_file(folder / "tty.png", root=folder)
    assert "tty.png" not in opened


def test_plain_files_inside_are_read(folder: Path) -> None:
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.png").write_bytes(b"deep")
    assert read_regular_file(folder / "plain.png", root=folder) == b"plain"
    assert read_regular_file(folder / "plain.png") == b"plain"          # root: its own folder
    assert read_regular_file(folder / "sub" / "deep.png", root=folder) == b"deep"
    assert read_regular_file(folder / "sub" / ".." / "plain.png", root=folder) == b"plain"


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("make", "match"), [
    (lambda d: os.symlink(d.parent / "outside" / "secret.png", d / "x.png"), "is a symbolic link, which is never followed"),
    (lambda d: os.symlink("plain.png", d / "x.png"), "is a symbolic link, which is never followed"),
    (lambda d: os.symlink("nowhere.png", d / "x.png"), "symbolic link to something that does not exist"),
    (lambda d: os.symlink(os.devnull, d / "x.png"), "is a symbolic link"),
    (lambda d: os.link(d.parent / "outside" / "secret.png", d / "x.png"), "is a hard link"),
    (lambda d: os.mkfifo(d / "x.png"), r"is a FIFO \(named pipe\)"),
])
def test_links_and_special_files_are_refused(folder: Path, make, match: str) -> None:
    make(folder)
    with pytest.raises(UnsafeFileError, match=match) as info:
        read_regular_file(folder / "x.png", root=folder)
    assert info.value.path == str(folder / "x.png") and "copy" in info.value.reason


def test_paths_through_a_linked_folder_or_outside_are_refused(folder: Path) -> None:
    os.symlink(folder.parent / "outside", folder / "linked")
    with pytest.raises(UnsafeFileError, match="lies in linked/, a symbolic link to a folder"):
        read_regular_file(folder / "linked" / "secret.png", root=folder)
    with pytest.raises(UnsafeFileError, match="is outside .*; put the file inside that folder"):
        read_regular_file(folder / ".." / "outside" / "secret.png", root=folder)


# --- the swap race: checked by lstat, then replaced before the open --------------------------

def _swap_after_check(monkeypatch: pytest.MonkeyPatch, swap) -> None:
    real = fileio._refuse
    calls = []

    def refuse_then_swap(path, st):
        real(path, st)
        if not calls:
            calls.append(path)
            swap(Path(path))

    monkeypatch.setattr(fileio, "_refuse", refuse_then_swap)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("swap", "match"), [
    (lambda p: (p.unlink(), os.symlink(p.parent.parent / "outside" / "secret.png", p)), "became a symbolic link"),
    (lambda p: (p.unlink(), os.mkfifo(p)), "is a FIFO"),     # O_NONBLOCK: the open does not hang
    (lambda p: (p.with_name("new").write_bytes(b"other"), os.replace(p.with_name("new"), p)),
     "was replaced while being opened"),
])
def test_a_file_swapped_after_the_check_is_refused(folder: Path, monkeypatch: pytest.MonkeyPatch, swap,
                                                   match: str) -> None:
    _swap_after_check(monkeypatch, swap)
    with pytest.raises(UnsafeFileError, match=match):
        open_regular_file(folder / "plain.png", root=folder)


# --- alignment: read_source, align_directory, `facesurv align` -------------------------------

def test_read_source_quarantines_links_as_unreadable(folder: Path) -> None:
    os.symlink(folder.parent / "outside" / "secret.png", folder / "leak.png")
    with pytest.raises(AlignRejected, match="leak.png: is a symbolic link, which is never followed") as info:
        read_source(folder / "leak.png")
    assert info.value.reason == "unreadable"


@pytest.fixture()
def hostile_dir(faces_dir: Path, tmp_path: Path) -> Path:
    """One good photo; every other image name is a link or special file, some to a good face."""
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copyfile(faces_dir / "astronaut.png", outside / "face.png")
    d = tmp_path / "photos"
    d.mkdir()
    shutil.copyfile(faces_dir / "astronaut.png", d / "good.png")
    os.symlink(outside / "face.png", d / "outlink.png")          # would align: a real face
    os.symlink("good.png", d / "inlink.png")
    os.link(outside / "face.png", d / "hardlink.png")
    os.mkfifo(d / "pipe.jpg")                                   # reading it would block forever
    os.symlink(os.devnull, d / "null.jpg")
    os.symlink(outside, d / "linkdir.jpg")
    return d


LINK_REASONS = {
    "outlink": "is a symbolic link", "inlink": "is a symbolic link", "hardlink": "is a hard link",
    "pipe": "is a FIFO", "null": "is a symbolic link", "linkdir": "is a symbolic link",
}


@pytest.mark.timeout(300)
def test_align_directory_quarantines_links_and_aligns_the_rest(hostile_dir: Path, small_config, aligner,
                                                               tmp_path: Path) -> None:
    config = dataclasses.replace(small_config, output_size=64, transform_size=256)
    from embedding.align import Aligner

    one = Aligner(config, aligner.models)
    result = align_directory(hostile_dir, tmp_path / "out", config=config, workers=1, aligner=one)
    rows = {r["photo_id"]: r for r in result.rows}
    assert rows["good"]["status"] == "aligned"
    for photo_id, text in LINK_REASONS.items():
        row = rows[photo_id]
        assert (row["status"], row["reason"]) == ("quarantined", "unreadable"), (photo_id, row["message"])
        assert text in row["message"] and row["source_sha256"] == "", (photo_id, row["message"])
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["good.png"]
    assert read_manifest(tmp_path / "out" / "manifest.csv")["outlink"]["reason"] == "unreadable"


@pytest.mark.timeout(300)
def test_cli_align_reports_a_linked_photo(faces_dir: Path, workspace, tmp_path: Path, capsys) -> None:
    from facesurv.cli import main

    shutil.copyfile(faces_dir / "astronaut.png", tmp_path / "face.png")
    (tmp_path / "in").mkdir()
    os.symlink(tmp_path / "face.png", tmp_path / "in" / "outlink.png")
    code = main(["align", str(tmp_path / "in"), str(tmp_path / "out"), "--workspace", str(workspace.root),
                 "--output-size", "64", "--workers", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "0 aligned, 1 quarantined (unreadable 1)" in captured.out
    assert "quarantined outlink: unreadable" in captured.err and "symbolic link" in captured.err
    assert not (tmp_path / "out" / "outlink.png").exists()
