"""One writer at a time per data repository.

Two nightly runs touching the same data repository would interleave `dvc add`, git commits
and feature writes. The lock is an OS file lock (flock), so a run that dies, even with
SIGKILL, releases it with its process; no stale lock needs breaking by hand. Beside the
lock a small JSON file says who holds it, so the one that waits can say whom it waited for.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from ground.errors import FacesurvError

LOCK_NAME = ".facesurv-run.lock"
HOLDER_NAME = ".facesurv-run.holder.json"


class LockTimeout(FacesurvError):
    """Another run held the data repository's lock for longer than we were told to wait."""

    exit_code = 4


def _holder(root: Path) -> str:
    try:
        info = json.loads((root / HOLDER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "another run"
    return (f"{info.get('what', 'another run')} (pid {info.get('pid')} on {info.get('host')}, "
            f"since {info.get('since')})")


@contextlib.contextmanager
def data_repo_lock(root: Path | str, *, timeout_s: float, what: str = "a facesurv run") -> Iterator[Path]:
    """Hold the run lock of the data repository at `root` for the duration of the block.

    Args:
        root: the data repository directory (created if missing).
        timeout_s: seconds to wait for another holder; 0 means try once.
        what: a short description of this run, shown to whoever waits for it.

    Raises:
        LockTimeout: the lock stayed held for `timeout_s`; the message names the holder.
    """
    from filelock import FileLock
    from filelock import Timeout as _FileLockTimeout

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(root / LOCK_NAME))
    try:
        lock.acquire(timeout=max(timeout_s, 0.0), poll_interval=0.2)
    except _FileLockTimeout:
        raise LockTimeout(
            f"{root}: the data repository is busy: {_holder(root)} holds its lock; waited {timeout_s:g} s "
            "(flows.lock_timeout_s). Let that run finish, or raise flows.lock_timeout_s to wait longer."
        ) from None
    try:
        info = {"what": what, "pid": os.getpid(), "host": socket.gethostname(),
                "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        (root / HOLDER_NAME).write_text(json.dumps(info), encoding="utf-8")
        yield root
    finally:
        with contextlib.suppress(OSError):
            (root / HOLDER_NAME).unlink()
        lock.release()
