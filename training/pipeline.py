"""One training: split, fit every configured model and the fusion, evaluate, track, register.

    result = train(df, params=params, tracking_uri=uri, data_versions={...}, feature_service="prognosis_v1",
                   split_path=ws.artifacts_dir / "splits" / "test_split.json")

The input frame has one row per patient: patient_id, age, sex, cancer_type, the base's
covariates, optionally `latent` (512 floats), time_days and event. Every check on the input
runs before the MLflow run starts; anything that still fails inside marks the run FAILED.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ground.errors import DataError
from ground.types import check_survival_target
from training.base import SurvivalModel
from training.metrics import Evaluation, evaluate, risk_tertiles
from training.models import FEATURES, factory, uses_latent
from training.preprocess import (
    LATENT_COLUMN,
    Preprocessor,
    check_events_per_feature,
    clinical_feature_columns,
)
from training.splits import FrozenSplit, split_frame

SERVED = "fusion"


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


def has_latent(df: pd.DataFrame) -> bool:
    return LATENT_COLUMN in df.columns and bool(df[LATENT_COLUMN].notna().any())


def validate_training_frame(df: pd.DataFrame, *, params: Any, base: str | None = None
                            ) -> tuple[tuple[str, ...], tuple[str, ...], list[str], list[str]]:
    """Check a training frame before anything is recorded.

    Returns (numeric, categorical, models, fusion_members) for this data.
    Raises DataError (one line) for: an empty frame, a bad target (all censored, non-positive
    or missing times), missing or NaN covariates, and too few events for the clinical model.
    """
    if df is None or len(df) == 0:
        raise DataError("training data is empty (0 rows); import a cohort or pass --data FILE")
    for col in ("patient_id", "time_days", "event"):
        if col not in df.columns:
            raise DataError(f"training data lacks the column {col!r}; it needs patient_id, time_days and event")
    _, event = check_survival_target(df["time_days"].to_numpy(), df["event"].to_numpy(), what="training data")
    if base is None and _has_base_columns(df, params.cohort.base):
        base = params.cohort.base  # the workspace's cohort declares its covariates; trust that over dtypes
    numeric, categorical = clinical_feature_columns(df, base=base)
    latent = has_latent(df)
    Preprocessor(numeric, categorical, use_latent=latent).fit(df, what="training data")
    t = params.training
    models = [m for m in t.models if latent or not uses_latent(m)]
    members = [m for m in t.fusion_members if latent or not uses_latent(m)]
    if not models and not members:
        raise DataError("no model can be trained: training.models lists only latent models and the data has no "
                        "`latent` column; add clinical models or project the photos")
    if "coxph_clinical" in models or "coxph_clinical" in members:
        p = Preprocessor(numeric, categorical).fit(df).n_features
        expected_train_events = int(event.sum() * (1 - t.test_fraction))
        check_events_per_feature(expected_train_events, p, minimum=t.min_events_per_feature, model="coxph_clinical")
    return numeric, categorical, models, members


def _has_base_columns(df: pd.DataFrame, base: str) -> bool:
    from features.cohort import COHORTS, covariate_columns

    if base not in COHORTS:
        return False
    numeric, categorical = covariate_columns(base)
    return all(c in df.columns for c in (*numeric, *categorical))


def _requirements() -> list[str]:
    reqs = []
    for dist in ("mlflow", "scikit-survival", "pycox", "torchtuples", "torch", "safetensors", "pandas", "numpy",
                 "scikit-learn"):
        try:
            reqs.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs


def _evaluate(model: SurvivalModel, train_df: pd.DataFrame, test_df: pd.DataFrame, *, params: Any,
              bootstrap: int | None = None) -> Evaluation:
    risk = model.predict_risk(test_df)
    return evaluate(train_time=train_df["time_days"].to_numpy(), train_event=train_df["event"].to_numpy(),
                    time=test_df["time_days"].to_numpy(), event=test_df["event"].to_numpy(), risk=risk,
                    survival=lambda days: model.survival_from_risk(risk, days),
                    horizons=params.training.horizons_days,
                    groups=test_df["cancer_type"].to_numpy() if "cancer_type" in test_df else None,
                    bootstrap=params.evaluation.bootstrap if bootstrap is None else bootstrap,
                    seed=params.evaluation.seed)


def _figures(name: str, model: SurvivalModel, ev: Evaluation, train_df: pd.DataFrame, test_df: pd.DataFrame,
             out: Path) -> list[Path]:
    from training import plots

    out.mkdir(parents=True, exist_ok=True)
    risk = model.predict_risk(test_df)
    tert = risk_tertiles(risk, model.train_risk_sorted_)
    figs = [
        plots.calibration_plot(ev.calibration, ev.calibration_horizon, out / f"{name}_calibration.png",
                               title=f"{name}: calibration"),
        plots.km_by_tertile(test_df["time_days"].to_numpy(float), test_df["event"].to_numpy().astype(bool), tert,
                            out / f"{name}_km_tertiles.png", title=f"{name}: KM by risk tertile"),
    ]
    if len(ev.subgroups):
        figs.append(plots.subgroup_plot(ev.subgroups, out / f"{name}_cindex_by_cancer_type.png",
                                        title=f"{name}: C-index per cancer type"))
        ev.subgroups.to_csv(out / f"{name}_cindex_by_cancer_type.csv", index=False)
    ev.calibration.to_csv(out / f"{name}_calibration.csv", index=False)
    return figs


def _log_model(name: str, model: SurvivalModel, example_df: pd.DataFrame, horizons, workdir: Path,
               tracking_uri: str) -> tuple[str, dict[str, str]]:
    """Log the models-from-code pyfunc; (model_uri, manifest of every artifact file)."""
    from training.pyfunc import log_served_model

    return log_served_model(name, model, example_df=example_df, horizons=horizons, workdir=workdir,
                            pip_requirements=_requirements(), tracking_uri=tracking_uri)


def _score_champion(client: Any, name: str, train_df: pd.DataFrame, test_df: pd.DataFrame, params: Any,
                    tracking_uri: str) -> dict[str, Any]:
    """Re-score the current champion on this training's test patients (no bootstrap).

    The champion is loaded like a server loads it: its files must match the manifest recorded
    when it was registered; a refusal is recorded like any other failure to score it.
    """
    from training.pyfunc import load_verified
    from training.registry import CHAMPION, alias_version

    champ = alias_version(client, name, CHAMPION)
    if champ is None:
        return {}
    try:
        verified = load_verified(client, name, version=str(champ.version), tracking_uri=tracking_uri)
        model = verified.pyfunc.unwrap_python_model().model
        ev = _evaluate(model, train_df, test_df, params=params, bootstrap=0)
    except Exception as exc:  # noqa: BLE001 - an old champion that cannot read the new data is recorded, not fatal
        return {"version": str(champ.version), "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    return {"version": str(champ.version), "metrics": ev.point, "artifacts_sha256": verified.manifest_sha256}


def features_of(name: str, model: SurvivalModel) -> str:
    members = getattr(model, "members", None)
    if not members:
        return FEATURES.get(name, "")
    kinds = sorted({FEATURES[m] for m in members}, key=("latent", "clinical").index)
    return " + ".join(kinds)


def _table_row(name: str, model: SurvivalModel, ev: Evaluation, n_train: int) -> dict[str, Any]:
    return {"model": name, "features": features_of(name, model), "n_train": n_train, "n_test": ev.n_test,
            "test_events": ev.n_events, **ev.flat()}


def train(df: pd.DataFrame, *, params: Any, tracking_uri: str, data_versions: Mapping[str, str] | None = None,
          feature_service: str | None = None, split_path: Path | None = None, artifact_root: Path | None = None,
          out_dir: Path | None = None, register: bool = True, base: str | None = None,
          data_source: str | None = None) -> TrainResult:
    """Train, evaluate, track and (optionally) register every model; see the module docstring.

    The served model (registered as params.registry.model_name) is the fusion; the others are
    registered as <model_name>-<model>. Every new version gets the alias `challenger`.
    """
    import mlflow
    from mlflow import MlflowClient

    from training.tracking import (
        clean_metrics,
        ensure_experiment,
        log_datasets,
        log_json,
        quiet_environment,
    )

    quiet_environment()
    df = df.reset_index(drop=True)
    numeric, categorical, model_names, members = validate_training_frame(df, params=params, base=base)
    t = params.training
    data_versions = {k: str(v) for k, v in (data_versions or {}).items()}
    feature_service = feature_service or params.features.feature_service
    train_idx, test_idx, split = split_frame(df, test_fraction=t.test_fraction, seed=t.seed, path=split_path,
                                             data_versions=data_versions)
    train_df, test_df = df.iloc[train_idx].reset_index(drop=True), df.iloc[test_idx].reset_index(drop=True)
    _, train_event = check_survival_target(train_df["time_days"].to_numpy(), train_df["event"].to_numpy(),
                                           what="training part of the split")
    factories = {m: factory(m, t, numeric=numeric, categorical=categorical) for m in {*model_names, *members}}
    horizons = [int(h) for h in t.horizons_days]

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    exp_id = ensure_experiment(client, params.registry.experiment, artifact_root)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    reg_name = params.registry.model_name
    result = TrainResult(pd.DataFrame(), "", split, {}, {}, served_model_name=reg_name)
    rows: list[dict[str, Any]] = []
    version_tags_common = {"split_id": split.split_id, "feature_service": feature_service,
                           "params_hash": params.params_hash, "data_versions": str(sorted(data_versions.items()))}
    with tempfile.TemporaryDirectory(prefix="facesurv-train-") as tmp:
        work = Path(tmp)
        figdir = Path(out_dir) if out_dir is not None else work / "figures"
        with mlflow.start_run(experiment_id=exp_id, run_name=f"train-{split.split_id}") as parent:
            result.parent_run_id = parent.info.run_id
            mlflow.set_tags({"facesurv.kind": "training", **version_tags_common,
                             **{f"dvc.{k}": v for k, v in data_versions.items()}, "profile": params.profile})
            mlflow.log_params({f"training.{k}": v for k, v in params.to_dict()["training"].items()})
            mlflow.log_params({"evaluation.bootstrap": params.evaluation.bootstrap, "n_train": len(train_df),
                               "n_test": len(test_df), "has_latent": has_latent(df)})
            log_datasets(train_df=train_df, test_df=test_df, feature_service=feature_service,
                         data_versions=data_versions, split_id=split.split_id,
                         split_source=str(split_path) if split_path else "",
                         source=str(data_source or split_path or Path.cwd()))
            log_json(json_split(split), "split/test_split.json")

            fitted: dict[str, SurvivalModel] = {}
            for name in [*model_names, *[m for m in members if m not in model_names]]:
                tracked = name in model_names
                with mlflow.start_run(experiment_id=exp_id, run_name=name, nested=True):
                    model = factories[name]().fit(train_df, min_events_per_feature=t.min_events_per_feature)
                    fitted[name] = model
                    if not tracked:
                        mlflow.set_tag("facesurv.role", "fusion member only")
                        continue
                    _track_model(name, model, train_df, test_df, params, horizons, work, figdir, result, rows,
                                 register, reg_name, version_tags_common, client)
            if members:
                with mlflow.start_run(experiment_id=exp_id, run_name=SERVED, nested=True):
                    from training.fusion import FusionModel, out_of_fold_risks

                    oof = out_of_fold_risks(train_df, {m: factories[m] for m in members}, folds=t.fusion_folds,
                                            seed=t.seed, min_events_per_feature=t.min_events_per_feature)
                    fusion = FusionModel({m: fitted[m] for m in members}, alpha=t.coxph_alpha, seed=t.seed)
                    fusion.fit_stage2(oof, train_df["time_days"].to_numpy(float), train_event,
                                      min_events_per_feature=t.min_events_per_feature)
                    log_json(fusion.describe(), "fusion.json")
                    comparison = (_score_champion(client, reg_name, train_df, test_df, params, tracking_uri)
                                  if register else {})
                    result.champion_comparison = comparison
                    extra = {}
                    if comparison.get("metrics"):
                        extra = {"champion_compared_version": comparison["version"],
                                 "champion_compared_artifacts_sha256": comparison["artifacts_sha256"],
                                 **{f"champion_same_split.{k}": v for k, v in comparison["metrics"].items()
                                    if math.isfinite(v)}}
                    elif comparison.get("error"):
                        extra = {"champion_compared_version": comparison["version"],
                                 "champion_compare_error": comparison["error"]}
                    _track_model(SERVED, fusion, train_df, test_df, params, horizons, work, figdir, result, rows,
                                 register, reg_name, {**version_tags_common, **extra}, client, served=True)
            table = pd.DataFrame(rows)
            result.table1 = table
            result.models = {**fitted, **({SERVED: result.models[SERVED]} if SERVED in result.models else {})}
            mlflow.log_table(table.replace({np.nan: None}), "table1.json")
            mlflow.log_metrics(clean_metrics({f"{r['model']}.{k}": r[k] for r in rows
                                              for k in ("c_index", "uno_c", "ibs")}))
    return result


def json_split(split: FrozenSplit) -> dict[str, Any]:
    import json

    return json.loads(split.to_json())


def _track_model(name, model, train_df, test_df, params, horizons, work, figdir, result, rows, register,
                 reg_name, tags, client, served: bool = False) -> None:
    import mlflow

    from training.integrity import DIGEST_TAG, manifest_tags
    from training.registry import register_version
    from training.tracking import clean_metrics, log_json

    ev = _evaluate(model, train_df, test_df, params=params)
    result.evaluations[name] = ev
    result.models[name] = model
    mlflow.set_tags({"facesurv.model": name, "features": features_of(name, model)})
    mlflow.log_params({k: (str(v)[:490]) for k, v in model.describe().items()})
    mlflow.log_metrics(clean_metrics(ev.flat()))
    figs = _figures(name, model, ev, train_df, test_df, figdir / name)
    result.figures[name] = figs
    for f in figs:
        mlflow.log_artifact(str(f), artifact_path="figures")
    log_json({"subgroups": ev.subgroups.to_dict(orient="records"),
              "calibration": ev.calibration.to_dict(orient="records"),
              "calibration_horizon_days": ev.calibration_horizon}, "evaluation.json")
    if name == "coxnet_latent":
        direction = model.health_direction
        result.health_direction = direction
        np.save(work / "health_direction.npy", direction)
        mlflow.log_artifact(str(work / "health_direction.npy"))
    rows.append(_table_row(name, model, ev, len(train_df)))
    uri, files = _log_model(name, model, train_df, horizons, work, mlflow.get_tracking_uri())
    manifest = manifest_tags(files)
    # the run keeps the manifest too (lineage); the registry's copy is the one loads trust
    log_json({"model_uri": uri, "files": files}, "artifact_manifest.json")
    mlflow.set_tag(DIGEST_TAG, manifest[DIGEST_TAG])
    reg = reg_name if served else f"{reg_name}-{name.replace('_', '-')}"
    result.artifact_digests[reg] = manifest[DIGEST_TAG]
    if register:
        active = mlflow.active_run()
        assert active is not None  # train() calls this inside the model's mlflow.start_run
        run_id = active.info.run_id
        vtags = {**tags, "facesurv.model": name, "run_id": run_id, "needs_latent": str(model.needs_latent),
                 **{f"test.{k}": v for k, v in ev.point.items() if math.isfinite(v)}, **manifest}
        version = register_version(client, name=reg, model_uri=uri, run_id=run_id, tags=vtags,
                                   description=f"facesurv {name} survival model")
        result.model_versions[reg] = version
        if served:
            result.served_version = version


def load_training_frame(path: Path) -> pd.DataFrame:
    """Read a training table (.csv or .parquet). A CSV `latent` column holds JSON lists."""
    import json

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such training table; pass --data FILE (.csv or .parquet)")
    if path.suffix.lower() in (".parquet", ".pq"):
        df = pd.read_parquet(path)
    elif path.suffix.lower() == ".csv":
        df = pd.read_csv(path)
        if LATENT_COLUMN in df.columns:
            try:
                df[LATENT_COLUMN] = [None if pd.isna(v) else json.loads(v) for v in df[LATENT_COLUMN]]
            except (TypeError, ValueError):
                raise DataError(f"{path}: the latent column must hold JSON lists of floats") from None
    else:
        raise DataError(f"{path}: unsupported table format {path.suffix!r}; use .csv or .parquet")
    return df


def format_ci(value: float, lo: float, hi: float, digits: int = 3) -> str:
    if not math.isfinite(value):
        return "n/a"
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def table1_text_rows(table: pd.DataFrame, horizons: list[int]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the Table-1-style summary: each metric as 'value (95% CI)'."""
    cols = [("c_index", "Harrell C"), ("uno_c", "Uno C"), ("ibs", "IBS"),
            *[(f"brier_{h}d", f"Brier {h}d") for h in horizons], ("auc_mean", "td-AUC")]
    header = ["model", "features", "n train/test (events)", *[c[1] for c in cols]]
    rows = []
    for r in table.to_dict(orient="records"):
        rows.append([r["model"], r["features"], f"{r['n_train']}/{r['n_test']} ({r['test_events']})",
                     *[format_ci(r.get(k, math.nan), r.get(f"{k}_lo", math.nan), r.get(f"{k}_hi", math.nan))
                       for k, _ in cols]])
    return header, rows
