"""The two flows end to end: nightly embedding, then training and promotion with lineage."""

from __future__ import annotations

import json

import pytest

from tests.flows.flows_helpers import fill_inbox, tiny_params


@pytest.mark.slow
def test_nightly_then_train_and_promote(workspace, prefect_api) -> None:
    from flows.nightly_embedding import nightly_embedding
    from flows.train_and_promote import train_and_promote

    tiny_params(workspace.root, contracts={"max_projection_loss": 100.0}, projection={"steps": 2, "batch_size": 32},
                training={"deepsurv_epochs": 3, "fusion_folds": 2}, evaluation={"bootstrap": 5},
                serving={"rescore_after_promotion": True})
    ids = fill_inbox(workspace.root, start=0, count=60)
    first = nightly_embedding(str(workspace.root))
    assert first["new_photos"] == 60 and first["latent_rows_written"] == 60 and first["clinical_rows_written"] == 60
    assert first["materialized"] == {"face_latent": 60, "clinical": 60}
    todo = first["projection_todo"]
    assert todo["generator"].startswith("random-init stand-in ") and (todo["pending"], todo["photos"]) == (60, 60)
    again = nightly_embedding(str(workspace.root))  # nothing new: nothing recomputed or rewritten
    assert (again["projection_todo"]["pending"], again["projection_todo"]["photos"]) == (0, 60)
    assert again["new_photos"] == 0 and again["projection_batches"] == 0 and again["latent_rows_written"] == 0
    assert again["data_rev"] == first["data_rev"]

    trained = train_and_promote(str(workspace.root))
    assert trained["promotion"]["promoted"] is True  # no champion yet
    assert {"coxph_clinical", "fusion"} <= set(trained["metrics"])
    lineage = json.loads((workspace.artifacts_dir / "lineage" / "latest-train-and-promote.json").read_text())
    assert lineage["data_rev"] == first["data_rev"] and lineage["params_hash"] == workspace.load_params().params_hash
    assert lineage["data_md5"]["prealigned"].endswith(".dir") and lineage["code_version"]
    digests = lineage["outputs"]["model_artifacts_sha256"]
    assert digests and all(len(d) == 64 and int(d, 16) >= 0 for d in digests.values())
    assert len(ids) == 60

    # the promotion re-scored every patient through the API's scorer, each score in the ledger
    from facesurv.components import open_scoring_ledger

    rescored = trained["rescored"]
    assert (rescored["patients"], rescored["scored"], rescored["failed"]) == (60, 60, 0)
    assert rescored["model"]["version"] == trained["promotion"]["challenger_version"]
    ledger = open_scoring_ledger(workspace, workspace.load_params())
    try:
        records = [e.record for e in ledger.entries()]
        assert ledger.verify().ok
    finally:
        ledger.close()
    assert len(records) == 60 and len({r["patient_id"] for r in records}) == 60
    assert {r["requested_by"] for r in records} == {f"train-and-promote:{trained['flow_run_id']}"}
