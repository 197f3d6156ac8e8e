"""Patient-id pseudonyms for logs, and the retention of uploaded photos."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

PSEUDONYM_KEY_ENV = "FACESURV_PSEUDONYM_KEY"


def pseudonym(patient_id: str, key: bytes) -> str:
    """A keyed hash: stable for one key (logs can be correlated), not reversible without it."""
    return "pt_" + hmac.new(key, patient_id.encode("utf-8"), hashlib.sha256).hexdigest()[:16]


def load_pseudonym_key(key_file: Path, *, env: str | None = None) -> bytes:
    """The key from $FACESURV_PSEUDONYM_KEY, else from key_file (created 0600 on first use)."""
    if env:
        return env.encode("utf-8")
    key_file = Path(key_file)
    if key_file.exists():
        return key_file.read_bytes().strip()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32).encode()
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


def purge_uploads(upload_dir: Path, retention_s: float, *, now: float | None = None) -> int:
    """Delete uploaded photos older than retention_s; returns how many went."""
    upload_dir = Path(upload_dir)
    if not upload_dir.is_dir():
        return 0
    cutoff = (time.time() if now is None else now) - retention_s
    removed = 0
    for f in upload_dir.iterdir():
        try:
            if f.is_file() and f.stat().st_mtime <= cutoff:
                f.unlink()
                removed += 1
        except FileNotFoundError:  # another worker purged it first
            continue
    return removed
