"""OpenLineage run events of the flows and their tasks, through the openlineage-python client.

The platform's own run records (flows/lineage.py) stay what an audit reads; these events carry
the same facts to lineage tools (Marquez, DataHub, OpenMetadata):

  * a flow run that records lineage (flows.lineage.run_context) emits START when it begins and
    COMPLETE or FAIL at its end, with the input and output datasets its record names;
  * a task declared with `task_hooks()` emits START (RUNNING on a retry), then COMPLETE or FAIL,
    with a parent facet naming its flow run.

Run ids: a flow run's is its Prefect flow run id (a uuid; outside Prefect, the uuid of
lineage's `local-<uuid>`), a task run's its Prefect task run id. Jobs: `<namespace>/<flow>` and
`<namespace>/<flow>.<task>`; the namespace is params.openlineage.namespace.

Datasets are described by the flows as plain dicts and become OpenLineage datasets in
flows.openlineage_datasets (kinds, namespaces and facets listed there).

Transport (params.openlineage): `file` writes JSON lines, one file per flow run
(<path>/<run id>.jsonl, its tasks' events included); `http` POSTs each event to url/endpoint.
An event that cannot be delivered is a printed warning and counted in the run record
(openlineage.undelivered), never a failed flow: the platform's own record is written regardless.

The emitter of the running flow lives in a context variable of the flow's process; Prefect's
thread-pool task runner copies it into task threads. A task run by a Dask worker (another
process) therefore emits no task events of its own; its flow run's events still cover it.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from flows.openlineage_datasets import custom_facets, input_dataset, output_dataset, producer

# the client's default (5 tries, backoff up to ~5 s) would hold every task ~10 s while the server is
# down; two quick retries ride out a blip, and an event still lost is counted in the run record
HTTP_RETRY: dict[str, Any] = {"total": 2, "read": 2, "connect": 2, "backoff_factor": 0.3,
                              "status_forcelist": [500, 502, 503, 504], "allowed_methods": ["HEAD", "POST"]}

_CURRENT: contextvars.ContextVar[FlowEmitter | None] = contextvars.ContextVar("facesurv_openlineage", default=None)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def run_id_of(flow_run_id: str) -> str:
    """The OpenLineage run id (a uuid) of a platform flow run id: Prefect's uuid, or local-<uuid>."""
    text = str(flow_run_id).removeprefix("local-")
    try:
        return str(uuid.UUID(text))
    except ValueError:
        raise ValueError(f"flow run id {flow_run_id!r} holds no uuid; OpenLineage run ids are uuids") from None


# ---- events (pure: plain values in, client objects out) ---------------------------------------

def _engine_facet() -> Any:
    from openlineage.client.facet_v2 import processing_engine_run

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "unknown"

    return processing_engine_run.ProcessingEngineRunFacet(
        version=version("prefect"), name="prefect", openlineageAdapterVersion=version("openlineage-python"),
        producer=producer())


def _parent_facet(*, namespace: str, job: str, run_id: str, root: tuple[str, str] | None) -> Any:
    """parent (and root, when the parent has one above it) of a run."""
    from openlineage.client.facet_v2 import parent_run

    top = parent_run.Root(run=parent_run.RootRun(runId=root[1]), job=parent_run.RootJob(namespace=namespace, name=root[0])) \
        if root else None
    return parent_run.ParentRunFacet(run=parent_run.Run(runId=run_id), job=parent_run.Job(namespace=namespace, name=job),
                                     root=top, producer=producer())


def _job(namespace: str, name: str, *, job_type: str, description: str | None = None) -> Any:
    from openlineage.client.event_v2 import Job
    from openlineage.client.facet_v2 import documentation_job, job_type_job

    facets: dict[str, Any] = {"jobType": job_type_job.JobTypeJobFacet(processingType="BATCH", integration="PREFECT",
                                                                       jobType=job_type, producer=producer())}
    if description:
        facets["documentation"] = documentation_job.DocumentationJobFacet(description=description, producer=producer())
    return Job(namespace=namespace, name=name, facets=facets)


def _error_facet(message: str) -> Any:
    from openlineage.client.facet_v2 import error_message_run

    return error_message_run.ErrorMessageRunFacet(message=message, programmingLanguage="PYTHON", producer=producer())


def flow_event(state: str, *, namespace: str, record: Mapping[str, Any], run_id: str, description: str | None = None,
               parent: tuple[str, str] | None = None, root: tuple[str, str] | None = None,
               record_path: str | None = None) -> Any:
    """A flow run's event. state: START|COMPLETE|FAIL; record: the platform's RunRecord as a dict;
    parent/root: (job, run id) of an enclosing flow run."""
    from openlineage.client.event_v2 import Run, RunEvent, RunState

    facets: dict[str, Any] = {"processing_engine": _engine_facet(), "facesurv_run": custom_facets()["FacesurvRunFacet"](
        flowRunId=str(record["flow_run_id"]), status=str(record.get("status")), paramsHash=record.get("params_hash"),
        codeVersion=record.get("code_version"), dataRev=record.get("data_rev"), record=record_path, producer=producer())}
    if parent:
        facets["parent"] = _parent_facet(namespace=namespace, job=parent[0], run_id=parent[1], root=root)
    if state == "FAIL" and record.get("error"):
        facets["errorMessage"] = _error_facet(str(record["error"]))
    return RunEvent(eventType=RunState(state), eventTime=now(), producer=producer(),
                    run=Run(runId=run_id, facets=facets),
                    job=_job(namespace, str(record["flow"]), job_type="FLOW", description=description),
                    inputs=[input_dataset(d) for d in record.get("input_datasets") or []],
                    outputs=[output_dataset(d) for d in record.get("output_datasets") or []])


def task_event(state: str, *, namespace: str, flow: str, flow_run_id: str, task: str, task_run_id: str,
               error: str | None = None, root: tuple[str, str] | None = None) -> Any:
    """A task run's event, its parent the flow run (flow, flow_run_id). state: START|RUNNING|COMPLETE|FAIL."""
    from openlineage.client.event_v2 import Run, RunEvent, RunState

    facets: dict[str, Any] = {"processing_engine": _engine_facet(),
                              "parent": _parent_facet(namespace=namespace, job=flow, run_id=flow_run_id,
                                                      root=root or (flow, flow_run_id))}
    if state == "FAIL":
        facets["errorMessage"] = _error_facet(error or "task failed")
    return RunEvent(eventType=RunState(state), eventTime=now(), producer=producer(),
                    run=Run(runId=task_run_id, facets=facets), job=_job(namespace, f"{flow}.{task}", job_type="TASK"))


# ---- the client: transport from params, and the running flow's emitter ---------------------

def make_client(settings: Any, *, root: Path, run_id: str) -> Any:
    """An OpenLineageClient on params.openlineage's transport (file: <path>/<run_id>.jsonl under root)."""
    from openlineage.client import OpenLineageClient

    if settings.transport == "http":
        from openlineage.client.transport.http import HttpConfig, HttpTransport

        transport: Any = HttpTransport(HttpConfig(url=settings.url, endpoint=settings.endpoint, timeout=settings.timeout_s,
                                                  retry=HTTP_RETRY))
    else:
        from openlineage.client.transport.file import FileConfig, FileTransport

        folder = Path(settings.path).expanduser()
        folder = folder if folder.is_absolute() else Path(root) / folder
        folder.mkdir(parents=True, exist_ok=True)
        transport = FileTransport(FileConfig(log_file_path=str(folder / f"{run_id}.jsonl"), append=True))
    return OpenLineageClient(transport=transport)


@dataclass
class FlowEmitter:
    """The emitting side of one flow run: its client, names, and what it could not deliver."""

    client: Any
    namespace: str
    flow: str
    run_id: str
    transport: str
    parent: FlowEmitter | None = None
    emitted: int = 0
    undelivered: int = 0
    _started: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def root(self) -> tuple[str, str]:
        top = self
        while top.parent is not None:
            top = top.parent
        return top.flow, top.run_id

    def summary(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "namespace": self.namespace, "job": self.flow, "transport": self.transport,
                "emitted": self.emitted, "undelivered": self.undelivered}

    def emit(self, what: str, build: Callable[[], Any]) -> None:
        """Build one event and deliver it; a failure is a warning and a count, never the run's failure."""
        # one event at a time: the file transport appends whole lines, a server sees them in order
        with self._lock:
            try:
                self.client.emit(build())
                self.emitted += 1
            except Exception as exc:
                self.undelivered += 1
                print(f"warning: OpenLineage event {what} not delivered ({self.transport}): "
                      f"{type(exc).__name__}: {exc}".splitlines()[0])

    def flow_event(self, state: str, record: Mapping[str, Any], *, description: str | None = None,
                   record_path: str | None = None) -> None:
        parent = (self.parent.flow, self.parent.run_id) if self.parent else None
        self.emit(f"{state} of {self.flow}", lambda: flow_event(
            state, namespace=self.namespace, record=record, run_id=self.run_id, description=description,
            parent=parent, root=self.root if parent else None, record_path=record_path))

    def task_event(self, kind: str, *, task: str, task_run_id: str, error: str | None = None) -> None:
        with self._lock:
            state = {"running": "RUNNING" if task_run_id in self._started else "START",
                     "completed": "COMPLETE", "failed": "FAIL"}[kind]
            self._started.add(task_run_id)
        self.emit(f"{state} of {self.flow}.{task}", lambda: task_event(
            state, namespace=self.namespace, flow=self.flow, flow_run_id=self.run_id, task=task,
            task_run_id=task_run_id, error=error, root=self.root))


def open_flow(settings: Any, *, root: Path | None, flow: str, flow_run_id: str) -> FlowEmitter | None:
    """The emitter of a new flow run; None where the run has no params.openlineage (bare test
    params) or no workspace root to write under."""
    if settings is None or (settings.transport == "file" and root is None):
        return None
    run_id = run_id_of(flow_run_id)
    return FlowEmitter(client=make_client(settings, root=Path(root or "."), run_id=run_id),
                       namespace=settings.namespace, flow=flow, run_id=run_id,
                       transport=settings.url if settings.transport == "http" else "file",
                       parent=_CURRENT.get())


@contextlib.contextmanager
def active(emitter: FlowEmitter | None) -> Iterator[FlowEmitter | None]:
    """Make `emitter` the one the tasks of this flow run (in this process) emit through."""
    token = _CURRENT.set(emitter) if emitter is not None else None
    try:
        yield emitter
    finally:
        if token is not None:
            _CURRENT.reset(token)
            with contextlib.suppress(Exception):
                emitter.client.close(timeout=1.0)  # type: ignore[union-attr]


def current() -> FlowEmitter | None:
    """The emitter of the flow run this code runs in (this process), if any."""
    return _CURRENT.get()


# ---- Prefect task hooks --------------------------------------------------------------------

def _hook(kind: str, task: Any, task_run: Any, state: Any) -> None:
    emitter = _CURRENT.get()
    if emitter is None:
        return
    error = None
    if kind == "failed":
        error = (getattr(state, "message", None) or "task failed").splitlines()[0]
    emitter.task_event(kind, task=str(task.name), task_run_id=str(task_run.id), error=error)


def on_task_running(task: Any, task_run: Any, state: Any) -> None:
    _hook("running", task, task_run, state)


def on_task_completed(task: Any, task_run: Any, state: Any) -> None:
    _hook("completed", task, task_run, state)


def on_task_failed(task: Any, task_run: Any, state: Any) -> None:
    _hook("failed", task, task_run, state)


def task_hooks() -> dict[str, Any]:
    """Prefect task options that make a task emit its OpenLineage events (as_task(..., **task_hooks()))."""
    return {"on_running": [on_task_running], "on_completion": [on_task_completed], "on_failure": [on_task_failed]}
