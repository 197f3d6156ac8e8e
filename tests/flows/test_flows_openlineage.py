"""OpenLineage events of the flows: valid against the spec, emitted for flows and tasks, and
reachable from a score's ledger record."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from prefect import flow

from flows import openlineage_datasets as datasets
from flows import openlineage_events as ol
from flows.lineage import run_context
from flows.runtime import as_task
from tests.flows.flows_helpers import fill_inbox, tiny_params

SCHEMAS = Path(__file__).parent / "data" / "openlineage"
# facet key -> its schema file (the spec's facets, and facesurv's own)
FACET_FILES = {
    "parent": "facets/ParentRunFacet.json", "processing_engine": "facets/ProcessingEngineRunFacet.json",
    "errorMessage": "facets/ErrorMessageRunFacet.json", "tags": "facets/TagsRunFacet.json",
    "jobType": "facets/JobTypeJobFacet.json", "documentation": "facets/DocumentationJobFacet.json",
    "schema": "facets/SchemaDatasetFacet.json", "version": "facets/DatasetVersionDatasetFacet.json",
    "facesurv_run": "facesurv/FacesurvRunFacet.json", "facesurv_dvc": "facesurv/DvcDatasetFacet.json",
    "facesurv_feast": "facesurv/FeastDatasetFacet.json", "facesurv_generator": "facesurv/GeneratorDatasetFacet.json",
    "facesurv_mlflow_model": "facesurv/MlflowModelDatasetFacet.json",
}


def _validator(path: str):
    import jsonschema
    from referencing import Registry, Resource

    docs = [json.loads(p.read_text()) for p in SCHEMAS.rglob("*.json")]
    registry = Registry().with_resources((d["$id"], Resource.from_contents(d)) for d in docs)
    schema = json.loads((SCHEMAS / path).read_text())
    return jsonschema.Draft202012Validator(schema, registry=registry,
                                           format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def assert_valid(events: list[dict]) -> None:
    """Every event against OpenLineage.json's RunEvent, every facet against its own schema."""
    core = _validator("OpenLineage.json")
    run_event = json.loads((SCHEMAS / "OpenLineage.json").read_text())["$defs"]["RunEvent"]
    facet_checks = {key: _validator(path) for key, path in FACET_FILES.items()}
    for event in events:
        core.evolve(schema={**run_event, "$defs": core.schema["$defs"]}).validate(event)
        facets = [event["run"].get("facets", {}), event["job"].get("facets", {})]
        facets += [d.get("facets", {}) for d in event.get("inputs", []) + event.get("outputs", [])]
        for group in facets:
            for key, value in group.items():
                assert key in facet_checks, f"facet {key} has no schema here"
                facet_checks[key].validate({key: value})


def read_events(folder: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl")) for line in f.read_text().splitlines() if line]


def _serialised(event) -> dict:
    from openlineage.client.serde import Serde

    return json.loads(Serde.to_json(event))


def test_every_kind_of_event_validates_against_the_openlineage_schema() -> None:
    run_id, task_run = str(uuid.uuid4()), str(uuid.uuid4())
    record = {"flow": "nightly-embedding", "flow_run_id": f"local-{run_id}", "status": "failed", "error": "DataError: x",
              "params_hash": "p" * 64, "code_version": "abc+dirty", "data_rev": "d" * 40,
              "input_datasets": datasets.dvc_datasets("/ws/data", rev="d" * 40, md5={"photos": "1.dir", "clinical": "2.dir"}),
              "output_datasets": [
                  *datasets.feature_view_datasets(project="facesurv", service="prognosis_v1",
                                            views={"face_latent": [("latent", "float32_list")], "clinical": [("age", "float64")]},
                                            generator={"version": "facesurv-generator v2", "sha256": "ab" * 32,
                                                       "is_random_init": False}, rows={"face_latent": 3}),
                  *datasets.model_datasets({"facesurv-prognosis": "4"}, run_ids={"facesurv-prognosis": "r1"},
                                     champion={"promoted": True, "version": "4", "model_name": "facesurv-prognosis"}),
                  datasets.generator_dataset(name="facesurv-generator", version="2", sha256="cd" * 32, run_id="r2")]}
    events = [ol.flow_event(state, namespace="facesurv", record=record, run_id=run_id, description="nightly",
                            parent=("outer", str(uuid.uuid4())), root=("outer", str(uuid.uuid4())), record_path="x.json")
              for state in ("START", "COMPLETE", "FAIL")]
    events += [ol.task_event(state, namespace="facesurv", flow="nightly-embedding", flow_run_id=run_id, task="ingest",
                             task_run_id=task_run, error="OSError: disk full") for state in ("START", "RUNNING", "COMPLETE", "FAIL")]
    as_json = [_serialised(e) for e in events]
    assert_valid(as_json)
    complete = as_json[1]
    latent = next(d for d in complete["outputs"] if d["name"] == "face_latent")
    assert latent["namespace"] == "feast://facesurv" and latent["facets"]["facesurv_generator"]["version"] == "facesurv-generator v2"
    assert latent["facets"]["facesurv_feast"]["featureService"] == "prognosis_v1"
    photos = next(d for d in complete["inputs"] if d["name"] == "/ws/data/photos")
    assert photos["facets"]["facesurv_dvc"] == {**photos["facets"]["facesurv_dvc"], "rev": "d" * 40, "md5": "1.dir"}
    model = next(d for d in complete["outputs"] if d["name"] == "facesurv-prognosis")
    assert model["facets"]["facesurv_mlflow_model"]["alias"] == "champion" and model["facets"]["version"]["datasetVersion"] == "4"
    assert as_json[2]["run"]["facets"]["errorMessage"]["message"] == "DataError: x"
    assert as_json[-1]["run"]["facets"]["parent"]["run"]["runId"] == run_id


def test_a_run_id_is_the_uuid_of_the_flow_run_id() -> None:
    u = str(uuid.uuid4())
    assert ol.run_id_of(u) == ol.run_id_of(f"local-{u}") == u
    with pytest.raises(ValueError, match="holds no uuid"):
        ol.run_id_of("local-not-a-uuid")


def test_the_transport_follows_params(workspace, params) -> None:
    from openlineage.client.transport.file import FileTransport
    from openlineage.client.transport.http import HttpTransport

    from ground.config import with_overrides

    run_id = str(uuid.uuid4())
    http = with_overrides(params, openlineage={"transport": "http", "url": "http://marquez.invalid:5000"})
    client = ol.make_client(http.openlineage, root=workspace.root, run_id=run_id)
    assert isinstance(client.transport, HttpTransport)  # built only: nothing is sent
    assert client.transport.url == "http://marquez.invalid:5000" and client.transport.endpoint == "api/v1/lineage"
    client = ol.make_client(params.openlineage, root=workspace.root, run_id=run_id)
    assert isinstance(client.transport, FileTransport)
    assert client.transport.config.log_file_path == str(workspace.root / params.openlineage.path / f"{run_id}.jsonl")


def test_bad_openlineage_settings_are_refused(params) -> None:
    from ground.config import with_overrides
    from ground.errors import ConfigError

    with pytest.raises(ConfigError, match="openlineage.transport must be 'file' or 'http'"):
        with_overrides(params, openlineage={"transport": "kafka"})
    with pytest.raises(ConfigError, match="openlineage.url must be set when transport is http"):
        with_overrides(params, openlineage={"transport": "http"})
    with pytest.raises(ConfigError, match="openlineage.url must be null or an http"):
        with_overrides(params, openlineage={"url": "marquez:5000"})


def test_an_undeliverable_event_is_a_warning_not_a_failed_run(workspace, params, capsys) -> None:
    from ground.config import with_overrides

    # a closed local port: every attempt is refused at once
    http = with_overrides(params, openlineage={"transport": "http", "url": "http://127.0.0.1:9", "timeout_s": 0.5})
    with run_context(workspace, http, "demo-flow") as rec:
        assert ol.current() is not None
    assert rec.status == "completed" and ol.current() is None
    assert rec.openlineage["undelivered"] == 2 and rec.openlineage["transport"] == "http://127.0.0.1:9"
    assert "warning: OpenLineage event" in capsys.readouterr().out


# ---- a real Prefect flow with tasks --------------------------------------------------------

def _double(x: int) -> int:
    return 2 * x


_tries: list[int] = []


def _flaky_then_boom(x: int) -> int:
    _tries.append(x)
    raise RuntimeError(f"boom {x}")


double = as_task(_double, "double", **ol.task_hooks())
boom = as_task(_flaky_then_boom, "boom", retries=1, retry_delay_seconds=0, **ol.task_hooks())


@flow(name="openlineage-test-flow")
def tiny_flow(workspace: str, fail: bool = False) -> dict:
    from ground.workspace import Workspace

    ws = Workspace(Path(workspace))
    with run_context(ws, ws.load_params(), "openlineage-test-flow") as record:
        record.outputs["y"] = double(3)
        if fail:
            boom(1)
        return {"openlineage": dict(record.openlineage)}


def test_a_flow_run_emits_start_and_complete_for_itself_and_its_tasks_and_fail_when_a_task_raises(
        workspace, prefect_api) -> None:
    done = tiny_flow(str(workspace.root))
    with pytest.raises(RuntimeError, match="boom 1"):
        tiny_flow(str(workspace.root), fail=True)
    events = read_events(workspace.root / "artifacts" / "lineage" / "openlineage")
    assert_valid(events)
    ok_id = done["openlineage"]["run_id"]
    ok = [(e["job"]["name"], e["eventType"]) for e in events if e["run"]["runId"] == ok_id
          or e["run"]["facets"].get("parent", {}).get("run", {}).get("runId") == ok_id]
    assert ok == [("openlineage-test-flow", "START"), ("openlineage-test-flow.double", "START"),
                  ("openlineage-test-flow.double", "COMPLETE"), ("openlineage-test-flow", "COMPLETE")]
    failed_flow = next(e for e in events if e["job"]["name"] == "openlineage-test-flow" and e["eventType"] == "FAIL")
    failed_id = failed_flow["run"]["runId"]
    assert failed_flow["run"]["facets"]["errorMessage"]["message"] == "RuntimeError: boom 1"
    tasks = [e["eventType"] for e in events if e["job"]["name"] == "openlineage-test-flow.boom"]
    assert tasks == ["START", "RUNNING", "FAIL"] and len(_tries) == 2  # the retry is RUNNING, not a second START
    boom_fail = next(e for e in events if e["job"]["name"] == "openlineage-test-flow.boom" and e["eventType"] == "FAIL")
    assert boom_fail["run"]["facets"]["parent"]["run"]["runId"] == failed_id
    assert "boom 1" in boom_fail["run"]["facets"]["errorMessage"]["message"]
    record = json.loads((workspace.artifacts_dir / "lineage" / "latest-openlineage-test-flow.json").read_text())
    assert record["openlineage"]["run_id"] == ok_id and record["flow_run_id"].endswith(ok_id)
    assert record["openlineage"]["undelivered"] == 0


# ---- nightly flow, then a score: from the ledger record to the run graph -------------------

@pytest.mark.slow
def test_a_scores_ledger_record_names_the_nightly_run_that_wrote_its_features(workspace, prefect_api, tmp_path) -> None:
    from flows.nightly_embedding import nightly_embedding
    from serving.ledger import SQLiteLedger
    from serving.online import FeastFeatureReader
    from serving.scoring import LineageContext, Scorer, load_champion
    from tests.serving.reference_champion import register_reference_champion

    tiny_params(workspace.root, contracts={"max_projection_loss": 100.0})
    ids = fill_inbox(workspace.root, start=0, count=4)
    first = nightly_embedding(str(workspace.root))
    assert first["latent_rows_written"] == 4
    params = workspace.load_params()

    uri = register_reference_champion(tmp_path / "registry", model_name="facesurv-prognosis")
    scorer = Scorer(model=load_champion("facesurv-prognosis", tracking_uri=uri),
                    read_features=FeastFeatureReader(workspace.feature_repo_dir, params),
                    context=LineageContext("test", params.params_hash, {}))
    patient = _patient_of(workspace, ids[0])
    ledger = SQLiteLedger(tmp_path / "ledger.db")
    try:
        entry = ledger.append(scorer.score_patient(patient, requested_by="auditor"))
        stored = ledger.get(entry.score_id).record
    finally:
        ledger.close()
    named = stored["inputs"]["openlineage"]
    assert named["namespace"] == params.openlineage.namespace

    events = read_events(workspace.root / params.openlineage.path)
    assert_valid(events)
    flow_events = {e["eventType"]: e for e in events if e["run"]["runId"] == named["run_id"]}
    assert set(flow_events) == {"START", "COMPLETE"} and flow_events["COMPLETE"]["job"]["name"] == "nightly-embedding"
    record = json.loads((workspace.artifacts_dir / "lineage" / "latest-nightly-embedding.json").read_text())
    assert record["openlineage"]["run_id"] == named["run_id"] == ol.run_id_of(first["flow_run_id"])
    done = flow_events["COMPLETE"]
    latent = next(d for d in done["outputs"] if d["name"] == "face_latent")
    assert latent["facets"]["facesurv_generator"]["sha256"] == stored["inputs"]["generator"]["sha256"]
    assert latent["facets"]["facesurv_feast"]["rowsWritten"] == 4
    dvc = {d["facets"]["facesurv_dvc"]["out"]: d["facets"]["facesurv_dvc"] for d in done["inputs"]}
    assert set(dvc) == {"prealigned", "clinical"} and dvc["clinical"]["rev"] == first["data_rev"]
    task_runs = {(e["job"]["name"], e["eventType"]) for e in events
                 if e["run"]["facets"].get("parent", {}).get("run", {}).get("runId") == named["run_id"]}
    for task in ("scan-inbox", "ingest", "version-inputs", "validate", "project-batch", "write-latent-features",
                 "materialize", "mark-inbox-done"):
        assert {(f"nightly-embedding.{task}", "START"), (f"nightly-embedding.{task}", "COMPLETE")} <= task_runs, task


def _patient_of(workspace, photo_id: str) -> str:
    import pandas as pd

    clinical = pd.concat(pd.read_csv(p) for p in (workspace.root / "data" / "clinical").glob("*.csv"))
    return str(clinical.loc[clinical["photo_id"] == photo_id, "patient_id"].iloc[0])
