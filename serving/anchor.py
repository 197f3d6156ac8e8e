"""The ledger's outside anchor: an Ed25519 key and a file of signed checkpoints.

A hash chain alone cannot tell its own history from a rewrite by someone who recomputes every
hash, so two things live outside the database:

- the ledger key (`serving.anchor_key`, default <workspace>/serving/anchor.key, 0600; the public
  key beside it as anchor.key.pub). The writer signs every record's hash with it, so a record
  inserted, renumbered or rewritten by someone with database access but not the key has no valid
  signature;
- the anchors file (`serving.anchor_file`, default <workspace>/serving/anchors.jsonl, 0600,
  append-only): signed (seq, hash) checkpoints taken every `serving.anchor_every` appends, at
  shutdown and by `facesurv audit anchor`. Deleting records from the end of the chain leaves
  every remaining signature valid; an anchor past the new end is what shows it.

Verifying needs only the public key, so an auditor can check a copy of the ledger and of the
anchors file without the private key.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ground.errors import ConfigError
from serving.canonical import canonical_json

_ENTRY_DOMAIN = b"facesurv-ledger-record/v1\n"  # keeps a record signature from passing as an anchor's
ANCHOR_KIND = "facesurv-ledger-anchor/v1"
PRIVATE_MODE = 0o600


def create_private_file(path: Path) -> None:
    """Create path 0600 if it does not exist (whatever the umask); tighten an existing one we own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_MODE))
    except FileExistsError:
        tighten(path)


def tighten(path: Path) -> None:
    """chmod 600 a file of ours that others can read (ledgers written before files were 0600)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    if st.st_mode & 0o077 and st.st_uid == os.getuid():
        os.chmod(path, PRIVATE_MODE)


def entry_message(record_hash: str) -> bytes:
    return _ENTRY_DOMAIN + record_hash.encode("ascii")


class LedgerKey:
    """An Ed25519 key pair, or only its public half (verification only)."""

    def __init__(self, public: Any, private: Any = None) -> None:
        from cryptography.hazmat.primitives import serialization

        self._public, self._private = public, private
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]

    @property
    def can_sign(self) -> bool:
        return self._private is not None

    def public_only(self) -> LedgerKey:
        return LedgerKey(self._public)

    def sign(self, message: bytes) -> str:
        if self._private is None:
            raise ConfigError("this ledger key is public only; the private key is needed to sign")
        return self._private.sign(message).hex()

    def verify(self, message: bytes, signature: str | None) -> bool:
        from cryptography.exceptions import InvalidSignature

        if not signature:
            return False
        try:
            self._public.verify(bytes.fromhex(signature), message)
        except (InvalidSignature, ValueError):
            return False
        return True

    @staticmethod
    def public_path(private_path: Path) -> Path:
        return private_path.with_name(private_path.name + ".pub")

    @classmethod
    def load_public(cls, path: Path) -> LedgerKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not a readable Ed25519 public key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{path}: not an Ed25519 public key")
        return cls(key)

    @classmethod
    def load(cls, path: Path) -> LedgerKey:
        """The private key at path; refused when others can read it (as ssh does)."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"ledger key {path} is readable by others (mode {mode:04o}): chmod 600 {path}")
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(f"{path}: not a readable unencrypted Ed25519 private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"{path}: not an Ed25519 private key")
        return cls(key.public_key(), key)

    @classmethod
    def create(cls, path: Path) -> LedgerKey:
        """A new key pair: the private key 0600 (O_EXCL: never over an existing key), the public beside it."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        cls.public_path(path).write_bytes(pub)
        return cls(key.public_key(), key)


@dataclasses.dataclass(frozen=True)
class Anchor:
    """A signed statement: the ledger's record at `seq` had hash `hash` at `time`."""

    seq: int
    hash: str
    time: str
    reason: str
    ledger: str
    key_id: str
    sig: str = ""

    def payload(self) -> bytes:
        body = {"kind": ANCHOR_KIND, **dataclasses.asdict(self)}
        body.pop("sig")
        return canonical_json(body).encode("utf-8")

    def label(self) -> str:
        return f"anchor of {self.time} (seq {self.seq})"

    @classmethod
    def take(cls, key: LedgerKey, *, seq: int, hash: str, reason: str, ledger: str) -> Anchor:
        unsigned = cls(seq=seq, hash=hash, time=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                       reason=reason, ledger=ledger, key_id=key.key_id)
        return dataclasses.replace(unsigned, sig=key.sign(unsigned.payload()))

    def check_signature(self, key: LedgerKey) -> str | None:
        """None when the anchor is genuine under key, else the one-line problem."""
        if self.key_id != key.key_id:
            return (f"{self.label()} was signed by key {self.key_id}, not the configured key {key.key_id}: "
                    "pass that key's public key with --public-key")
        if not key.verify(self.payload(), self.sig):
            return f"{self.label()}: signature does not verify: the anchor was forged or edited"
        return None


def expected_hash(hash_: str) -> Anchor:
    """A bare head hash recorded elsewhere (the old --expect-head): must occur somewhere in the chain."""
    return Anchor(seq=0, hash=hash_, time="", reason="expected head", ledger="", key_id="")


class AnchorLog:
    """The append-only JSON-lines file of anchors (0600, O_APPEND, fsync per anchor)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, anchor: Anchor) -> None:
        create_private_file(self.path)
        line = (json.dumps(dataclasses.asdict(anchor), sort_keys=True) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line)  # one write with O_APPEND: whole lines even with several writers
            os.fsync(fd)
        finally:
            os.close(fd)

    def read(self) -> tuple[list[Anchor], list[str]]:
        """(anchors, problems): a line that is not an anchor is a problem, not a crash."""
        if not self.path.exists():
            return [], []
        return parse_anchor_lines(self.path.read_text(encoding="utf-8").splitlines(), where=str(self.path))


def parse_anchor_lines(lines: Iterable[str], *, where: str) -> tuple[list[Anchor], list[str]]:
    anchors, problems = [], []
    fields = {f.name for f in dataclasses.fields(Anchor)}
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            if set(obj) != fields:
                raise ValueError("fields")
            anchor = Anchor(**obj)
            if not isinstance(anchor.seq, int) or not isinstance(anchor.hash, str):
                raise ValueError("types")
        except (ValueError, TypeError):
            problems.append(f"{where} line {n}: not an anchor (edited or truncated)")
            continue
        anchors.append(anchor)
    return anchors, problems


@dataclasses.dataclass(frozen=True)
class AnchorSettings:
    """Where the key and the anchors live, and how often the server anchors."""

    key_path: Path
    anchor_file: Path
    every: int

    @property
    def public_key_path(self) -> Path:
        return LedgerKey.public_path(self.key_path)

    def signing_key(self) -> LedgerKey:
        """The private key, created on first use. A public key without its private key is
        refused: a new key would make every earlier signature fail."""
        if self.key_path.exists():
            key = LedgerKey.load(self.key_path)
            pub = self.public_key_path
            if pub.exists() and LedgerKey.load_public(pub).key_id != key.key_id:
                raise ConfigError(f"{pub} is not the public half of {self.key_path}: restore the matching pair")
            if not pub.exists():
                pub.write_bytes(_public_pem(key))
            return key
        if self.public_key_path.exists():
            raise ConfigError(f"ledger key {self.key_path} is missing but its public key {self.public_key_path} "
                              "exists: restore the private key from backup (a new key would not match "
                              "earlier signatures)")
        return LedgerKey.create(self.key_path)

    def public_key(self) -> LedgerKey | None:
        if self.public_key_path.exists():
            return LedgerKey.load_public(self.public_key_path)
        if self.key_path.exists():
            return LedgerKey.load(self.key_path).public_only()
        return None


def _public_pem(key: LedgerKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key._public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def anchor_settings(ws: Any, params: Any) -> AnchorSettings:
    """serving.anchor_key / anchor_file (relative: under the workspace; null: <workspace>/serving/...)."""
    s = params.serving

    def place(value: str | None, default: str) -> Path:
        p = Path(value).expanduser() if value else Path("serving") / default
        return p if p.is_absolute() else ws.root / p

    return AnchorSettings(key_path=place(s.anchor_key, "anchor.key"),
                          anchor_file=place(s.anchor_file, "anchors.jsonl"), every=s.anchor_every)
