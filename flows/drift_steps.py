"""The nightly drift check: tonight's new patients against the current champion's training set.

    report = nightly_drift(ws, params, new_shards=shards, flow_run_id=record.flow_run_id)

The reference is the training set the champion was trained on, kept by the train-and-promote
flow when it promotes (`save_champion_reference`). "New" clinical rows are the valid rows of
patients the reference does not hold; new latents are the ones projected tonight. The tests
and the verdict are features.drift's; thresholds come from params.yaml's drift section. A
drifted night is marked in the flow's summary, its lineage record and an MLflow run of the
`<registry.experiment>-nightly` experiment; it never fails the flow.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from facesurv.components import components
from flows.steps import read_valid_clinical
from ground.atomic import atomic_path
from ground.config import Params
from ground.workspace import Workspace

REFERENCE = "champion_reference.parquet"


def reference_path(ws: Workspace) -> Path:
    return ws.artifacts_dir / "training" / REFERENCE


def save_champion_reference(ws: Workspace, decision: dict[str, Any]) -> Path | None:
    """After a promotion, keep the training set the new champion was trained on (and its version)."""
    if not decision.get("promoted"):
        return None
    src = ws.artifacts_dir / "training" / "training_set.parquet"
    if not src.is_file():
        return None
    with atomic_path(reference_path(ws)) as tmp:
        shutil.copyfile(src, tmp)
    with atomic_path(reference_path(ws).with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps({"champion_version": decision.get("challenger_version"),
                                   "split_id": decision.get("split_id"), "source": str(src)}, default=str))
    return reference_path(ws)


def drift_report(reference: Any, new_clinical: Any, new_latents: np.ndarray | None, params: Params) -> dict[str, Any]:
    """features.drift on the reference frame (patient_id, covariates, latent) against tonight's
    new clinical rows (a frame) and latents ((M, 512) or None). Pure: frames in, a dict out."""
    from features.cohort import covariate_columns
    from features.drift import clinical_drift, drift_verdict, latent_drift

    d = params.drift
    numeric, categorical = covariate_columns(params.cohort.base)
    numeric = tuple(c for c in ("age", *numeric) if c in reference.columns and c in new_clinical.columns)
    categorical = tuple(c for c in ("sex", "cancer_type", *categorical)
                        if c in reference.columns and c in new_clinical.columns)
    clinical = (clinical_drift(reference, new_clinical, numeric=numeric, categorical=categorical, alpha=d.clinical_alpha)
                if len(new_clinical) >= 2 else None)
    latent = None
    if new_latents is not None and len(new_latents) >= 2 and "latent" in reference.columns:
        ref = np.stack([np.asarray(v, dtype=np.float64) for v in reference["latent"] if v is not None])
        latent = latent_drift(ref, np.asarray(new_latents, dtype=np.float64), permutations=d.permutations,
                              seed=params.training.seed)
    verdict = drift_verdict(clinical, latent, max_latent_shift_sd=d.max_latent_shift_sd, mmd_alpha=d.mmd_alpha)
    return {**verdict, "clinical": clinical, "latent": latent,
            "new_clinical_rows": int(len(new_clinical)), "new_latents": 0 if new_latents is None else int(len(new_latents))}


def nightly_drift(ws: Workspace, params: Params, *, new_shards: list[Path], valid_clinical: list[Path],
                  flow_run_id: str = "") -> dict[str, Any]:
    """Read the reference and tonight's rows, run drift_report, log it to MLflow; see the module doc."""
    import pandas as pd

    path = reference_path(ws)
    if not path.is_file():
        return {"checked": [], "drift": False, "reasons": [], "why": "no champion yet: nothing to compare with"}
    reference = pd.read_parquet(path)
    known = set(reference["patient_id"].astype(str))
    clinical = read_valid_clinical(valid_clinical) if valid_clinical else pd.DataFrame(columns=["patient_id"])
    clinical = clinical[~clinical["patient_id"].astype(str).isin(known)]
    latents = [np.load(s, allow_pickle=False)["latent"] for s in new_shards]
    new_latents = np.concatenate([x.reshape(len(x), -1) for x in latents]) if latents else None
    if len(clinical) == 0 and new_latents is None:   # a quiet night: nothing new, nothing logged
        return {"checked": [], "drift": False, "reasons": [], "why": "no new patients or latents tonight"}
    report = drift_report(reference, clinical, new_latents, params)
    report["reference"] = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").is_file() else {}
    report["mlflow_run_id"] = _log(ws, params, report, flow_run_id)
    return report


def _log(ws: Workspace, params: Params, report: dict[str, Any], flow_run_id: str) -> str:
    from mlflow import MlflowClient

    from training.runs import open_run
    from training.tracking import clean_metrics, ensure_experiment, quiet_environment

    quiet_environment()
    client = MlflowClient(tracking_uri=components(ws, params).tracking_uri)
    exp = ensure_experiment(client, f"{params.registry.experiment}-nightly", ws.mlflow_dir / "artifacts")
    latent = report.get("latent") or {}
    metrics = {"drift": float(report["drift"]), "new_clinical_rows": report["new_clinical_rows"],
               "new_latents": report["new_latents"], "clinical_features_drifted":
               len((report.get("clinical") or {}).get("drifted", []))}
    metrics.update({k: latent[k] for k in ("mean_shift_sd", "mmd2", "mmd_p_value") if latent.get(k) is not None})
    with open_run(client, experiment_id=exp, name=f"drift-{flow_run_id[:8]}") as run, \
            tempfile.TemporaryDirectory(prefix="facesurv-drift-") as tmp:
        run.set_tags({"facesurv.kind": "drift", "drift": str(report["drift"]).lower(), "flow_run_id": flow_run_id})
        run.log_metrics(clean_metrics(metrics))
        out = Path(tmp) / "drift.json"
        out.write_text(json.dumps(report, indent=1, default=str))
        run.log_artifact(out)
    return run.run_id
