"""`facesurv features apply|write|materialize|training-set|online`: the Feast feature store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from facesurv.cli.common import WorkspaceOpt, open_workspace, out

features_app = typer.Typer(help="Feature store (Feast): register latents and clinical covariates, build "
                           "point-in-time training sets.", no_args_is_help=True)


@features_app.command("apply")
def apply(workspace: WorkspaceOpt = None) -> None:
    """Render feature_store.yaml for the profile and apply entity, views and FeatureService."""
    from features.store import apply_repo

    ws, params = open_workspace(workspace)
    apply_repo(ws.feature_repo_dir, params)
    out.print(f"applied feature repo {params.features.project} ({params.profile} profile, base "
              f"{params.cohort.base}) at {ws.feature_repo_dir}: entity patient, views face_latent + clinical, "
              f"service {params.features.feature_service}")


def _contract(kind: str, df, params, quarantine_dir: Path):  # -> valid DataFrame
    from features.contracts import run_contract, save_contract_outputs
    from ground.errors import DataError

    result = run_contract(kind, df, params)
    if not result.passed:
        raise DataError(result.failure_message() + "; nothing was written")
    if len(result.quarantine):
        save_contract_outputs(result, quarantine_dir / kind)
        out.print(f"{kind}: {len(result.quarantine)} rows quarantined (see {quarantine_dir / kind / 'quarantine.csv'})")
    return result.valid


@features_app.command("write")
def write(
    clinical: Annotated[Path, typer.Option("--clinical", help="clinical.csv (also maps photo_id to patient_id).")],
    latents: Annotated[Path | None, typer.Option("--latents", help="latents.parquet from `facesurv project`.")] = None,
    manifest: Annotated[Path | None, typer.Option("--manifest", help="Alignment manifest.csv (aligner_version per photo).")] = None,
    aligner_version: Annotated[str | None, typer.Option(help="Aligner version for photos declared pre-aligned.")] = None,
    validate: Annotated[bool, typer.Option("--validate/--no-validate", help="Run the data contracts first; only valid rows are written.")] = True,
    workspace: WorkspaceOpt = None,
) -> None:
    """Write clinical rows (and latents) to the offline store; idempotent."""
    import pandas as pd

    from features.contracts import newest_first, read_table, require_well_formed
    from features.store import apply_repo, join_latents, write_clinical, write_latents

    ws, params = open_workspace(workspace)
    quarantine_dir = ws.artifacts_dir / "quarantine" / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    clin_raw = read_table(clinical)
    # every valid row is written: a correction (later record_known_at) and the row it supersedes are
    # both kept, and Feast's point-in-time reads return the record current at each reference time
    clin = (_contract("clinical", clin_raw, params, quarantine_dir) if validate
            else require_well_formed(clin_raw, str(clinical)))
    if not (ws.feature_repo_dir / "feature_store.yaml").is_file():
        apply_repo(ws.feature_repo_dir, params)
    n = write_clinical(ws.feature_repo_dir, clin, params)
    out.print(f"clinical: {n} new rows of {len(clin)} ({len(clin) - n} already in the store)")
    if latents is None:
        return
    lat = read_table(latents)
    if validate:
        lat = _contract("latents", lat, params, quarantine_dir)
    man = read_table(manifest) if manifest is not None else None
    # quarantined clinical rows do not vouch for a photo: their latents wait, listed as unmatched
    # a photo takes patient_id and photo_taken_at from its latest record (a correction wins)
    rows, unmatched = join_latents(lat, newest_first(clin), manifest=man, aligner_version=aligner_version)
    n = write_latents(ws.feature_repo_dir, rows, params)
    out.print(f"face_latent: {n} new rows of {len(rows)} ({len(rows) - n} already in the store)")
    if len(unmatched):
        quarantine_dir.mkdir(parents=True, exist_ok=True)
        path = quarantine_dir / "latents_unmatched.csv"
        pd.DataFrame(unmatched).to_csv(path, index=False)
        out.print(f"face_latent: {len(unmatched)} latents not written ({unmatched['reason'].iloc[0]}, ...): {path}")


@features_app.command("materialize")
def materialize(
    end: Annotated[str | None, typer.Option(help="Materialise up to this ISO time (default: now).")] = None,
    workspace: WorkspaceOpt = None,
) -> None:
    """Load rows written since the last run into the online store (incremental)."""
    from features.store import materialize as run
    from ground.errors import DataError

    ws, params = open_workspace(workspace)
    try:
        end_at = dt.datetime.fromisoformat(end) if end else None
    except ValueError:
        raise DataError(f"--end {end!r} is not an ISO time such as 2026-01-31T00:00:00+00:00") from None
    if end_at is not None and end_at.tzinfo is None:
        end_at = end_at.replace(tzinfo=dt.UTC)
    done = run(ws.feature_repo_dir, params, end=end_at)
    out.print("materialised " + ", ".join(f"{v}: {n} new rows" for v, n in done.items()))


@features_app.command("training-set")
def training_set(
    entities: Annotated[Path, typer.Option("--entities", help="CSV with patient_id, the reference time and the "
                                           "labels (clinical.csv works).")],
    out_path: Annotated[Path, typer.Option("--out", help="Parquet file to write.")],
    reference_column: Annotated[str, typer.Option(help="Column holding each row's reference time.")] = "record_known_at",
    keep_unmatched: Annotated[bool, typer.Option(help="Keep rows without a point-in-time match (with nulls).")] = False,
    workspace: WorkspaceOpt = None,
) -> None:
    """Point-in-time training set of prognosis_v1; unmatched rows are counted and listed in a report."""
    import json

    from features.contracts import latest_records, read_table, require_well_formed
    from features.store import training_set as build
    from ground.atomic import atomic_path
    from ground.errors import DataError
    from ground.types import SURVIVAL_COLUMNS

    ws, params = open_workspace(workspace)
    ent = require_well_formed(read_table(entities), str(entities))
    if reference_column not in ent.columns:
        raise DataError(f"{entities}: no column {reference_column!r} for the reference time; pass --reference-column")
    if "patient_id" in ent.columns:
        latest = latest_records(ent, time_column=reference_column)
        if len(latest) < len(ent):  # one training row per patient: its latest record (corrections win)
            out.print(f"entities: {len(ent) - len(latest)} superseded rows (a later {reference_column} of the "
                      "same patient) left out")
            ent = latest.reset_index(drop=True)
    keep = ["patient_id", reference_column, *(c for c in SURVIVAL_COLUMNS if c in ent.columns)]
    ent = ent[keep]
    for col in SURVIVAL_COLUMNS:
        if col in ent.columns:
            ent[col] = ent[col].astype(float)
    df, report = build(ws.feature_repo_dir, ent, params, timestamp_column=reference_column,
                       keep_unmatched=keep_unmatched)
    with atomic_path(out_path, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)
    report_path = out_path.with_suffix(".report.json")
    with atomic_path(report_path) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=1))
    out.print(f"training set: {report.rows_in} entity rows in, {report.rows_out} out, {report.n_unmatched} without a "
              f"point-in-time match ({report.to_dict()['unmatched_by_view']}); wrote {out_path} and {report_path}")


@features_app.command("online")
def online(
    patient_ids: Annotated[list[str], typer.Argument(help="Patient ids to read.")],
    workspace: WorkspaceOpt = None,
) -> None:
    """Read prognosis_v1 for patients from the online store (latent summarised)."""
    import numpy as np

    from features.store import online_features

    ws, params = open_workspace(workspace)
    df = online_features(ws.feature_repo_dir, patient_ids, params)
    if "latent" in df.columns:
        df["latent"] = df["latent"].map(lambda v: None if v is None else f"<{len(v)} floats, norm {np.linalg.norm(v):.2f}>")
    out.print(df.T.to_string())


def register(app: typer.Typer) -> None:
    app.add_typer(features_app, name="features")
