"""Bearer-token authentication. Only sha256 digests of tokens are stored or kept in memory.

Tokens are random 256-bit strings, so a plain digest (no slow KDF) is enough: there is
nothing to brute-force. Sources: a tokens file in the workspace (`facesurv serve token
NAME` adds one) and, for local use, the FACESURV_API_TOKENS environment variable
(comma-separated plaintext tokens, hashed as soon as they are read).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ground.errors import ConfigError

TOKEN_ENV = "FACESURV_API_TOKENS"
MIN_TOKEN_CHARS = 16
SCOPES = ("score", "read")
# A token made before scopes existed keeps what it could do then: score and read any score.
LEGACY_SCOPES = frozenset(SCOPES)


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who called: the token's name (never the token) and what it may do.

    score: POST scores (and read back the scores it made); read: GET any score and /v1/status.
    """

    name: str
    scopes: frozenset[str] = LEGACY_SCOPES

    def may(self, scope: str) -> bool:
        return scope in self.scopes


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return "fsv_" + secrets.token_urlsafe(32)


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    given = frozenset(scopes)
    unknown = sorted(given - set(SCOPES))
    if unknown or not given:
        raise ConfigError(f"token scope {', '.join(unknown) or '(none)'} is not known; "
                          f"give one or more of {', '.join(SCOPES)} (--scope score --scope read)")
    return given


class TokenStore:
    """digest -> Principal. `authenticate` compares digests in constant time."""

    def __init__(self, digests: dict[str, str] | None = None) -> None:
        self._who = {d: Principal(n) for d, n in (digests or {}).items()}

    def __len__(self) -> int:
        return len(self._who)

    def names(self) -> list[str]:
        return sorted(p.name for p in self._who.values())

    def add(self, token: str, name: str, scopes: Iterable[str] = SCOPES) -> None:
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"API token {name!r} is shorter than {MIN_TOKEN_CHARS} characters; "
                              "use `facesurv serve token NAME` to make a random one")
        self._who[hash_token(token)] = Principal(name, check_scopes(scopes))

    def authenticate(self, token: str) -> Principal | None:
        digest = hash_token(token)
        found = None
        for known, who in self._who.items():  # no early exit: the time does not depend on which token
            if hmac.compare_digest(known, digest):
                found = who
        return found

    @classmethod
    def load(cls, *, file: Path | None = None, env: str | None = None) -> TokenStore:
        """Tokens from a tokens file (digests) and an env-var value (plaintext, comma-separated;
        local use, every scope)."""
        store = cls()
        for entry in (read_token_entries(file) if file is not None else []):
            if not entry.get("revoked_at"):
                store._who[entry["sha256"]] = Principal(entry["name"], _entry_scopes(entry))
        for i, token in enumerate(t.strip() for t in (env or "").split(",")):
            if token:
                store.add(token, f"env-{i + 1}")
        return store


def _entry_scopes(entry: dict[str, Any]) -> frozenset[str]:
    return check_scopes(entry["scopes"]) if "scopes" in entry else LEGACY_SCOPES


def read_token_entries(path: Path) -> list[dict[str, Any]]:
    """The tokens file's entries as written ({name, sha256, created_at, scopes, revoked_at}), [] if absent."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = [dict(e) for e in data["tokens"]]
        for e in entries:
            if not (isinstance(e["name"], str) and isinstance(e["sha256"], str)):
                raise TypeError
            _entry_scopes(e)
        return entries
    except (ValueError, KeyError, TypeError, ConfigError):
        raise ConfigError(f"{path}: not a facesurv tokens file (expected {{\"tokens\": [{{name, sha256, scopes}}]}}); "
                          "delete it and add tokens again with `facesurv serve token NAME`") from None


def read_token_file(path: Path) -> dict[str, str]:
    """digest -> name of the tokens that are not revoked."""
    return {e["sha256"]: e["name"] for e in read_token_entries(path) if not e.get("revoked_at")}


def _write_entries(path: Path, entries: list[dict[str, Any]]) -> None:
    from ground.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"tokens": entries}, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o600)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def add_token_to_file(path: Path, name: str, scopes: Iterable[str] = ("score",)) -> str:
    """Create a token with `scopes`, store its digest under `name` (0600 file), return the plaintext once.

    Earlier entries are kept as written (their created_at, scopes and revocations included).
    """
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"token name {name!r} must be letters, digits, '-' and '_'")
    given = sorted(check_scopes(scopes), key=SCOPES.index)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = read_token_entries(path)
    if any(e["name"] == name for e in entries):
        raise ConfigError(f"{path}: a token named {name!r} exists (revoked names stay taken, for the audit "
                          "trail); pick another name")
    token = new_token()
    entries.append({"name": name, "sha256": hash_token(token), "created_at": _now(), "scopes": given})
    _write_entries(path, entries)
    return token


def revoke_token_in_file(path: Path, name: str) -> dict[str, Any]:
    """Mark the token `name` revoked (kept in the file with revoked_at, so the ledger's
    requested_by names stay explained); a running server stops accepting it on restart."""
    path = Path(path)
    entries = read_token_entries(path)
    match = [e for e in entries if e["name"] == name]
    if not match:
        known = ", ".join(e["name"] for e in entries) or "none"
        raise ConfigError(f"{path}: no token named {name!r} (tokens: {known})")
    if match[0].get("revoked_at"):
        raise ConfigError(f"token {name!r} was already revoked at {match[0]['revoked_at']}")
    match[0]["revoked_at"] = _now()
    _write_entries(path, entries)
    return match[0]
