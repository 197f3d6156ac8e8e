"""What earlier nightly runs left up to date, so a night with nothing new skips their work.

State in artifacts/flows/nightly-state.json, written only after the step it describes succeeded;
deleting it makes the next run do every step (see flows/nightly_embedding.py's module doc for
what each part lets a run skip).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from features import inbox, versioning
from flows import embedding_steps, steps
from ground.atomic import atomic_path
from ground.config import Params
from ground.workspace import Workspace

STATE_FILE = "nightly-state.json"  # in artifacts/flows/: what the last runs left up to date
# the code and libraries the feature stage writes with (hashed: an edit makes the next run write again)
FEATURE_CODE = ("features/store/*.py", "features/feature_repo/*.py", "features/contracts/*.py", "features/*.py",
                "flows/embedding_steps.py", "flows/steps.py")
FEATURE_LIBRARIES = ("feast", "pandas", "pyarrow")


def state_path(ws: Workspace) -> Path:
    return steps.Layout(ws).inbox_state.parent / STATE_FILE


def read_state(ws: Workspace) -> dict[str, Any]:
    """What earlier runs left up to date (see the module doc); {} when unknown."""
    try:
        state = json.loads(state_path(ws).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def update_state(ws: Workspace, **parts: Any) -> None:
    state = {**read_state(ws), **parts}
    with atomic_path(state_path(ws)) as tmp:
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True, default=str), encoding="utf-8")


def data_tree(data_dir: Path) -> str:
    """sha256 of the versioned folders' listing (path, size, mtime, inode of every entry): a file
    added, removed or replaced by hand since the last versioning changes it."""
    h = hashlib.sha256()
    for out in steps.DATA_OUTS:
        for dirpath, dirnames, filenames in os.walk(data_dir / out):
            dirnames.sort()
            for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
                path = Path(dirpath) / name
                st = path.lstat()
                h.update(f"{path.relative_to(data_dir).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\n"
                         .encode())
    return h.hexdigest()


def data_unchanged(ws: Workspace, batch: inbox.InboxBatch, remote: dict[str, Any]) -> str | None:
    """The data repository's commit when this run has nothing to version: nothing new in the
    inbox, and the repository at the commit this flow last versioned and pushed to this remote,
    its folders as they were then."""
    if len(batch) or not (ws.data_dir / ".git").is_dir():
        return None
    rev = versioning.data_revision(ws.data_dir)
    if rev is None or read_state(ws).get("data") != {"rev": rev, "remote": remote, "tree": data_tree(ws.data_dir)}:
        return None
    return rev


def sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def feature_inputs(ws: Workspace, params: Params, code_version: str, valid_clinical: list[Path],
                    valid_latents: list[Path]) -> str:
    """sha256 of what the feature stage reads: the valid files (named by their content), the
    alignment manifest, params, and the code and library versions it writes with."""
    blob = {"params": params.params_hash, "code": code_version,
            "sources": embedding_steps.code_digest(FEATURE_CODE, FEATURE_LIBRARIES),
            "clinical": [str(p) for p in valid_clinical], "latents": [str(p) for p in valid_latents],
            "manifest": sha256_file(steps.Layout(ws).aligned / "manifest.csv")}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()


def store_stamp(ws: Workspace, params: Params) -> dict[str, Any]:
    """The feature store as its files show it: which files the repository holds, its rendered
    configuration, the materialisation watermarks and (local profile) the offline part files; a
    teardown or a write changes it."""
    from features.feature_repo.schema import OFFLINE_DIR
    from features.store.retrieval import WATERMARKS

    repo = ws.feature_repo_dir
    stamp: dict[str, Any] = {
        "files": sorted(p.name for p in repo.iterdir()) if repo.is_dir() else None,
        "store_yaml": sha256_file(repo / "feature_store.yaml"),
        "watermarks": sha256_file(repo / WATERMARKS)}
    if params.profile == "local":
        stamp["offline"] = sorted(p.relative_to(repo).as_posix() for p in (repo / OFFLINE_DIR).glob("*/part-*.parquet"))
    return stamp


def unmaterialised_rows(ws: Workspace, params: Params) -> int:
    """Offline rows written after their view's watermark: what a later materialisation still owes
    the online store (rows whose event time was still ahead when materialise ran)."""
    import datetime as dt

    from features.feature_repo.schema import CLINICAL_VIEW, LATENT_VIEW
    from features.store.offline import rows_written_since
    from features.store.retrieval import WATERMARKS

    path = ws.feature_repo_dir / WATERMARKS
    marks = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    owed = 0
    for view in (LATENT_VIEW, CLINICAL_VIEW):
        since = dt.datetime.fromisoformat(marks[view]) if view in marks else None
        owed += rows_written_since(ws.feature_repo_dir, params, view, since)[0]
    return owed
