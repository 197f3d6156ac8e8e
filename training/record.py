"""Recording a fitted training in MLflow: runs, figures, logged models, registration.

    result = record_training(fitted, params=params, tracking_uri=uri, data_versions={...},
                             split_path=..., artifact_root=ws.mlflow_dir / "artifacts")

One parent run per training (`train-<split_id>`: tags, the training params, the dataset
inputs, the split, table1.json) with a nested run per fitted model: its params, metrics,
figures and evaluation.json, the model logged as a models-from-code pyfunc with its artifact
manifest and, when registering, a new model version aliased `challenger`. Before anything is
registered the current champion is re-scored on these test patients (training.champion) and
the result tagged on the new served version; both models' per-patient predictions on those
patients (promotion/paired_scores.json in the served model's run, named by the version's
`promotion.paired_scores` tags) are what promotion's paired gates (training.gates) compare. Everything goes through one MlflowClient of
`tracking_uri`; MLflow's active run is never used and its process-wide tracking URI is left as
it was (registration needs it for one call and restores it: training.registry.register_version).
A failure inside marks the runs open at that moment FAILED.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.base import SurvivalModel
from training.fit import SERVED, Fitted
from training.metrics import Evaluation
from training.runs import RunLog, open_run
from training.splits import FrozenSplit
from training.tracking import clean_metrics


@dataclass
class TrainResult:
    table1: pd.DataFrame
    parent_run_id: str
    split: FrozenSplit
    evaluations: dict[str, Evaluation]
    models: dict[str, SurvivalModel]
    model_versions: dict[str, str] = field(default_factory=dict)     # registered name -> version
    served_model_name: str = ""
    served_version: str | None = None
    health_direction: np.ndarray | None = None
    champion_comparison: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, list[Path]] = field(default_factory=dict)
    # registered name -> sha256 of the manifest of its logged files (training.integrity)
    artifact_digests: dict[str, str] = field(default_factory=dict)

    @property
    def served_model_uri(self) -> str:
        return f"models:/{self.served_model_name}/{self.served_version}" if self.served_version else ""


def registered_name(model_name: str, model: str) -> str:
    """The registry name of a trained model: the fusion is `model_name` (served), others `<model_name>-<model>`."""
    return model_name if model == SERVED else f"{model_name}-{model.replace('_', '-')}"


def record_training(fitted: Fitted, *, params: Any, tracking_uri: str, data_versions: Mapping[str, str] | None = None,
                    feature_service: str | None = None, split_path: Path | None = None,
                    artifact_root: Path | None = None, out_dir: Path | None = None, register: bool = True,
                    data_source: str | None = None) -> TrainResult:
    """Track `fitted` in the store at `tracking_uri` and (register=True) register every evaluated model.

    Args:
        data_versions: DVC md5s / revisions, tagged on the runs and the model versions.
        feature_service: the Feast feature service the data came from (default params.features').
        split_path: where the frozen split is kept (named in the dataset inputs).
        artifact_root: the experiment's artifact location when this creates the experiment.
        out_dir: where the figures are kept (default: a temporary directory, logged then removed).
        data_source: the data's path or URI for the dataset inputs (default split_path, else cwd).
    """
    from mlflow import MlflowClient

    from training.champion import score_champion
    from training.tracking import ensure_experiment, quiet_environment

    quiet_environment()
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    exp_id = ensure_experiment(client, params.registry.experiment, artifact_root)
    versions = {k: str(v) for k, v in (data_versions or {}).items()}
    split = fitted.split
    reg_name = params.registry.model_name
    result = TrainResult(fitted.table1, "", split, dict(fitted.evaluations), dict(fitted.models),
                         served_model_name=reg_name, health_direction=fitted.health_direction)
    if register and SERVED in fitted.models:
        result.champion_comparison = score_champion(client, reg_name, fitted.train_df, fitted.test_df,
                                                    params=params, tracking_uri=tracking_uri,
                                                    horizon=_gate_horizon(fitted, params))
    common = {"split_id": split.split_id, "feature_service": feature_service or params.features.feature_service,
              "params_hash": params.params_hash, "data_versions": str(sorted(versions.items()))}
    with tempfile.TemporaryDirectory(prefix="facesurv-train-") as tmp:
        work = Path(tmp)
        rec = _Recorder(client, fitted, params, result, work=work,
                        figures=Path(out_dir) if out_dir is not None else work / "figures",
                        register=register, version_tags=common)
        with open_run(client, experiment_id=exp_id, name=f"train-{split.split_id}") as parent:
            result.parent_run_id = parent.run_id
            rec.parent(parent, data_versions=versions, split_path=split_path, data_source=data_source)
            for name in fitted.models:
                with open_run(client, experiment_id=exp_id, name=name, parent=parent) as run:
                    rec.model(run, name)
            parent.log_table(fitted.table1.replace({np.nan: None}), "table1.json")
            rows = fitted.table1.to_dict("records")
            parent.log_metrics(clean_metrics({f"{r['model']}.{k}": r[k] for r in rows for k in ("c_index", "uno_c", "ibs")}))
    return result


@dataclass
class _Recorder:
    """What every run of one training writes, and where its results go."""

    client: Any
    fitted: Fitted
    params: Any
    result: TrainResult
    work: Path
    figures: Path
    register: bool
    version_tags: dict[str, str]
    version_tags_served: dict[str, str] = field(default_factory=dict)

    def parent(self, run: RunLog, *, data_versions: dict[str, str], split_path: Path | None,
               data_source: str | None) -> None:
        from training.tracking import log_datasets

        f, p = self.fitted, self.params
        run.set_tags({"facesurv.kind": "training", **self.version_tags,
                      **{f"dvc.{k}": v for k, v in data_versions.items()}, "profile": p.profile})
        run.log_params({f"training.{k}": v for k, v in p.to_dict()["training"].items()})
        run.log_params({"evaluation.bootstrap": p.evaluation.bootstrap, "n_train": len(f.train_df),
                        "n_test": len(f.test_df), "has_latent": f.has_latent})
        log_datasets(run, train_df=f.train_df, test_df=f.test_df, feature_service=self.version_tags["feature_service"],
                     data_versions=data_versions, split_id=f.split.split_id,
                     split_source=str(split_path) if split_path else "",
                     source=str(data_source or split_path or Path.cwd()))
        run.log_json(json_split(f.split), "split/test_split.json")

    def model(self, run: RunLog, name: str) -> None:
        """One fitted model's nested run: a fusion-only member is only named as such."""
        model = self.fitted.models[name]
        if name not in self.fitted.evaluations:
            run.set_tags({"facesurv.role": "fusion member only"})
            return
        if name == SERVED:
            run.log_json(model.describe(), "fusion.json")
        self._evaluated(run, name, model, self.fitted.evaluations[name])

    def _evaluated(self, run: RunLog, name: str, model: SurvivalModel, ev: Evaluation) -> None:
        from training.champion import comparison_tags
        from training.integrity import DIGEST_TAG, manifest_tags
        from training.plots import evaluation_figures
        from training.pyfunc import log_served_model, served_requirements
        from training.registry import register_version
        from training.table1 import features_of

        f = self.fitted
        run.set_tags({"facesurv.model": name, "features": features_of(name, model)})
        run.log_params({k: (str(v)[:490]) for k, v in model.describe().items()})
        run.log_metrics(clean_metrics(ev.flat()))
        figs = evaluation_figures(name, model, ev, f.test_df, self.figures / name)
        self.result.figures[name] = figs
        for fig in figs:
            run.log_artifact(fig, "figures")
        run.log_json({"subgroups": ev.subgroups.to_dict(orient="records"),
                      "calibration": ev.calibration.to_dict(orient="records"),
                      "calibration_horizon_days": ev.calibration_horizon}, "evaluation.json")
        if name == "coxnet_latent" and f.health_direction is not None:
            np.save(self.work / "health_direction.npy", f.health_direction)
            run.log_artifact(self.work / "health_direction.npy")
        uri, files = log_served_model(self.client, run.run_id, name, model, example_df=f.train_df,
                                      horizons=[int(h) for h in self.params.training.horizons_days],
                                      workdir=self.work, pip_requirements=served_requirements())
        manifest = manifest_tags(files)
        # the run keeps the manifest too (lineage); the registry's copy is the one loads trust
        run.log_json({"model_uri": uri, "files": files}, "artifact_manifest.json")
        run.set_tags({DIGEST_TAG: manifest[DIGEST_TAG]})
        reg = registered_name(self.params.registry.model_name, name)
        self.result.artifact_digests[reg] = manifest[DIGEST_TAG]
        if not self.register:
            return
        served = name == SERVED
        if served:
            self.version_tags_served = self._paired_scores(run, model)
        tags = {**self.version_tags, **(comparison_tags(self.result.champion_comparison) if served else {}),
                **(self.version_tags_served if served else {}),
                "facesurv.model": name, "run_id": run.run_id, "needs_latent": str(model.needs_latent),
                **{f"test.{k}": v for k, v in ev.point.items() if math.isfinite(v)}, **manifest}
        version = register_version(self.client, name=reg, model_uri=uri, run_id=run.run_id, tags=tags,
                                   description=f"facesurv {name} survival model")
        self.result.model_versions[reg] = version
        if served:
            self.result.served_version = version


    def _paired_scores(self, run: RunLog, model: SurvivalModel) -> dict[str, str]:
        """The served model's and the champion's per-patient predictions on these test patients,
        logged with the run and named (path, sha256) by model-version tags for promotion's gates."""
        import hashlib

        from training.gates import (
            PAIRED_SCORES_DIR,
            PAIRED_SCORES_FILE,
            PAIRED_SCORES_TAG,
            PairedScores,
        )
        from training.subgroups import group_columns

        f = self.fitted
        test = f.test_df
        horizon = _gate_horizon(f, self.params)
        risk = np.asarray(model.predict_risk(test), dtype=np.float64)
        comp = self.result.champion_comparison
        has_champ = "risk" in comp and "survival" in comp
        groups = {k: pd.Series(v).astype(object).to_numpy() for k, v in group_columns(test).items()}
        paired = PairedScores(
            time=test["time_days"].to_numpy(np.float64), event=test["event"].to_numpy().astype(bool),
            horizon_days=horizon, challenger_risk=risk,
            challenger_survival=np.asarray(model.survival_from_risk(risk, np.array([horizon])), np.float64)[:, 0],
            champion_risk=comp["risk"] if has_champ else None, champion_survival=comp["survival"] if has_champ else None,
            groups=groups, champion_version=comp.get("version") if has_champ else None,
            patient_ids=tuple(test["patient_id"].astype(str)) if "patient_id" in test else ())
        text = paired.to_json()
        path = self.work / PAIRED_SCORES_FILE
        path.write_text(text, encoding="utf-8")
        run.log_artifact(path, PAIRED_SCORES_DIR)
        return {PAIRED_SCORES_TAG: f"{PAIRED_SCORES_DIR}/{PAIRED_SCORES_FILE}",
                f"{PAIRED_SCORES_TAG}_sha256": hashlib.sha256(text.encode()).hexdigest()}


def _gate_horizon(fitted: Fitted, params: Any) -> float:
    from training.gates import calibration_horizon

    return calibration_horizon(params.training.horizons_days, test_time=fitted.test_df["time_days"].to_numpy(),
                               train_time=fitted.train_df["time_days"].to_numpy())


def json_split(split: FrozenSplit) -> dict[str, Any]:
    return dict(json.loads(split.to_json()))
