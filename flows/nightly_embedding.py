"""The nightly embedding flow: new photos and clinical records in, features out.

    inbox -> data repository (dvc add, git commit, dvc push) -> clinical contract
      -> align new photos -> project photos with no latent for this run key (batches,
      optionally on Dask) -> latent contract -> write features -> materialise -> lineage

The tasks are the library functions themselves, or the small steps of flows/steps.py and
flows/embedding_steps.py where a call needs the workspace's paths; only I/O tasks retry
(flows.runtime.IO_RETRY). Outputs are keyed by content hash, so a run killed anywhere is resumed
by running it again: finished alignments and projection shards are found and reused, and the
feature store's writes are idempotent. A lock keeps two runs off the same data repository.

A night with nothing new costs seconds plus Prefect's start-up, not a pass over everything:
  * nothing new in the inbox, and the data repository at the commit this flow last versioned
    and pushed, to the same remote, with no file added, removed or replaced since: no `dvc
    add`/push over the whole folders (the run records that commit and its md5s);
  * every photo aligned already: dlib's models are not loaded; no photo pending under the run key
    an earlier run remembered: the generator is not loaded (flows/embedding_steps.py);
  * the feature stage's inputs (valid clinical and latent files, alignment manifest, params,
    code and library versions) and the feature store (its files, watermarks and, locally, offline parts)
    unchanged since a run that wrote and materialised everything: Feast is not opened at all.
State in artifacts/flows/nightly-state.json, written only after the step it describes succeeded;
deleting it makes the next run do every step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow

from embedding.project_batch import PhotoFailure
from features import inbox, store, versioning
from features.feature_repo.schema import (
    CLINICAL_VIEW,
    LATENT_FEATURES,
    LATENT_VIEW,
    clinical_features,
)
from flows import drift_steps, embedding_steps, nightly_state, steps
from flows.faults import checkpoint
from flows.openlineage_events import task_hooks
from flows.progress import heartbeat, say
from flows.runtime import as_task
from ground.config import Params
from ground.workspace import Workspace

FLOW_NAME = "nightly-embedding"


def _task(fn: Any, name: str, **options: Any) -> Any:
    """A task of this flow: emits its OpenLineage events under the flow run's (flows.openlineage_events)."""
    return as_task(fn, name, **options, **task_hooks())


scan_inbox = _task(inbox.scan_inbox, "scan-inbox", io=True)
prepare_data_repo = _task(versioning.init_data_repo, "prepare-data-repo", io=True)
ingest = _task(inbox.ingest, "ingest", io=True)
version_inputs = _task(versioning.version_inputs, "version-inputs", io=True)
validate = _task(steps.validate_file, "validate", task_run_name="validate-{kind}")
align_photos = _task(embedding_steps.align_photos, "align-photos")
project_batch = _task(embedding_steps.project_batch, "project-batch")
apply_feature_repo = _task(store.apply_repo, "apply-feature-repo", io=True)
write_clinical = _task(store.write_clinical, "write-clinical-features", io=True)
write_latent_features = _task(embedding_steps.write_latent_features, "write-latent-features", io=True)
materialize = _task(store.materialize, "materialize", io=True)
mark_inbox_done = _task(inbox.mark_done, "mark-inbox-done", io=True)


def task_runner_for(params: Params, *, dask_workers: int | None = None) -> Any:
    """Dask when params.flows.dask_scheduler is set (or local workers are asked for), else threads."""
    if params.flows.dask_scheduler or dask_workers:
        from prefect_dask import DaskTaskRunner

        if params.flows.dask_scheduler:
            return DaskTaskRunner(address=params.flows.dask_scheduler)
        return DaskTaskRunner(cluster_kwargs={"n_workers": dask_workers, "threads_per_worker": 1,
                                              "processes": True, "dashboard_address": None})
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=1)


@flow(name="project-batches", validate_parameters=False)
def project_batches(ws: Workspace, params: Params, batches: list[list[Any]]) -> tuple[list[Path], list[PhotoFailure]]:
    """Project every batch; with a Dask task runner the batches run on the cluster's workers."""
    futures = [project_batch.submit(ws, params, b) for b in batches]
    paths, failures = [], []
    for i, fut in enumerate(futures):
        path, failed = fut.result()
        paths += [path] if path is not None else []
        failures += failed
        checkpoint("project:batch-done")
        if i == 0:
            checkpoint("project:first-batch-done")
    return paths, failures


def run_projection(ws: Workspace, params: Params, *, dask_workers: int | None = None,
                   report: dict[str, Any] | None = None) -> tuple[list[Path], list[PhotoFailure]]:
    """Project what has no latent yet for this run key; returns the shards written and the photos
    that could not be read or decoded (pending again next run, until they are fixed). Loads no
    model when nothing is pending under a remembered run key (embedding_steps.projection_todo)."""
    found = embedding_steps.projection_todo(ws, params)
    todo, name = found.plan, found.generator
    pending = sum(len(b) for b in todo.batches)
    # a newly promoted generator has no latents yet: every photo is projected again, and the
    # operator should see how many before the night's longest stage starts
    say(f"projection with {name}: {pending} of {pending + len(todo.done)} photos have no latent for it yet"
          + ("; projecting them" if pending else ""))
    if report is not None:
        report["projection_todo"] = {"generator": name, "pending": pending, "photos": pending + len(todo.done),
                                     "run_key": found.key, "models_loaded": found.loaded, "encoder": found.encoder}
    if not todo.batches:
        return [], todo.failures
    runner = task_runner_for(params, dask_workers=dask_workers)
    paths, failures = project_batches.with_options(task_runner=runner)(ws, params, todo.batches)
    return paths, todo.failures + failures


def lineage_datasets(ws: Workspace, params: Params, record: Any, valid_latents: list[Path],
                     rows: dict[str, int]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What the run read (the DVC-tracked photos and clinical data at its revision) and wrote (the
    Feast feature views, the latents' generator named), as flows.openlineage_events describes datasets."""
    from flows import openlineage_datasets as ol

    inputs = ol.dvc_datasets(ws.data_dir, rev=record.data_rev, md5=record.data_md5)
    views = {LATENT_VIEW: LATENT_FEATURES, CLINICAL_VIEW: clinical_features(params.cohort.base)}
    outputs = ol.feature_view_datasets(project=params.features.project, service=params.features.feature_service,
                                       views=views, generator=embedding_steps.latent_generator(valid_latents),
                                       latent_view=LATENT_VIEW, rows=rows)
    return inputs, outputs


@flow(name=FLOW_NAME, log_prints=True)
def nightly_embedding(workspace: str, dask_workers: int | None = None) -> dict[str, Any]:
    """Version what arrived in the inbox, embed photos that have no latent yet, write and
    materialise features. Returns a summary; its lineage record lands in artifacts/lineage."""
    from features.lock import data_repo_lock
    from flows.lineage import run_context

    ws = Workspace.resolve(workspace)
    params = ws.load_params()
    state, repo = steps.Layout(ws).inbox_state, ws.feature_repo_dir
    with run_context(ws, params, FLOW_NAME, description=__doc__.splitlines()[0]) as record, \
            data_repo_lock(ws.data_dir, timeout_s=params.flows.lock_timeout_s, what=f"{FLOW_NAME} run {record.flow_run_id}"):
        checkpoint("lock:acquired")
        phases: dict[str, float] = {}
        mark = [time.perf_counter()]

        def phase(name: str) -> None:
            """Wall seconds since the previous phase ended: where a night's time goes."""
            now = time.perf_counter()
            phases[name] = round(phases.get(name, 0.0) + now - mark[0], 2)
            say(f"{name}: done in {now - mark[0]:.1f} s")   # a line per phase: no part of the night is silent
            mark[0] = now

        batch = scan_inbox(inbox.inbox_dir(ws.root, params.flows.inbox), state_path=state)
        for rejected in batch.rejected:  # links, FIFOs, ...: never read, reported on every run until fixed
            print(f"warning: inbox entry quarantined, not read: {rejected}")
        remote = {"url": versioning.remote_url_for(params.flows.dvc_remote, ws.root),
                  "endpoint": params.flows.dvc_endpoint_url}
        unchanged_rev = nightly_state.data_unchanged(ws, batch, remote)
        if unchanged_rev is not None:  # nothing to add, commit or push: record the commit as it is
            written: dict[str, list[str]] = {"photos": [], "prealigned": [], "clinical": []}
            checkpoint("inbox:ingested")
            outs = [o for o in steps.DATA_OUTS if (ws.data_dir / o).exists()]
            dirs, files = versioning.tracked_md5s(ws.data_dir, outs)
            record.data_rev, record.data_md5 = unchanged_rev, dirs
            record.outputs["data_files"] = len(files)
            checkpoint("data:versioned")
        else:
            prepare_data_repo(ws.data_dir, remote_url=remote["url"], endpoint_url=remote["endpoint"])
            written = ingest(batch, ws.data_dir)
            checkpoint("inbox:ingested")
            outs = [o for o in steps.DATA_OUTS if (ws.data_dir / o).exists()]
            ver = version_inputs(ws.data_dir, outs, message=f"nightly-embedding: {len(batch.photos) + len(batch.prealigned)} "
                                                            f"photo(s), {len(batch.clinical)} clinical file(s)") if outs else None
            checkpoint("data:versioned")
            if ver is not None:
                record.data_rev, record.data_md5 = ver.rev, dict(ver.outs)
                record.outputs["data_files"] = len(ver.files)
                tree = nightly_state.data_tree(ws.data_dir)
                nightly_state.update_state(ws, data={"rev": ver.rev, "remote": remote, "tree": tree})
        phase("inbox + DVC versioning")

        valid_clinical = [validate(ws, params, "clinical", p) for p in steps.clinical_files(ws)]
        checkpoint("clinical:validated")
        phase("clinical contract")

        aligned = align_photos(ws, params)
        if aligned is not None:
            validate(ws, params, "manifest", aligned.manifest_path)
        checkpoint("align:manifest-written")
        phase("alignment")

        shards, failures = run_projection(ws, params, dask_workers=dask_workers, report=record.outputs)
        for f in failures:
            print(f"warning: photo {f.photo_id} not projected, pending until fixed: {f.reason}")
        checkpoint("project:all-done")
        phase("projection")
        run_key = record.outputs["projection_todo"]["run_key"]
        valid_latents = [validate(ws, params, "latents", p)
                         for p in embedding_steps.latent_shards(ws, params, key=run_key)]
        checkpoint("latents:validated")
        phase("latent contract")
        drift = drift_steps.nightly_drift(ws, params, new_shards=shards, valid_clinical=valid_clinical,
                                          flow_run_id=str(record.flow_run_id))
        record.outputs["drift"] = {k: drift.get(k) for k in ("drift", "reasons", "checked", "why", "new_clinical_rows",
                                                             "new_latents", "mlflow_run_id") if k in drift}
        if drift["drift"]:
            say("DRIFT (the run is marked, not failed): " + "; ".join(drift["reasons"]))
        phase("drift check")

        inputs = nightly_state.feature_inputs(ws, params, record.code_version, valid_clinical, valid_latents)
        known = nightly_state.read_state(ws).get("features") or {}
        features_unchanged = known.get("inputs") == inputs and known.get("store") == nightly_state.store_stamp(ws, params)
        if features_unchanged:  # written and materialised by an earlier run: Feast is not opened
            n_clinical = n_latents = 0
            checkpoint("features:clinical-written")
            checkpoint("features:latents-written")
            phase("Feast writes")
            materialized = {LATENT_VIEW: 0, CLINICAL_VIEW: 0}
        else:
            apply_feature_repo(repo, params)
            n_clinical = write_clinical(repo, steps.read_valid_clinical(valid_clinical), params) if valid_clinical else 0
            checkpoint("features:clinical-written")
            # each new face_latent row names this run, so a score's ledger record leads to its run graph
            n_latents = write_latent_features(ws, params, valid_clinical, valid_latents,
                                              openlineage=record.openlineage or None)
            checkpoint("features:latents-written")
            phase("Feast writes")
            say("materialising the Feast features into the online store")
            with heartbeat("materialising"):
                materialized = materialize(repo, params)
            # a later run may skip this stage only if nothing is owed to the online store
            owed = nightly_state.unmaterialised_rows(ws, params)
            nightly_state.update_state(ws, features={"inputs": inputs, "store": nightly_state.store_stamp(ws, params)}
                                       if owed == 0 else None)
        checkpoint("features:materialized")
        phase("materialisation")
        mark_inbox_done(batch, state_path=state)
        checkpoint("inbox:marked-done")
        phase("inbox + DVC versioning")
        record.input_datasets, record.output_datasets = lineage_datasets(ws, params, record, valid_latents,
                                                                         {CLINICAL_VIEW: n_clinical, LATENT_VIEW: n_latents})
        record.outputs.update({
            "new_photos": len(written["photos"]) + len(written["prealigned"]),
            "new_clinical_files": len(written["clinical"]),
            "inbox_quarantined": [str(r) for r in batch.rejected],
            "aligned": aligned.aligned if aligned else 0, "quarantined": aligned.quarantined if aligned else 0,
            "alignment_reused": aligned.reused if aligned else 0,
            "projection_batches": len(shards), "projection_failures": [f"{f.photo_id}: {f.reason}" for f in failures],
            "clinical_rows_written": n_clinical, "latent_rows_written": n_latents, "materialized": materialized,
            "data_repository_unchanged": unchanged_rev is not None, "feature_store_unchanged": features_unchanged,
            "phases_s": phases,
        })
        return {"flow_run_id": record.flow_run_id, "data_rev": record.data_rev, **record.outputs}
