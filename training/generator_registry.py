"""The generator registry: trained StyleGAN2 generators as versions of an MLflow registered model.

A version's source is the `generator/` folder a training run logged (generator.safetensors and
config.json, the project's format: tensors and JSON, nothing that runs code). Its tags say what
it is: sha256 of the weights, the photos' DVC revision, the training settings, the parent
checkpoint, kimg and the final KID. New versions are aliased `challenger`; `promote_generator`
moves `champion`, as for the survival models. A workspace uses a version by naming it in
params.yaml (`generator.checkpoint: models:/facesurv-generator@champion`, or `.../3` for a fixed
one): `resolve_generator` downloads it once into the workspace and checks its sha256, so a
tampered or truncated copy is refused rather than embedded with.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ground.errors import ConfigError, DataError
from training.registry import CHAMPION, alias_version, register_version

ARTIFACT_PATH = "generator"
WEIGHTS_FILE = "generator.safetensors"
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>\d+))$")


@dataclass(frozen=True)
class RegisteredGenerator:
    """A generator version on disk. label: "NAME vN", what lineage records."""

    name: str
    version: str
    path: Path
    sha256: str
    tags: dict[str, str]

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"


def is_registry_uri(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("models:/")


def parse_uri(uri: str) -> tuple[str, str | None, str | None]:
    """models:/NAME@ALIAS or models:/NAME/VERSION -> (name, alias, version)."""
    m = _URI.match(uri)
    if m is None:
        raise ConfigError(f"generator.checkpoint {uri!r}: a registry generator is models:/NAME@ALIAS "
                          f"(e.g. models:/facesurv-generator@champion) or models:/NAME/VERSION")
    return m["name"], m["alias"], m["version"]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def register_generator(client: Any, *, name: str, run_id: str, sha256: str, tags: Mapping[str, Any],
                       description: str = "") -> str:
    """Register the `generator/` artifacts of `run_id` as a new version of `name`, aliased challenger.

    tags: lineage (photos_dvc_rev, parent, training_config, kimg, kid, ...); sha256 is required and
    checked again on every download."""
    if not re.fullmatch(r"[0-9a-f]{64}", sha256 or ""):
        raise ValueError(f"sha256 must be the 64 hex digits of {WEIGHTS_FILE}, got {sha256!r}")
    run = client.get_run(run_id)
    source = f"{run.info.artifact_uri.rstrip('/')}/{ARTIFACT_PATH}"
    all_tags = {**{k: v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
                   for k, v in tags.items()}, "sha256": sha256, "facesurv.kind": "generator"}
    return register_version(client, name=name, model_uri=source, run_id=run_id, tags=all_tags,
                            description=description or "StyleGAN2 generators trained by facesurv (ADA)")


def generator_versions(client: Any, name: str) -> list[dict[str, Any]]:
    """Every version of `name`, newest first: version, aliases, sha256, kimg, kid, parent, run_id."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name = '{name}'"):
        t = dict(mv.tags)
        rows.append({"version": str(mv.version), "aliases": sorted(aliases.get(str(mv.version), [])),
                     "sha256": t.get("sha256", ""), "kimg": t.get("kimg", ""), "kid": t.get("kid", ""),
                     "photos": t.get("photos", ""),
                     "photos_dvc_rev": t.get("photos_dvc_rev", ""), "parent": t.get("parent", ""), "run_id": mv.run_id or ""})
    return sorted(rows, key=lambda r: int(r["version"]), reverse=True)


def promote_generator(client: Any, *, name: str, version: str, alias: str = CHAMPION) -> str | None:
    """Point `alias` at `version`; returns the version it pointed at before (None: none)."""
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException:
        known = ", ".join(r["version"] for r in generator_versions(client, name)) or "none"
        raise DataError(f"{name} has no version {version} (versions: {known}); train one with "
                        f"`facesurv generator train`") from None
    if dict(mv.tags).get("facesurv.kind") != "generator":
        raise DataError(f"{name} version {version} is not a facesurv generator (no facesurv.kind=generator tag)")
    before = alias_version(client, name, alias)
    client.set_registered_model_alias(name, alias, str(version))
    return None if before is None else str(before.version)


def resolve_generator(client: Any, uri: str, *, cache_dir: Path) -> RegisteredGenerator:
    """Download (once) and verify the version `uri` names into cache_dir/NAME/vVERSION/.

    Raises DataError when the alias or version does not exist, and when the downloaded weights'
    sha256 differs from the one registered (the cached copy is then removed)."""
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_uri(uri)
    try:
        mv = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, version)
    except MlflowException:
        what = f"alias @{alias}" if alias else f"version {version}"
        raise DataError(f"generator.checkpoint {uri}: the registry has no {what} of {name!r}; train one with "
                        f"`facesurv generator train` and promote it with `facesurv generator promote VERSION`") from None
    tags = dict(mv.tags)
    expected = tags.get("sha256", "")
    target = Path(cache_dir) / name / f"v{mv.version}"
    weights = target / WEIGHTS_FILE
    if not weights.is_file():
        _download(client, mv, target)
    actual = _sha256(weights)
    if actual != expected:
        shutil.rmtree(target, ignore_errors=True)
        raise DataError(f"generator {name} v{mv.version}: the weights' sha256 {actual[:12]} differs from the registered "
                        f"{expected[:12] or '(none)'}; the stored artifact was altered, refusing to use it")
    return RegisteredGenerator(name, str(mv.version), target, actual, tags)


def _download(client: Any, mv: Any, target: Path) -> None:
    """The version's artifacts into `target`, whole or not at all."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=target.parent) as tmp:
        local = Path(client.download_artifacts(mv.run_id, ARTIFACT_PATH, tmp))
        if not (local / WEIGHTS_FILE).is_file():
            raise DataError(f"generator {mv.name} v{mv.version}: its run {mv.run_id} holds no "
                            f"{ARTIFACT_PATH}/{WEIGHTS_FILE}")
        shutil.rmtree(target, ignore_errors=True)
        local.rename(target)
