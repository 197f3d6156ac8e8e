"""Training steps: the point-in-time training set from Feast, then training/'s functions.

The entity dataframe is built from the valid clinical records: one row per patient, the
reference time being the later of photo and record time (both features exist by then),
with the survival label carried along (never a feature).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from facesurv.components import components
from flows.steps import Layout, read_valid_clinical
from ground.atomic import atomic_path
from ground.config import Params
from ground.errors import DataError
from ground.workspace import Workspace


def training_dir(ws: Workspace) -> Path:
    return ws.artifacts_dir / "training"


def valid_clinical_files(ws: Workspace) -> list[Path]:
    d = Layout(ws).contracts / "clinical"
    return sorted(d.glob("*/valid.csv")) if d.is_dir() else []


def contract_sources(ws: Workspace) -> list[dict[str, Any]]:
    """The contract result of every clinical file the training set is read from (valid_clinical_files):
    its source, the sha256 of the rows training reads, and whether its contract run passed and
    finished (`done` is written last: a run killed or failed midway leaves none). What the
    promotion's contracts gate checks (training.registry.record_contracts)."""
    import hashlib

    sources = []
    for valid in valid_clinical_files(ws):
        run = valid.parent
        try:
            summary = json.loads((run / "results.json").read_text(encoding="utf-8")).get("summary") or {}
        except (OSError, ValueError, AttributeError):
            summary = {}
        done = run / "done"
        with open(valid, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
        sources.append({"kind": "clinical", "name": run.name,
                        "source": done.read_text(encoding="utf-8").strip() if done.is_file() else "",
                        "sha256": digest, "rows": summary.get("rows"), "failing": summary.get("failing"),
                        "passed": bool(summary.get("passed")) and done.is_file()})
    return sources


def entity_frame(ws: Workspace) -> Any:
    import pandas as pd

    files = valid_clinical_files(ws)
    if not files:
        raise DataError(f"{ws.root}: no validated clinical records; run the nightly-embedding flow first")
    df = read_valid_clinical(files)
    ref = pd.concat([pd.to_datetime(df["photo_taken_at"], utc=True, format="ISO8601"),
                     pd.to_datetime(df["record_known_at"], utc=True, format="ISO8601")], axis=1).max(axis=1)
    ent = pd.DataFrame({"patient_id": df["patient_id"].astype(str), "event_timestamp": ref,
                        "time_days": df["time_days"], "event": df["event"]})
    # a corrected record supersedes the older one of the same patient
    return ent.sort_values("event_timestamp").drop_duplicates("patient_id", keep="last").reset_index(drop=True)


def model_frame(frame: Any, base: str) -> Any:
    """The columns training takes (INTERFACES): ids, covariates, the latent and the label.

    Feast also returns the latent's provenance (losses, generator hash, ...); those describe
    how a feature was made and must not become covariates.
    """
    from features.cohort import covariate_columns
    from ground.types import CLINICAL_CORE_COVARIATES, SURVIVAL_COLUMNS

    numeric, categorical = covariate_columns(base)
    keep = ["patient_id", *CLINICAL_CORE_COVARIATES, *numeric, *categorical, "latent", *SURVIVAL_COLUMNS]
    return frame[[c for c in keep if c in frame.columns]]


def build_training_set(ws: Workspace, params: Params) -> Path:
    """Feast's point-in-time training set -> artifacts/training/training_set.parquet (+ report)."""
    from features.store import training_set

    frame, report = training_set(ws.feature_repo_dir, entity_frame(ws), params)
    out = training_dir(ws)
    summary = report.to_dict() if hasattr(report, "to_dict") else {
        k: v for k, v in vars(report).items() if isinstance(v, int | float | str)}
    with atomic_path(out / "training_set_report.json") as tmp:
        tmp.write_text(json.dumps(summary, default=str, indent=1))
    with atomic_path(out / "training_set.parquet") as tmp:
        model_frame(frame, params.cohort.base).to_parquet(tmp, index=False)
    return out / "training_set.parquet"


# --- training/ (issue 6) -------------------------------------------------------------------------

def train(ws: Workspace, params: Params, frame_path: Path, lineage: dict[str, Any]) -> Any:
    """training.pipeline.train: fit and evaluate on the frozen split (training.fit), then track
    in MLflow and register every model with alias `challenger` (training.record). The data
    versions it logs come from `lineage`."""
    import pandas as pd

    from flows.progress import say
    from training.pipeline import train as train_

    versions = {f"md5.{k}": v for k, v in (lineage.get("data_md5") or {}).items()}
    versions.update({"rev": lineage.get("data_rev") or "unversioned", "code": lineage.get("code_version", ""),
                     "params_hash": lineage.get("params_hash", "")})
    result = train_(pd.read_parquet(frame_path), params=params, tracking_uri=components(ws, params).tracking_uri,
                    data_versions=versions, feature_service=params.features.feature_service,
                    split_path=ws.artifacts_dir / "splits" / "test_split.json",
                    artifact_root=ws.mlflow_dir / "artifacts", out_dir=training_dir(ws) / "figures",
                    register=True, data_source=str(frame_path), progress=say)
    record_sources(ws, params, result)
    return result


def record_sources(ws: Workspace, params: Params, result: Any) -> None:
    """Tag the served version with the contract results of the files its training set came from."""
    from training.registry import record_contracts

    if result.served_version:
        record_contracts(tracking_uri=components(ws, params).tracking_uri, model_name=result.served_model_name,
                         version=result.served_version, sources=contract_sources(ws))


def rescore_after_promotion(ws: Workspace, params: Params, decision: dict[str, Any], *,
                            requested_by: str) -> dict[str, Any] | None:
    """serving.bulk.rescore_all over every patient of the feature store, through the API's own scorer,
    when this run promoted and serving.rescore_after_promotion asks for it; its summary, else None."""
    if not (params.serving.rescore_after_promotion and decision.get("promoted")):
        return None
    from facesurv.components import rescore_every_patient
    from flows.progress import Progress

    bar: Progress | None = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        bar = bar or Progress("re-scoring every patient with the new champion", total=total, unit="patients")
        bar.update(done)

    try:
        return rescore_every_patient(ws, params, requested_by=requested_by, progress=progress)
    finally:
        if bar is not None:
            bar.close()


def write_metrics(ws: Workspace, result: Any) -> dict[str, Any]:
    """artifacts/training/metrics.json: the evaluation per model (what `dvc metrics show` prints)."""
    table = result.table1
    # C-index, Uno's C, IBS and the Brier score at each horizon, each with its CI (the report's Table 1)
    keep = [c for c in table.columns if str(c).startswith(("c_index", "uno_c", "ibs", "brier_"))]
    metrics = {str(r["model"]): {k: (None if r[k] != r[k] else float(r[k])) for k in keep}
               for r in table.to_dict("records")}
    # the sha256 of each registered version's artifact manifest: what every later load is checked against
    summary = {"models": metrics, "parent_run_id": result.parent_run_id,
               "model_versions": dict(result.model_versions), "served_model_uri": result.served_model_uri,
               "model_artifacts_sha256": dict(result.artifact_digests)}
    with atomic_path(training_dir(ws) / "metrics.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1, sort_keys=True))
    return summary


def promote(ws: Workspace, params: Params) -> dict[str, Any]:
    """training.registry.promote: move `champion` when the challenger passes every gate (training.gates)."""
    from training.gates import GatePolicy
    from training.registry import promote as promote_

    r = params.registry
    decision = promote_(tracking_uri=components(ws, params).tracking_uri, model_name=r.model_name,
                        policy=GatePolicy.from_params(params), experiment=r.experiment,
                        artifact_root=ws.mlflow_dir / "artifacts", require_approval=r.require_approval)
    out = decision.to_dict() if hasattr(decision, "to_dict") else dict(vars(decision))
    # the new champion's training set: what every later night's new patients are compared with (drift)
    from flows.drift_steps import save_champion_reference

    save_champion_reference(ws, out)
    return out
