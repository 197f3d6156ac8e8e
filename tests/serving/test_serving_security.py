"""Tokens, rate limit, pseudonyms and upload retention: the small security parts."""

from __future__ import annotations

import json
import os
import time

import pytest

from ground.errors import ConfigError
from serving.auth import TokenStore, add_token_to_file, hash_token, read_token_file
from serving.privacy import load_pseudonym_key, pseudonym, purge_uploads
from serving.ratelimit import RateLimiter


def test_token_file_stores_only_hashes(tmp_path):
    path = tmp_path / "serving" / "tokens.json"
    token = add_token_to_file(path, "ci-bot")
    text = path.read_text()
    assert token not in text and hash_token(token) in text
    assert os.stat(path).st_mode & 0o077 == 0
    store = TokenStore.load(file=path)
    assert store.authenticate(token).name == "ci-bot"
    assert store.authenticate(token + "x") is None
    with pytest.raises(ConfigError, match="a token named 'ci-bot' exists"):
        add_token_to_file(path, "ci-bot")
    with pytest.raises(ConfigError, match="must be letters, digits"):
        add_token_to_file(path, "bad name")


def test_token_env_and_minimum_length(tmp_path):
    store = TokenStore.load(env=" abcdefghijklmnop1 , abcdefghijklmnop2,")
    assert store.names() == ["env-1", "env-2"]
    assert store.authenticate("abcdefghijklmnop2").name == "env-2"
    with pytest.raises(ConfigError, match="shorter than 16 characters"):
        TokenStore.load(env="short")


def test_token_file_corrupt_says_how_to_fix(tmp_path):
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"nope": 1}))
    with pytest.raises(ConfigError, match="not a facesurv tokens file"):
        read_token_file(path)


def test_rate_limiter_refills_per_key():
    now = [0.0]
    lim = RateLimiter(60, clock=lambda: now[0])  # one per second, bursts of 60
    assert all(lim.acquire("a") == 0.0 for _ in range(60))
    assert lim.acquire("a") == pytest.approx(1.0)
    assert lim.acquire("b") == 0.0  # another token has its own bucket
    now[0] = 2.0
    assert lim.acquire("a") == 0.0 and lim.acquire("a") == 0.0 and lim.acquire("a") > 0
    with pytest.raises(ValueError, match="per_minute must be > 0"):
        RateLimiter(0)


def test_pseudonym_is_keyed_and_stable(tmp_path):
    k1 = load_pseudonym_key(tmp_path / "key")
    assert load_pseudonym_key(tmp_path / "key") == k1  # persisted
    assert os.stat(tmp_path / "key").st_mode & 0o077 == 0
    assert load_pseudonym_key(tmp_path / "key", env="from-env") == b"from-env"
    a = pseudonym("gbsg2-00001", k1)
    assert a == pseudonym("gbsg2-00001", k1) and a != pseudonym("gbsg2-00001", b"other")
    assert "gbsg2" not in a and a.startswith("pt_")


def test_purge_uploads_keeps_recent_files(tmp_path):
    old, new = tmp_path / "old.png", tmp_path / "new.png"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    t = time.time()
    os.utime(old, (t - 100, t - 100))
    assert purge_uploads(tmp_path, 50, now=t) == 1
    assert not old.exists() and new.exists()
    assert purge_uploads(tmp_path / "missing", 50) == 0
