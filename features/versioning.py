"""The data repository: photos and clinical records versioned with git + DVC.

A workspace keeps its inputs in `<workspace>/data`, its own git repository with DVC
initialised in it (separate from any code repository). `photos/` and `clinical/` are
DVC-tracked directories: DVC stores the content in its cache and the remote, git keeps
the small `.dvc` pointer files, so each commit of the data repository names one exact set
of inputs. Lineage records the commit (`rev`) and the md5s DVC computed.

Every function is safe to rerun after a crash: `dvc add` of unchanged content is a no-op,
a commit happens only when a pointer file changed, `dvc push` sends only what the remote
lacks, and a stale git index lock left by a killed run is removed (callers hold
features.lock.data_repo_lock, so no live git process can own it).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ground.errors import DataError, FacesurvError

if TYPE_CHECKING:
    from dvc.repo import Repo

REMOTE_NAME = "storage"
_GITIGNORE_EXTRA = (".facesurv-run.lock", ".facesurv-run.holder.json")
# a data repository has no human author; callers may set their own GIT_* identity
_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "facesurv flows", "GIT_AUTHOR_EMAIL": "flows@facesurv.invalid",
    "GIT_COMMITTER_NAME": "facesurv flows", "GIT_COMMITTER_EMAIL": "flows@facesurv.invalid",
}


@dataclass(frozen=True)
class VersionRecord:
    """What one versioning step produced: enough to fetch exactly these inputs again."""

    rev: str                                   # git commit of the data repository
    outs: dict[str, str] = field(default_factory=dict)    # tracked dir -> DVC dir md5 ("...dir")
    files: dict[str, str] = field(default_factory=dict)   # "photos/a.png" -> md5 of the content
    committed: bool = False                    # a new commit was made (False: inputs unchanged)
    pushed: int = 0                            # objects sent to the remote

    def to_dict(self) -> dict:
        return {"rev": self.rev, "outs": dict(self.outs), "files": dict(self.files),
                "committed": self.committed, "pushed": self.pushed}


def _git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**_GIT_IDENTITY, **os.environ, "GIT_TERMINAL_PROMPT": "0"}
    # never let git walk up into an enclosing (code) repository
    env["GIT_CEILING_DIRECTORIES"] = str(root.parent)
    proc = subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise FacesurvError(f"{root}: git {' '.join(args)} failed: {msg[-1] if msg else proc.returncode}")
    return proc


def _dvc_repo_class() -> type[Repo]:
    """dvc.repo.Repo, with DVC's console handlers taken off its loggers.

    `import dvc` binds stream handlers to whatever sys.stdout/sys.stderr are at that moment
    and raises from every later log call once that stream is closed (a finished pytest
    capture, a Prefect task's redirected output). As a library DVC should not print on its
    own: its records propagate to the application's logging, at the application's level.
    """
    import dvc.logger
    from dvc.repo import Repo

    for name in ("dvc", "dvc_objects", "dvc_data"):
        logger = logging.getLogger(name)
        stale = [h for h in logger.handlers if isinstance(h, dvc.logger.LoggerHandler)]
        for handler in stale:
            logger.removeHandler(handler)
        if stale:
            logger.setLevel(logging.NOTSET)  # the import also pinned INFO; the application's level decides
    return Repo


def _clear_stale_git_lock(root: Path) -> None:
    lock = root / ".git" / "index.lock"
    if lock.exists():
        lock.unlink()


def remote_url_for(remote: str | None, workspace_root: Path) -> str:
    """The DVC remote URL: params.flows.dvc_remote, or `<workspace>/dvc-storage` when null."""
    if remote is None:
        return str((workspace_root / "dvc-storage").resolve())
    if "://" in remote:
        return remote
    path = Path(remote).expanduser()
    return str((path if path.is_absolute() else workspace_root / path).resolve())


def init_data_repo(root: Path | str, *, remote_url: str, endpoint_url: str | None = None) -> Path:
    """Make `root` a git + DVC repository with `remote_url` as its default DVC remote.

    Idempotent: an existing repository keeps its history; only the remote is (re)set.
    `remote_url` is a directory or an `s3://bucket/prefix` URL; `endpoint_url` points an
    s3 remote at an S3-compatible server. Credentials come from the usual AWS_* variables,
    never from this configuration.
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if not (root / ".git").is_dir():
        _git(root, "init", "-q", "-b", "main")
    ignore = root / ".gitignore"
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.exists() else []
    missing = [f"/{name}" for name in _GITIGNORE_EXTRA if f"/{name}" not in lines]
    if missing:
        ignore.write_text("\n".join([*lines, *missing]) + "\n", encoding="utf-8")
    wanted = json.dumps({"url": remote_url, "endpointurl": endpoint_url, "cache": "reflink,copy"}, sort_keys=True)
    marker = root / ".dvc" / "tmp" / "facesurv-remote.json"  # .dvc/tmp is DVC's own ignored scratch dir
    if marker.is_file() and marker.read_text(encoding="utf-8") == wanted and data_revision(root):
        return root  # already set up this way: skip importing and opening DVC (about 2 s)
    Repo = _dvc_repo_class()
    if not (root / ".dvc").is_dir():
        Repo.init(str(root)).close()
    with Repo(str(root)) as repo, repo.config.edit() as conf:
        remote = {"url": remote_url}
        if endpoint_url:
            remote["endpointurl"] = endpoint_url
        conf["remote"][REMOTE_NAME] = remote
        conf["core"]["remote"] = REMOTE_NAME
        conf["core"]["analytics"] = False
        conf["core"]["autostage"] = True   # DVC stages its own pointer files; we commit them
        # Photos in data/ must stay plain files: readers refuse links (docs/security.md), so a
        # user-level cache.type of hardlink or symlink would quarantine every photo.
        conf["cache"]["type"] = "reflink,copy"
    _commit(root, [".gitignore", ".dvcignore", ".dvc/config", ".dvc/.gitignore"], "facesurv: data repository")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(wanted, encoding="utf-8")
    return root


def _commit(root: Path, paths: list[str], message: str) -> bool:
    _clear_stale_git_lock(root)
    present = [p for p in paths if (root / p).exists()]
    if present:
        _git(root, "add", "--", *present)
    if not _git(root, "diff", "--cached", "--quiet", check=False).returncode:
        return False
    _git(root, "commit", "-q", "-m", message)
    return True


def data_revision(root: Path | str) -> str | None:
    """The data repository's current commit, or None before its first commit."""
    root = Path(root)
    if not (root / ".git").is_dir():
        return None
    proc = _git(root, "rev-parse", "HEAD", check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def _dir_manifest(root: Path, out: str, dir_md5: str) -> dict[str, str]:
    """Per-file md5s of a tracked directory, read from DVC's `.dir` object in the cache."""
    digest = dir_md5.removesuffix(".dir")
    obj = root / ".dvc" / "cache" / "files" / "md5" / digest[:2] / (digest[2:] + ".dir")
    try:
        entries = json.loads(obj.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {f"{out}/{e['relpath']}": e["md5"] for e in entries}


def tracked_md5s(root: Path | str, outs: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """(dir md5 per tracked out, md5 per file) as recorded in the `.dvc` pointer files."""
    import yaml

    root = Path(root)
    dirs: dict[str, str] = {}
    files: dict[str, str] = {}
    for out in outs:
        pointer = root / f"{out}.dvc"
        if not pointer.exists():
            continue
        meta = yaml.safe_load(pointer.read_text(encoding="utf-8"))["outs"][0]
        dirs[out] = meta["md5"]
        if meta["md5"].endswith(".dir"):
            files.update(_dir_manifest(root, out, meta["md5"]))
        else:
            files[out] = meta["md5"]
    return dirs, files


def version_inputs(root: Path | str, outs: list[str], *, message: str, push: bool = True) -> VersionRecord:
    """`dvc add` each of `outs` (paths relative to `root`), commit the pointers, push.

    Args:
        root: an initialised data repository (init_data_repo).
        outs: files or directories inside it; missing ones are skipped.
        message: the git commit message when something changed.
        push: send the new content to the default remote.

    Returns:
        VersionRecord with the commit (new or current) and the md5s.

    Raises:
        DataError: `root` is not a data repository, or no out exists.
        FacesurvError: the remote rejected the push (the message names it).
    """
    from dvc.exceptions import DvcException

    Repo = _dvc_repo_class()
    root = Path(root).resolve()
    if not (root / ".dvc").is_dir() or not (root / ".git").is_dir():
        raise DataError(f"{root}: not a data repository; create it with features.versioning.init_data_repo")
    present = [o for o in outs if (root / o).exists()]
    if not present:
        raise DataError(f"{root}: none of {', '.join(outs)} exists; nothing to version")
    pushed = 0
    _clear_stale_git_lock(root)  # DVC's autostage runs git add before we commit
    with Repo(str(root)) as repo:
        repo.add([str(root / o) for o in present])
        committed = _commit(root, [f"{o}.dvc" for o in present] + [".gitignore"], message)
        if push:
            try:
                pushed = int(repo.push() or 0)
            except DvcException as exc:
                raise FacesurvError(f"{root}: dvc push to remote '{REMOTE_NAME}' failed: {exc}") from None
    dirs, files = tracked_md5s(root, present)
    return VersionRecord(rev=data_revision(root) or "", outs=dirs, files=files, committed=committed, pushed=pushed)
