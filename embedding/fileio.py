"""File helpers every part of embedding/ shares: content hashes, atomic writes, safe input reads.

Content hashes key every cache in the pipeline (alignment rows, projection shards, weight
files); atomic writes mean a crash leaves the old file or the new one, never half of one.

Input folders (the inbox, `facesurv align`'s and `facesurv project`'s folders) are written by
people and other programs, so their files are opened with `open_regular_file` only: a link, a
hard link, a device, a FIFO, a socket or a path leading outside the folder is refused before
it is opened (see docs/security.md).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO


def _sha256_stream(fh: BinaryIO) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: fh.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (the project's own files; inputs: sha256_regular_file)."""
    with open(path, "rb") as fh:
        return _sha256_stream(fh)


# --- input files: one plain file inside its folder, or not opened at all ---------------------

_COPY_ADVICE = "only plain files are read: copy the file itself into the folder"
# O_NONBLOCK: a FIFO swapped in after the check must not hang the open (it is refused after it).
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_LINK_ERRNOS = (errno.ELOOP, errno.EMLINK)  # what O_NOFOLLOW answers for a link (Linux, BSD)


class UnsafeFileError(OSError):
    """An input path that is not one plain file inside its folder; it was not opened.

    An OSError, so every `except OSError` that reports an unreadable file reports this one too.
    `reason` says what the path is and how to fix it, without the path.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"{os.fspath(path)}: {reason}")
        self.path, self.reason = os.fspath(path), reason

    def __reduce__(self) -> tuple[type[UnsafeFileError], tuple[str, str]]:  # pickles with both fields
        return type(self), (self.path, self.reason)


def file_problem(st: os.stat_result) -> str | None:
    """Why an lstat/fstat result is not a plain file that may be read (a one-line reason), or None.

    The one check every input read goes through; pure, so it can be tested with any mode.
    """
    mode = st.st_mode
    if stat.S_ISLNK(mode):
        return f"is a symbolic link, which is never followed; {_COPY_ADVICE}"
    if stat.S_ISDIR(mode):
        return "is a directory, not a file"
    if stat.S_ISFIFO(mode):
        return f"is a FIFO (named pipe), not a file; {_COPY_ADVICE}"
    if stat.S_ISSOCK(mode):
        return f"is a socket, not a file; {_COPY_ADVICE}"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return f"is a device, not a file; {_COPY_ADVICE}"
    if not stat.S_ISREG(mode):
        return f"is not a regular file; {_COPY_ADVICE}"
    if st.st_nlink > 1:
        # the other names may be anywhere on the file system, outside the folder included
        return (f"is a hard link ({st.st_nlink} names for one file, possibly one outside the folder); "
                "copy it into the folder (cp, not ln) so it has a name of its own")
    return None


def _parts_inside(path: str | os.PathLike, root: str | os.PathLike) -> list[str]:
    """`path`'s components below `root` (lexically, after removing ..); refuse a path outside it."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    parts = rel.split(os.sep)
    if rel == os.curdir or parts[0] == os.pardir:
        raise UnsafeFileError(path, f"is outside {os.fspath(root)}; put the file inside that folder")
    return parts


def _refuse(path: str | os.PathLike, st: os.stat_result) -> None:
    problem = file_problem(st)
    if problem is not None:
        if stat.S_ISLNK(st.st_mode) and not os.path.exists(path):
            problem = problem.replace("symbolic link", "symbolic link to something that does not exist", 1)
        raise UnsafeFileError(path, problem)


def _enter(dir_fd: int, name: str, path: str | os.PathLike) -> int:
    """Open sub-folder `name` of dir_fd without following a link (a linked folder may lead anywhere)."""
    try:
        return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        if stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise UnsafeFileError(path, f"lies in {name}/, a symbolic link to a folder, which is never "
                                        f"followed; {_COPY_ADVICE}") from None
        raise


def _open_fd(path: str | os.PathLike, root: str | os.PathLike) -> int:
    *dirs, name = _parts_inside(path, root)
    dir_fd = os.open(root, _DIR_FLAGS)  # the folder itself was named by the caller: trusted, links and all
    try:
        for part in dirs:
            inner = _enter(dir_fd, part, path)
            os.close(dir_fd)
            dir_fd = inner
        before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        _refuse(path, before)  # a FIFO, device or link is never opened
        try:
            fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in _LINK_ERRNOS:  # replaced by a link after the check: O_NOFOLLOW refused it
                raise UnsafeFileError(path, f"became a symbolic link while being opened; {_COPY_ADVICE}") from None
            raise
    finally:
        os.close(dir_fd)
    try:
        after = os.fstat(fd)
        _refuse(path, after)
        if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            raise UnsafeFileError(path, "was replaced while being opened; leave the folder alone during the run "
                                        "and run again")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def open_regular_file(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> BinaryIO:
    """Open an input file for reading in binary mode, only if it is one plain file inside `root`.

    root: the input folder (default: the file's own folder). The folder itself may be a link;
    nothing below it may. Raises UnsafeFileError (an OSError; nothing was read) for a symbolic
    link, a hard link, a directory, a device, a FIFO, a socket, a path outside `root` or a file
    replaced while it was being opened; other OSErrors as `open` does.
    """
    root = os.path.dirname(os.path.abspath(path)) if root is None else root
    return os.fdopen(_open_fd(path, root), "rb")


def read_regular_file(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> bytes:
    """All bytes of an input file, opened with `open_regular_file`."""
    with open_regular_file(path, root=root) as fh:
        return fh.read()


def sha256_regular_file(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> str:
    """Hex sha256 of an input file, opened with `open_regular_file`."""
    with open_regular_file(path, root=root) as fh:
        return _sha256_stream(fh)


def write_bytes_atomic(path: str | os.PathLike, blob: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
