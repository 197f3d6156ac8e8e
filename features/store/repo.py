"""Render feature_store.yaml for a profile, open the store, apply the definitions."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from features.store.offline import drop_offline, ensure_offline, offline_locations
from ground.atomic import atomic_path
from ground.config import Params
from ground.errors import ConfigError

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "feature_repo"


def _store_yaml_text(repo_dir: Path, params: Params) -> str:
    template = TEMPLATE_DIR / f"feature_store.{params.profile}.yaml.tmpl"
    if not template.is_file():
        raise ConfigError(f"profile {params.profile!r} has no feature_store template at {template}; use local or scale")
    s = params.features.scale
    return string.Template(template.read_text(encoding="utf-8")).substitute(
        project=params.features.project,
        registry_path=str(repo_dir / "registry.db"),
        online_path=str(repo_dir / "online.db"),
        pg_host=s.postgres_host, pg_port=s.postgres_port, pg_db=s.postgres_db, pg_user=s.postgres_user,
        redis_connection=s.redis_connection,
    )


def render_store_yaml(repo_dir: Path | str, params: Params) -> Path:
    """Write repo_dir/feature_store.yaml from the profile's template; returns its path."""
    repo_dir = Path(repo_dir).resolve()
    text = _store_yaml_text(repo_dir, params)
    target = repo_dir / "feature_store.yaml"
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def open_store(repo_dir: Path | str, params: Params) -> Any:
    """A FeatureStore over repo_dir (renders feature_store.yaml first if it is missing or stale)."""
    repo_dir = Path(repo_dir).resolve()
    target = repo_dir / "feature_store.yaml"
    # a repo rendered by an older facesurv (the local profile's file offline store) follows the template
    if not target.is_file() or target.read_text(encoding="utf-8") != _store_yaml_text(repo_dir, params):
        render_store_yaml(repo_dir, params)
    from feast import FeatureStore

    return FeatureStore(repo_path=str(repo_dir))


def apply_repo(repo_dir: Path | str, params: Params) -> Any:
    """Render the profile's feature_store.yaml and apply entity, views and FeatureService.

    Idempotent: applying twice changes nothing. Returns the FeatureStore.
    """
    from features.feature_repo.definitions import feature_objects

    repo_dir = Path(repo_dir).resolve()
    repo_dir.mkdir(parents=True, exist_ok=True)
    render_store_yaml(repo_dir, params)
    locations = offline_locations(repo_dir, params)
    ensure_offline(repo_dir, params)
    store = open_store(repo_dir, params)
    store.apply(feature_objects(base=params.cohort.base, profile=params.profile, locations=locations,
                                ttl_days=params.features.ttl_days, service_name=params.features.feature_service))
    return store


def teardown_repo(repo_dir: Path | str, params: Params) -> None:
    """Remove the project's online data, registry entries and (scale) offline tables."""
    # FeatureStore.teardown() deletes every project of the registry; a shared SQL registry
    # must only lose this one.
    from feast.errors import FeastObjectNotFoundException, ProjectNotFoundException


    gone = (FeastObjectNotFoundException, ProjectNotFoundException)
    store = open_store(repo_dir, params)
    try:
        views, entities = store.list_feature_views(), store.list_entities()
        if views or entities:
            store._get_provider().teardown_infra(store.project, views, entities)
        # Opening a SQL registry records the project's metadata again; registering the
        # project before deleting it removes that record too, so a second teardown
        # leaves nothing behind either.
        try:
            store.registry.get_project(store.project, allow_cache=False)
        except gone:
            from feast.project import Project

            store.registry.apply_project(Project(name=store.project))
        store.registry.delete_project(store.project)
    finally:
        drop_offline(repo_dir, params)
