"""Where every flow run says what it ran on: data revision, code version, params hash.

Records are plain JSON in `<workspace>/artifacts/lineage/` so training and serving can read
them without importing flows:

    flow_runs/<flow_run_id>.json     one per run (written at start as "running", rewritten at the end)
    latest-<flow-name>.json          the last *completed* run of that flow

Fields: flow, flow_run_id, started_at, finished_at, status (running|completed|failed),
error, data_rev (git commit of <workspace>/data, or null), data_md5 ({out: dvc md5}),
code_version (git sha of the code checkout, "+dirty" when it has local changes, or
"unknown"), params_hash, outputs (what the run produced).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from facesurv.atomic import atomic_path

CODE_ROOT = Path(__file__).resolve().parent.parent


def code_version(root: Path = CODE_ROOT) -> str:
    """The git commit of the code checkout, '+dirty' if it has uncommitted changes."""
    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty else "")


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class RunRecord:
    flow: str
    flow_run_id: str
    params_hash: str
    code_version: str
    started_at: str = field(default_factory=now)
    finished_at: str | None = None
    status: str = "running"
    error: str | None = None
    data_rev: str | None = None
    data_md5: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)


def lineage_dir(artifacts_dir: Path) -> Path:
    return Path(artifacts_dir) / "lineage"


def write_record(artifacts_dir: Path, record: RunRecord) -> Path:
    """Write the run's record (atomically); a completed run also becomes latest-<flow>.json."""
    base = lineage_dir(artifacts_dir)
    path = base / "flow_runs" / f"{record.flow_run_id}.json"
    text = json.dumps(asdict(record), indent=1, sort_keys=True, default=str)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    if record.status == "completed":
        with atomic_path(base / f"latest-{record.flow}.json") as tmp:
            tmp.write_text(text, encoding="utf-8")
    return path


def read_latest(artifacts_dir: Path, flow: str) -> dict[str, Any] | None:
    """The last completed run's record of `flow`, or None."""
    path = lineage_dir(artifacts_dir) / f"latest-{flow}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def run_context(ws: Any, params: Any, flow: str) -> Iterator[RunRecord]:
    """Record a flow run: 'running' at start, then 'completed' or 'failed' (with the error)."""
    record = RunRecord(flow=flow, flow_run_id=current_flow_run_id(), params_hash=params.params_hash,
                       code_version=code_version())
    write_record(ws.artifacts_dir, record)
    try:
        yield record
    except BaseException as exc:
        record.status, record.finished_at = "failed", now()
        record.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        write_record(ws.artifacts_dir, record)
        raise
    record.status, record.finished_at = "completed", now()
    write_record(ws.artifacts_dir, record)


def current_flow_run_id() -> str:
    """The Prefect flow run's id inside a flow; a fresh uuid outside one (DVC stages, scripts)."""
    try:
        from prefect.runtime import flow_run

        run_id = flow_run.id
    except ImportError:
        run_id = None
    return str(run_id) if run_id else f"local-{uuid.uuid4()}"
