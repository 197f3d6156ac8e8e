"""Write files and directories so that a crash leaves either the old state or the new one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: Path | str, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `target`; it replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(target: Path | str) -> Iterator[Path]:
    """Yield a temporary directory that becomes `target` (replacing it) only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def ensure_writable_dir(path: Path | str) -> Path:
    """Create `path` if needed and check it can be written; raise a one-line error if not."""
    from ground.errors import FacesurvError

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FacesurvError(f"{path}: cannot create output directory: {exc.strerror or exc}") from None
    if not path.is_dir():
        raise FacesurvError(f"{path}: exists and is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=path)
    except OSError as exc:
        raise FacesurvError(f"{path}: output directory is not writable: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)
    return path
