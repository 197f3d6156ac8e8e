"""Artifact manifests: every file of a logged model is hashed at registration and checked at every load.

The artifact store (a directory, a bucket) is writable by more hands than the registry, and a
model's files decide what a server computes: an edited coefficient changes every score and the
models-from-code file is Python that MLflow runs. So training records the sha256 of each file
of the logged model (MLmodel, the copied code file, the saved estimator, the environment files)
as model-version tags in the registry, and loading goes:

    registry tags (manifest + its digest) -> download the version's files to a private temp dir
    -> hash every file: a missing, extra or changed file refuses the load, naming the file
    -> check MLmodel asks for a models-from-code pyfunc (no pickled wrapper, no code paths)
    -> only then mlflow.pyfunc.load_model on that verified directory

A version registered without a manifest (before this check existed) is refused: retrain it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from ground.errors import DataError

MANIFEST_FORMAT = "facesurv.artifact-manifest"
MANIFEST_VERSION = 1
MANIFEST_TAG = "facesurv.artifact_manifest"
DIGEST_TAG = "facesurv.artifact_manifest_sha256"
# MLflow 3 loads models-from-code through loaders.code_model; pyfunc.model is what older 3.x wrote
_CODE_LOADERS = ("mlflow.pyfunc.loaders.code_model", "mlflow.pyfunc.model")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
REGISTERED_MODEL_META = "registered_model_meta"
_RETRAIN = "retrain and promote a new version (facesurv train)"


class ArtifactIntegrityError(DataError):
    """A model's files differ from what was recorded at registration (or nothing was recorded)."""


@dataclasses.dataclass(frozen=True)
class VerifiedModel:
    """A pyfunc loaded only after all of its files matched the registry's manifest."""

    pyfunc: Any
    name: str
    version: str
    run_id: str | None
    manifest_sha256: str
    files: dict[str, str]  # artifact path (relative, posix) -> sha256


def sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def tree_manifest(root: Path, *, label: str = "model") -> dict[str, str]:
    """{relative posix path: sha256} of every regular file under root.

    A symlink or special file is an error, never followed: it could point the hash at one file
    and the loader at another.
    """
    root = Path(root)
    files: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise ArtifactIntegrityError(f"{label}: artifact {rel} is not a regular file (a link or device); "
                                             "refusing to load: remove it from the artifact store or " + _RETRAIN)
            if stat.S_ISREG(mode):
                files[rel] = sha256_file(path)
    return dict(sorted(files.items()))


def manifest_document(files: Mapping[str, str]) -> str:
    """Canonical JSON of a manifest (sorted keys, no spaces): its sha256 is the manifest digest."""
    return json.dumps({"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "files": dict(sorted(files.items()))},
                      sort_keys=True, separators=(",", ":"))


def document_digest(document: str) -> str:
    return hashlib.sha256(document.encode("utf-8")).hexdigest()


def manifest_tags(files: Mapping[str, str]) -> dict[str, str]:
    """Model-version tags recording a manifest: the document itself and its digest."""
    doc = manifest_document(files)
    return {MANIFEST_TAG: doc, DIGEST_TAG: document_digest(doc)}


def recorded_manifest(tags: Mapping[str, str], *, label: str) -> tuple[dict[str, str], str]:
    """(files, digest) recorded in a model version's tags; ArtifactIntegrityError when absent or malformed."""
    doc, digest = tags.get(MANIFEST_TAG), tags.get(DIGEST_TAG)
    if not doc or not digest:
        raise ArtifactIntegrityError(f"{label} has no recorded artifact manifest (registered before facesurv "
                                     "hashed model files); refusing to load it unverified: " + _RETRAIN)
    if document_digest(doc) != digest:
        raise ArtifactIntegrityError(f"{label}: the recorded artifact manifest does not match its digest tag "
                                     f"{DIGEST_TAG}; the registry entry was edited: " + _RETRAIN)
    try:
        obj = json.loads(doc)
    except (ValueError, RecursionError):
        obj = None
    files = obj.get("files") if isinstance(obj, dict) else None
    if (not isinstance(obj, dict) or obj.get("format") != MANIFEST_FORMAT or obj.get("version") != MANIFEST_VERSION
            or not isinstance(files, dict) or not files
            or not all(isinstance(k, str) and _safe_relpath(k) and isinstance(v, str) and _SHA256.match(v)
                       for k, v in files.items())):
        raise ArtifactIntegrityError(f"{label}: the recorded artifact manifest is malformed; " + _RETRAIN)
    return dict(files), digest


def _safe_relpath(p: str) -> bool:
    pp = PurePosixPath(p)
    return bool(p) and "\\" not in p and not pp.is_absolute() and ".." not in pp.parts and pp.as_posix() == p


def verify_tree(root: Path, expected: Mapping[str, str], *, label: str) -> None:
    """Raise ArtifactIntegrityError naming the first changed, missing or extra file under root."""
    found = tree_manifest(root, label=label)
    changed = sorted(p for p in set(found) & set(expected) if found[p] != expected[p])
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    others = len(changed) + len(missing) + len(extra) - 1
    more = f" ({others} more file(s) differ)" if others > 0 else ""
    fix = "restore the artifact store from a trusted copy or " + _RETRAIN
    if changed:
        p = changed[0]
        raise ArtifactIntegrityError(f"{label}: artifact {p} sha256 mismatch (recorded {expected[p][:12]}…, found "
                                     f"{found[p][:12]}…){more}; refusing to load: {fix}")
    if missing:
        raise ArtifactIntegrityError(f"{label}: artifact {missing[0]} is missing{more}; refusing to load: {fix}")
    if extra:
        raise ArtifactIntegrityError(f"{label}: artifact {extra[0]} was not recorded at registration (an extra file)"
                                     f"{more}; refusing to load: {fix}")


def check_models_from_code(root: Path, *, label: str) -> None:
    """MLmodel must describe a models-from-code pyfunc: a pickled wrapper or extra code paths would run
    code the manifest cannot vouch for as this project's (defence in depth: MLmodel is hashed too)."""
    import yaml

    try:
        meta = yaml.safe_load((Path(root) / "MLmodel").read_text(encoding="utf-8"))
        conf = meta["flavors"]["python_function"]
    except (OSError, yaml.YAMLError, TypeError, KeyError, UnicodeDecodeError):
        raise ArtifactIntegrityError(f"{label}: MLmodel is missing or has no python_function flavor; "
                                     + _RETRAIN) from None
    artifacts = (conf.get("artifacts") or {}) if isinstance(conf, dict) else None
    paths = ([a.get("path") if isinstance(a, dict) else None for a in artifacts.values()]
             if isinstance(artifacts, dict) else [None])
    if (not isinstance(conf, dict) or conf.get("loader_module") not in _CODE_LOADERS
            or not str(conf.get("model_code_path") or "").endswith(".py")
            or "python_model" in conf or conf.get("code")
            or not all(isinstance(p, str) and _safe_relpath(p) for p in paths)):
        raise ArtifactIntegrityError(f"{label}: MLmodel is not a models-from-code pyfunc with artifacts inside "
                                     "the model (a pickled wrapper, extra code paths or outside paths); "
                                     "refusing to load: " + _RETRAIN)


def _drop_download_marker(root: Path) -> None:
    """Delete MLflow's `registered_model_meta` from our private copy.

    Any plain `mlflow.pyfunc.load_model("models:/name/1")` on a local store writes this file
    (model name and version, YAML) into the store's model directory itself; MLflow never reads
    it back. Refusing it would make a model unservable after someone merely inspected it, and
    removing it from the verified copy means nothing can read whatever it holds.
    """
    marker = root / REGISTERED_MODEL_META
    if marker.is_file() and not marker.is_symlink():
        marker.unlink()


def load_verified_pyfunc(client: Any, *, name: str, version: str, tracking_uri: str | None = None
                         ) -> VerifiedModel:
    """Download `name` version `version`, verify every file against the registry's manifest, then load it.

    Nothing from the artifact store is imported or executed before it matched its recorded hash.
    """
    import mlflow

    mv = client.get_model_version(name, str(version))
    label = f"model {name} v{mv.version}"
    files, digest = recorded_manifest(dict(mv.tags or {}), label=label)
    uri = client.get_model_version_download_uri(name, str(mv.version))
    # TemporaryDirectory is private (0700): the verified files cannot be swapped before MLflow reads them.
    # ignore_cleanup_errors: when one of MLflow's download threads fails, the others may still be
    # writing while the directory is removed; the integrity error must reach the caller, not an OSError.
    with tempfile.TemporaryDirectory(prefix="facesurv-model-", ignore_cleanup_errors=True) as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp, tracking_uri=tracking_uri)
        except Exception as exc:  # noqa: BLE001 - an unreachable or emptied store: one line, not a traceback
            raise ArtifactIntegrityError(f"{label}: could not download its artifacts from {uri} "
                                         f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}); "
                                         "check the artifact store is reachable") from None
        _drop_download_marker(Path(local))
        verify_tree(Path(local), files, label=label)
        check_models_from_code(Path(local), label=label)
        pyfunc = mlflow.pyfunc.load_model(local)
    return VerifiedModel(pyfunc, name, str(mv.version), mv.run_id, digest, files)


def logged_model_manifest(model_id: str, *, tracking_uri: str | None = None,
                          written: Mapping[str, Path] | None = None) -> dict[str, str]:
    """The manifest of a just-logged model, hashed from what the artifact store now holds.

    written: {artifact path: local file or folder it was logged from}; each must match file for
    file, so a manifest never vouches for bytes other than the ones training produced.
    """
    import mlflow

    location = mlflow.MlflowClient(tracking_uri=tracking_uri).get_logged_model(model_id).artifact_location
    with tempfile.TemporaryDirectory(prefix="facesurv-manifest-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=tmp, tracking_uri=tracking_uri)
        _drop_download_marker(Path(local))
        files = tree_manifest(Path(local), label=f"logged model {model_id}")
    for prefix, written_path in (written or {}).items():
        mine = Path(written_path)
        ours = ({prefix: sha256_file(mine)} if mine.is_file()
                else {f"{prefix}/{k}": v for k, v in tree_manifest(mine).items()})
        theirs = {k: v for k, v in files.items() if k == prefix or k.startswith(prefix + "/")}
        if ours != theirs:
            diff = sorted(set(ours.items()) ^ set(theirs.items()))
            raise ArtifactIntegrityError(f"logged model {model_id}: the artifact store holds {prefix} files that "
                                         f"differ from the ones written (first: {diff[0][0]}); check the artifact "
                                         "store and train again")
    return files
