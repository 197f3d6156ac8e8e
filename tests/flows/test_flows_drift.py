"""The nightly drift check: tonight's new patients against the champion's training set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows import drift_steps
from ground.workspace import Workspace

D = 512


@pytest.fixture(scope="module")
def cohort():
    from features.cohort import import_cohort
    from ground.config import load_params
    from ground.workspace import REPO_ROOT

    params = load_params(REPO_ROOT / "params.yaml")
    c = params.cohort
    df = import_cohort("gbsg2", seed=0, admission_start=c.admission_start, admission_span_days=c.admission_span_days,
                       record_lag_days=c.record_lag_days)
    rng = np.random.default_rng(0)
    spread = np.linspace(0.2, 2.0, D)              # an uneven latent spread, as a generator's is
    df["latent"] = list(rng.normal(size=(len(df), D)) * spread)
    return params, df.reset_index(drop=True), spread


def _split(df: pd.DataFrame, n_new: int = 150) -> tuple[pd.DataFrame, pd.DataFrame]:
    return df.iloc[n_new:].reset_index(drop=True), df.iloc[:n_new].reset_index(drop=True)


def test_a_night_like_the_training_set_is_not_drift(cohort):
    params, df, _ = cohort
    reference, new = _split(df)
    report = drift_steps.drift_report(reference, new, np.stack(new["latent"]), params)
    assert report["drift"] is False, report["reasons"]
    assert set(report["checked"]) >= {"clinical", "latent"}
    assert report["new_clinical_rows"] == 150 and report["new_latents"] == 150
    assert abs(report["latent"]["mean_shift_sd"]) < 0.5


def test_a_shifted_night_is_marked_drift_naming_what_moved(cohort):
    params, df, spread = cohort
    reference, new = _split(df)
    new = new.assign(age=new["age"] + 15)                         # an older intake
    direction = np.zeros(D)
    direction[-1] = 1.0
    latents = np.stack(new["latent"]) + direction * spread[-1]     # faces moved 1 SD along one axis
    report = drift_steps.drift_report(reference, new, latents, params)
    assert report["drift"] is True
    assert "age" in report["clinical"]["drifted"]
    assert report["latent"]["mean_shift_sd"] == pytest.approx(1.0, abs=0.3)
    text = " ".join(report["reasons"])
    assert "age" in text and "latent mean moved" in text


def test_no_champion_means_no_check_and_a_quiet_night_logs_nothing(tmp_path, cohort):
    params, df, _ = cohort
    ws = Workspace.create(tmp_path / "ws")
    report = drift_steps.nightly_drift(ws, ws.load_params(), new_shards=[], valid_clinical=[])
    assert report["drift"] is False and "no champion yet" in report["why"]
    (ws.artifacts_dir / "training").mkdir(parents=True)
    df.to_parquet(ws.artifacts_dir / "training" / "training_set.parquet")
    assert drift_steps.save_champion_reference(ws, {"promoted": False}) is None       # kept the old champion
    assert drift_steps.save_champion_reference(ws, {"promoted": True, "challenger_version": "3"}) is not None
    report = drift_steps.nightly_drift(ws, ws.load_params(), new_shards=[], valid_clinical=[])
    assert report == {"checked": [], "drift": False, "reasons": [], "why": "no new patients or latents tonight"}


def test_a_shifted_night_from_files_is_logged_to_mlflow(tmp_path, cohort):
    from mlflow import MlflowClient

    from training.tracking import tracking_uri_for

    params, df, spread = cohort
    ws = Workspace.create(tmp_path / "ws")
    reference, new = _split(df)
    (ws.artifacts_dir / "training").mkdir(parents=True)
    reference.to_parquet(ws.artifacts_dir / "training" / "training_set.parquet")
    drift_steps.save_champion_reference(ws, {"promoted": True, "challenger_version": "1", "split_id": "abc"})
    valid = tmp_path / "valid.csv"
    new.drop(columns=["latent"]).assign(age=new["age"] + 15).to_csv(valid, index=False)
    shard = tmp_path / "shard.npz"
    np.savez(shard, latent=np.stack(new["latent"]).astype(np.float32) + 3.0 * spread)
    report = drift_steps.nightly_drift(ws, ws.load_params(), new_shards=[shard], valid_clinical=[valid],
                                       flow_run_id="0123456789")
    assert report["drift"] is True and report["reference"]["champion_version"] == "1"
    client = MlflowClient(tracking_uri=tracking_uri_for(ws.load_params(), ws.mlflow_dir))
    run = client.get_run(report["mlflow_run_id"])
    assert run.data.tags["drift"] == "true" and run.data.tags["flow_run_id"] == "0123456789"
    assert run.data.metrics["drift"] == 1.0 and run.data.metrics["mean_shift_sd"] > 0.5
    logged = json.loads(Path(client.download_artifacts(run.info.run_id, "drift.json", str(tmp_path))).read_text())
    assert logged["drift"] is True and logged["new_latents"] == 150
