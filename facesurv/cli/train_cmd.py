"""`facesurv train`: survival models, evaluation, MLflow registry (`facesurv promote`: promote_cmd)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated

import typer

from facesurv.cli.common import WorkspaceOpt, open_workspace, out

DataOpt = Annotated[Path | None, typer.Option(
    "--data", help="Training table (.csv or .parquet): patient_id, age, sex, cancer_type, covariates, "
                   "optional latent, time_days, event. Default: the workspace's training set.")]


def _md5(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def _dvc_md5(dvc_file: Path) -> str | None:
    """md5 recorded in a DVC pointer file (data/photos.dvc etc.), if there is one."""
    import yaml

    if not dvc_file.is_file():
        return None
    try:
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
    except yaml.YAMLError:
        return None
    return str(outs[0].get("md5")) if outs and outs[0].get("md5") else None


def _default_data(ws) -> Path:
    from ground.errors import DataError

    # the point-in-time training set the flows write from Feast, else the imported clinical table
    for candidate in (ws.artifacts_dir / "training" / "training_set.parquet", ws.data_dir / "clinical" / "clinical.csv"):
        if candidate.is_file():
            return candidate
    raise DataError(f"no training table in {ws.root} (looked for artifacts/training/training_set.parquet and "
                    "data/clinical/clinical.csv); pass --data FILE or run `facesurv cohort import --out DIR`")


def _data_versions(ws, data: Path) -> dict[str, str]:
    versions = {"training_table_md5": _md5(data)}
    for name in ("photos", "clinical", "aligned"):
        md5 = _dvc_md5(ws.data_dir / f"{name}.dvc")
        if md5:
            versions[name] = md5
    return versions


def _quiet_mlflow() -> None:
    """The CLI prints a summary; MLflow's progress bars and pickling notices are noise there."""
    import logging
    import os
    import warnings

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow.pyfunc", "mlflow.models", "mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mlflow(\.|$)")


def train(
    data: DataOpt = None,
    no_register: Annotated[bool, typer.Option("--no-register", help="Track runs but register nothing.")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Train CoxPH, Coxnet, DeepSurv and the late fusion; evaluate with CIs; register as challenger."""
    from rich.table import Table

    from facesurv.components import components
    from training.frame import load_training_frame
    from training.pipeline import train as run_training
    from training.table1 import table1_text_rows

    _quiet_mlflow()
    ws, params = open_workspace(workspace)
    path = data or _default_data(ws)
    df = load_training_frame(path)
    uri = components(ws, params).tracking_uri
    out_dir = ws.artifacts_dir / "training"
    result = run_training(df, params=params, tracking_uri=uri, data_versions=_data_versions(ws, path),
                          feature_service=params.features.feature_service,
                          split_path=ws.artifacts_dir / "splits" / "test_split.json",
                          artifact_root=ws.mlflow_dir / "artifacts", out_dir=out_dir,
                          register=not no_register,
                          data_source=str(path.resolve()))
    if result.served_version and path.resolve() == (out_dir / "training_set.parquet").resolve():
        from flows.training_steps import record_sources

        # the flows built this table from contract-validated files: the contracts gate reads their results
        record_sources(ws, params, result)
    from ground.atomic import atomic_path

    with atomic_path(out_dir / "table1.csv") as tmp:
        result.table1.to_csv(tmp, index=False)
    header, rows = table1_text_rows(result.table1, list(params.training.horizons_days))
    table = Table(title=f"Test-set performance, 95% bootstrap CIs (split {result.split.split_id}, "
                        f"{params.evaluation.bootstrap} resamples)")
    for i, h in enumerate(header):
        table.add_column(h, overflow="fold", no_wrap=i == 0)
    for r in rows:
        table.add_row(*r)
    from rich.console import Console

    Console(width=max(out.width, 200)).print(table)  # a CI per cell needs room; folding hides the headers
    out.print(f"MLflow run {result.parent_run_id} at {uri}", soft_wrap=True)
    if result.served_version:
        out.print(f"registered {params.registry.model_name} version {result.served_version} as challenger "
                  f"({result.served_model_uri}); run `facesurv promote` to run the promotion gates", soft_wrap=True)
    out.print(f"figures and table1.csv in {out_dir}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
