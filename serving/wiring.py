"""Build the serving app from a workspace: the one place that opens stores and loads models.

`facesurv serve`, the demo and the load benchmark call `build_server`; tests build the
parts themselves and call `create_app` directly.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from facesurv.config import Params
from facesurv.errors import ConfigError
from facesurv.workspace import REPO_ROOT, Workspace

log = logging.getLogger("facesurv.serving")


@dataclasses.dataclass
class Server:
    app: Any
    ledger: Any
    ledger_location: str
    model: str
    generated_token: str | None   # set when the local profile had no token and made one for this run
    notes: list[str]


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


def tracking_uri(ws: Workspace, params: Params) -> str:
    """The MLflow store training registered the champion in (training.tracking decides)."""
    from training.tracking import tracking_uri_for

    return tracking_uri_for(params, ws.mlflow_dir)


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


def build_server(ws: Workspace, params: Params, *, env: dict[str, str] | None = None,
                 read_features: Any = "feast", photo_scoring: bool | None = None) -> Server:
    """Load the champion, open the online store and the ledger, and build the app (seconds, once).

    read_features: "feast" (the workspace's feature repo) or a FeatureReader to use instead.
    """
    from serving.anchor import anchor_settings
    from serving.app import create_app
    from serving.ledger import open_ledger
    from serving.privacy import PSEUDONYM_KEY_ENV, load_pseudonym_key
    from serving.scoring import LineageContext, Scorer, dvc_photo_version, git_sha, load_champion

    env = dict(os.environ if env is None else env)
    notes: list[str] = []
    tokens, generated = load_tokens(ws, params, env)
    model = load_champion(params.registry.model_name, tracking_uri=tracking_uri(ws, params))
    reader = read_features
    if read_features == "feast":
        if (ws.feature_repo_dir / "feature_store.yaml").is_file():
            from serving.online import FeastFeatureReader

            reader = FeastFeatureReader(ws.feature_repo_dir, params)
        else:
            reader = None
            notes.append(f"no feature repo at {ws.feature_repo_dir}: POST /v1/scores answers 503 "
                         "(run `facesurv features apply` and materialize)")
    embed = None
    want_photo = params.serving.photo_scoring if photo_scoring is None else photo_scoring
    if want_photo:
        from serving.photo import PhotoPipeline

        embed = PhotoPipeline(params, workspace=ws)
        if embed.generator_info.is_random_init:
            notes.append("photo scoring runs on a RANDOM-INIT stand-in generator: "
                         + embed.generator_info.description)
    ctx = LineageContext(code_version=git_sha(REPO_ROOT), params_hash=params.params_hash,
                         photo_data=dvc_photo_version(ws.data_dir))
    scorer = Scorer(model=model, read_features=reader, context=ctx, embed_photo=embed,
                    projection_settings=embed.settings() if embed else None)
    target = ledger_target(ws, params)
    # signs every record with the ledger key and anchors to a file outside the database
    ledger = open_ledger(target, schema=params.serving.ledger_schema, anchoring=anchor_settings(ws, params))
    key = load_pseudonym_key(ws.root / "serving" / "pseudonym.key", env=env.get(PSEUDONYM_KEY_ENV))
    app = create_app(scorer=scorer, ledger=ledger, tokens=tokens, settings=params.serving, pseudonym_key=key,
                     clinical_base=params.cohort.base, age_range=(params.contracts.age_min, params.contracts.age_max),
                     upload_dir=upload_dir(ws), max_batch=params.serving.max_batch)
    return Server(app=app, ledger=ledger, ledger_location=ledger.describe(),
                  model=f"{model.name} v{model.version} (@{model.alias}, run {model.run_id})",
                  generated_token=generated, notes=notes)
