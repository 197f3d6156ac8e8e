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
from pathlib import Path

from facesurv.errors import ConfigError

TOKEN_ENV = "FACESURV_API_TOKENS"
MIN_TOKEN_CHARS = 16


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who called: the token's name (never the token)."""

    name: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return "fsv_" + secrets.token_urlsafe(32)


class TokenStore:
    """digest -> name. `authenticate` compares digests in constant time."""

    def __init__(self, digests: dict[str, str] | None = None) -> None:
        self._digests = dict(digests or {})

    def __len__(self) -> int:
        return len(self._digests)

    def names(self) -> list[str]:
        return sorted(self._digests.values())

    def add(self, token: str, name: str) -> None:
        if len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"API token {name!r} is shorter than {MIN_TOKEN_CHARS} characters; "
                              "use `facesurv serve token NAME` to make a random one")
        self._digests[hash_token(token)] = name

    def authenticate(self, token: str) -> Principal | None:
        digest = hash_token(token)
        for known, name in self._digests.items():
            if hmac.compare_digest(known, digest):
                return Principal(name)
        return None

    @classmethod
    def load(cls, *, file: Path | None = None, env: str | None = None) -> TokenStore:
        """Tokens from a tokens file (digests) and an env-var value (plaintext, comma-separated)."""
        store = cls(read_token_file(file) if file is not None else {})
        for i, token in enumerate(t.strip() for t in (env or "").split(",")):
            if token:
                store.add(token, f"env-{i + 1}")
        return store


def read_token_file(path: Path) -> dict[str, str]:
    path = Path(path)
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {e["sha256"]: e["name"] for e in data["tokens"]}
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path}: not a facesurv tokens file (expected {{\"tokens\": [{{name, sha256}}]}}); "
                          "delete it and add tokens again with `facesurv serve token NAME`") from None


def add_token_to_file(path: Path, name: str) -> str:
    """Create a token, store its digest under `name` (0600 file), return the plaintext once."""
    from facesurv.atomic import atomic_path

    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"token name {name!r} must be letters, digits, '-' and '_'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    entries = [{"name": n, "sha256": d} for d, n in read_token_file(path).items()]
    if any(e["name"] == name for e in entries):
        raise ConfigError(f"{path}: a token named {name!r} exists; pick another name")
    token = new_token()
    entries.append({"name": name, "sha256": hash_token(token),
                    "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"tokens": entries}, indent=2) + "\n", encoding="utf-8")
        os.chmod(tmp, 0o600)
    return token
