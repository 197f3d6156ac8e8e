"""Where the server's stores live in a workspace, and its API tokens (facesurv.components
builds the server from them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ground.config import Params
from ground.errors import ConfigError
from ground.workspace import Workspace


def tokens_path(ws: Workspace) -> Path:
    return ws.root / "serving" / "tokens.json"


def upload_dir(ws: Workspace) -> Path:
    return ws.root / "serving" / "uploads"


def ledger_target(ws: Workspace, params: Params) -> str:
    """Where the ledger lives: serving.ledger_url, else SQLite in the workspace (local) or the
    features.scale PostgreSQL (scale)."""
    s = params.serving
    if s.ledger_url:
        return s.ledger_url
    if params.profile == "scale":
        pg = params.features.scale
        return f"postgresql://{pg.postgres_user}@{pg.postgres_host}:{pg.postgres_port}/{pg.postgres_db}"
    return str(ws.ledger_path)


def load_tokens(ws: Workspace, params: Params, env: dict[str, str]) -> tuple[Any, str | None]:
    """The token store; in the local profile with no token at all, one generated for this run."""
    from serving.auth import TOKEN_ENV, TokenStore, new_token

    store = TokenStore.load(file=tokens_path(ws), env=env.get(TOKEN_ENV))
    if len(store):
        return store, None
    if params.profile == "scale":
        raise ConfigError(f"no API tokens: the scale profile has no default token; add one with "
                          f"`facesurv serve token NAME` or set {TOKEN_ENV}")
    token = new_token()
    store.add(token, "generated")
    return store, token
