"""A workspace: one directory holding params.yaml and every store the platform writes.

Layout (created on demand by the commands that write, never at import):

    params.yaml           tunables (copied from the repository when a workspace is created)
    data/                 DVC-tracked inputs: data/clinical/, data/photos/, data/aligned/
    artifacts/            stage outputs (manifests, latents, metrics, reports)
    feature_repo/         rendered feature_store.yaml, Feast registry, online store, offline parquet
    mlflow/               MLflow tracking store (mlflow.db) and artifacts
    ledger.db             the serving lineage ledger
    .prefect/             Prefect home for the ephemeral API
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ground.config import Params, load_params
from ground.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent


def code_version(root: Path = REPO_ROOT) -> str:
    """The git commit of a checkout, '+dirty' when tracked files changed, 'unknown' outside git."""
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty else "")


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def resolve(cls, path: Path | str | None) -> Workspace:
        """The workspace named by --workspace, $FACESURV_WORKSPACE, or the current directory."""
        chosen = path or os.environ.get("FACESURV_WORKSPACE") or Path.cwd()
        return cls(Path(chosen).expanduser().resolve())

    @classmethod
    def create(cls, root: Path | str, *, params_source: Path | None = None) -> Workspace:
        """Make a workspace directory with a copy of params.yaml (kept if already there)."""
        ws = cls(Path(root).expanduser().resolve())
        try:
            ws.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{ws.root}: cannot create workspace: {exc.strerror}") from None
        if not ws.params_path.exists():
            src = params_source or REPO_ROOT / "params.yaml"
            tmp = ws.params_path.with_suffix(".yaml.tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, ws.params_path)
        return ws

    def load_params(self) -> Params:
        return load_params(self.params_path)

    def setting_path(self, value: str | os.PathLike | None) -> Path | None:
        """A file named in params.yaml (a checkpoint, weights): ~ expanded, and a relative
        path taken under this workspace, never under the current directory."""
        if value is None:
            return None
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.root / path

    @property
    def params_path(self) -> Path:
        return self.root / "params.yaml"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def feature_repo_dir(self) -> Path:
        return self.root / "feature_repo"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def ledger_path(self) -> Path:
        return self.root / "ledger.db"

    @property
    def prefect_home(self) -> Path:
        return self.root / ".prefect"
