"""Where every flow run says what it ran on: data revision, code version, params hash.

Records are plain JSON in `<workspace>/artifacts/lineage/` so training and serving can read
them without importing flows:

    flow_runs/<flow_run_id>.json     one per run (written at start as "running", rewritten at the end)
    latest-<flow-name>.json          the last *completed* run of that flow

A run killed mid-way (SIGKILL, power loss) cannot write its end; the next run of any flow in
the workspace marks it "crashed" once its process (host, pid and the pid's start time, so a
reused pid is not mistaken for it) is gone. Runs started on another host are left as they are.

Fields: flow, flow_run_id, started_at, finished_at, status (running|completed|failed|crashed),
error, data_rev (git commit of <workspace>/data, or null), data_md5 ({out: dvc md5}),
code_version (git sha of the code checkout, "+dirty" when it has local changes, or
"unknown"), params_hash, outputs (what the run produced), input_datasets/output_datasets (what it
read and wrote, as flows.openlineage_events describes datasets), openlineage (its OpenLineage run
id, namespace and job, and how many of its events were delivered).

Every run recorded here also emits OpenLineage events (START, then COMPLETE or FAIL) through
flows.openlineage_events, and makes its emitter the one its tasks emit through.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ground.atomic import atomic_path
from ground.workspace import code_version


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def this_process() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": _start_ticks(os.getpid())}


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
    process: dict[str, Any] = field(default_factory=this_process)
    input_datasets: list[dict[str, Any]] = field(default_factory=list)
    output_datasets: list[dict[str, Any]] = field(default_factory=list)
    openlineage: dict[str, Any] = field(default_factory=dict)


def process_alive(proc: dict[str, Any]) -> bool:
    """Whether the process a record names still runs (on this host; other hosts count as alive)."""
    if not proc or proc.get("host") != socket.gethostname() or not isinstance(proc.get("pid"), int):
        return True
    pid = proc["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's
    start = _start_ticks(pid)
    return proc.get("start") is None or start is None or start == proc["start"]


def mark_crashed_runs(artifacts_dir: Path, *, found_by: str) -> list[str]:
    """Mark 'running' records whose process is gone as 'crashed'; returns their flow_run_ids."""
    marked = []
    for path in sorted((lineage_dir(artifacts_dir) / "flow_runs").glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # an unreadable record is not ours to rewrite
        if not isinstance(data, dict) or data.get("status") != "running" or process_alive(data.get("process") or {}):
            continue
        proc = data.get("process") or {}
        data.update(status="crashed", finished_at=now(),
                    error=f"process {proc.get('pid')} on {proc.get('host')} ended without recording an end "
                          f"(killed?); marked by run {found_by}")
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str), encoding="utf-8")
        marked.append(str(data.get("flow_run_id", path.stem)))
    return marked


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
def run_context(ws: Any, params: Any, flow: str, *, description: str | None = None) -> Iterator[RunRecord]:
    """Record a flow run: 'running' at start, then 'completed' or 'failed' (with the error), and
    emit its OpenLineage events (params.openlineage; `description`: the job's documentation)."""
    from flows import openlineage_events

    record = RunRecord(flow=flow, flow_run_id=current_flow_run_id(), params_hash=params.params_hash,
                       code_version=code_version())
    emitter = openlineage_events.open_flow(getattr(params, "openlineage", None), root=getattr(ws, "root", None),
                                           flow=flow, flow_run_id=record.flow_run_id)
    mark_crashed_runs(ws.artifacts_dir, found_by=record.flow_run_id)
    where = str(Path("lineage") / "flow_runs" / f"{record.flow_run_id}.json")  # under the artifacts folder

    def emit(state: str) -> None:
        if emitter is not None:
            emitter.flow_event(state, asdict(record), description=description, record_path=where)
            record.openlineage = emitter.summary()

    emit("START")
    write_record(ws.artifacts_dir, record)
    with openlineage_events.active(emitter):
        try:
            yield record
        except BaseException as exc:
            record.status, record.finished_at = "failed", now()
            record.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            emit("FAIL")
            write_record(ws.artifacts_dir, record)
            raise
        record.status, record.finished_at = "completed", now()
        emit("COMPLETE")
        write_record(ws.artifacts_dir, record)


def current_flow_run_id() -> str:
    """The Prefect flow run's id inside a flow; a fresh uuid outside one (DVC stages, scripts)."""
    try:
        from prefect.runtime import flow_run

        run_id = flow_run.id
    except ImportError:
        run_id = None
    return str(run_id) if run_id else f"local-{uuid.uuid4()}"
