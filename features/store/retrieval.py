"""Materialisation, point-in-time training sets and online reads."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from features.feature_repo.schema import CLINICAL_VIEW, JOIN_KEY, LATENT_VIEW, clinical_features
from features.feature_repo.schema import LATENT_FEATURES as _LATENT_FEATURES
from ground.atomic import atomic_path
from ground.config import Params
from ground.errors import DataError

WATERMARKS = "materialized.json"
ROW_ID = "entity_row"
ENTITY_TS = "event_timestamp"


def _watermarks(repo_dir: Path) -> dict[str, str]:
    path = repo_dir / WATERMARKS
    return json.loads(path.read_text()) if path.is_file() else {}


def materialize(repo_dir: Path | str, params: Params, *, end: dt.datetime | None = None,
                store: Any = None) -> dict[str, int]:
    """Bring the online store up to date with rows written since the last run; rows per view.

    Incremental by write time, not event time: a photo taken in 2013 but projected
    tonight must still reach the online store, which Feast's materialize_incremental (a
    window of event times) would skip. The first run materialises the whole history
    with Feast's materialize(); later runs write, for each patient with new rows, their
    latest row (by event time, then write time) with write_to_online_store, so a nightly
    run costs what it adds rather than the whole history.
    """
    from features.store.offline import latest_rows, rows_written_since
    from features.store.repo import open_store

    repo_dir = Path(repo_dir).resolve()
    end = end or dt.datetime.now(dt.UTC)
    store = store or open_store(repo_dir, params)
    marks = _watermarks(repo_dir)
    done: dict[str, int] = {}
    for view in (LATENT_VIEW, CLINICAL_VIEW):
        since = dt.datetime.fromisoformat(marks[view]) if view in marks else None
        n, first_event, last_written, patients = rows_written_since(repo_dir, params, view, since)
        done[view] = 0
        if n == 0 or first_event is None or first_event >= end:
            continue
        if since is None:
            store.materialize(start_date=first_event, end_date=end, feature_views=[view])
        else:
            latest = latest_rows(repo_dir, params, view, patients, end)
            if not latest.empty:
                store.write_to_online_store(view, latest)
        done[view] = n
        assert last_written is not None  # n > 0 rows were written, and every row carries its write time
        marks[view] = last_written.isoformat()
        with atomic_path(repo_dir / WATERMARKS) as tmp:  # after each view: a crash redoes only the rest
            tmp.write_text(json.dumps(marks, indent=1, sort_keys=True))
    return done


@dataclass
class TrainingSetReport:
    """Entity rows in and out of a historical retrieval, and why rows went missing."""

    rows_in: int
    rows_out: int
    unmatched: pd.DataFrame = field(repr=False)  # patient_id, event_timestamp, missing (view names)

    @property
    def n_unmatched(self) -> int:
        return len(self.unmatched)

    def to_dict(self) -> dict[str, Any]:
        by_view: dict[str, int] = {}
        for missing in self.unmatched.get("missing", []):
            for v in str(missing).split(","):
                by_view[v] = by_view.get(v, 0) + 1
        return {"rows_in": self.rows_in, "rows_out": self.rows_out, "unmatched": self.n_unmatched,
                "unmatched_by_view": by_view,
                "unmatched_patients": self.unmatched[JOIN_KEY].astype(str).head(50).tolist()}


def training_set(repo_dir: Path | str, entity_df: pd.DataFrame, params: Params, *,
                 timestamp_column: str = ENTITY_TS, keep_unmatched: bool = False,
                 store: Any = None) -> tuple[pd.DataFrame, TrainingSetReport]:
    """Point-in-time correct features of prognosis_v1 for each entity row.

    Args:
        entity_df: (n, ...) patient_id, the reference time in `timestamp_column`, and any
            labels (time_days, event) to carry along; labels are never features.
        keep_unmatched: also return rows missing a view's features (with nulls).

    Returns:
        (frame, report): one row per matched entity row in input order, with patient_id,
        event_timestamp, the carried columns, age, sex, cancer_type, the base's
        covariates and the face_latent features (`latent` as a float32 array of 512).
        report counts rows in and out and lists the unmatched rows and which view had no
        value at or before their reference time (within the TTL).

    The join is Feast's (get_historical_features) in the profile's offline store: DuckDB over
    the parquet parts (local) or SQL (scale). Both keep an unmatched entity row with nulls and
    other stores drop it, so the rows are counted here by a row id, whatever the store does.
    """
    from features.store.offline import views_without_rows
    from features.store.repo import open_store

    missing = [c for c in (JOIN_KEY, timestamp_column) if c not in entity_df.columns]
    if missing:
        raise DataError(f"entity dataframe lacks column(s) {', '.join(missing)}; give each row a patient_id "
                        f"and a reference time")
    ent = entity_df.reset_index(drop=True).copy()
    if timestamp_column != ENTITY_TS:
        ent = ent.rename(columns={timestamp_column: ENTITY_TS})
    ent[ENTITY_TS] = pd.to_datetime(ent[ENTITY_TS], utc=True, format="ISO8601")
    ent[JOIN_KEY] = ent[JOIN_KEY].astype(str)
    ent[ROW_ID] = range(len(ent))
    empty = views_without_rows(repo_dir, params)
    if empty:
        raise DataError(f"feature view(s) {', '.join(empty)} hold no rows yet in {Path(repo_dir).resolve()}; "
                        f"write them first (`facesurv features write`)")
    store = store or open_store(repo_dir, params)
    service = store.get_feature_service(params.features.feature_service)
    got = store.get_historical_features(entity_df=ent, features=service).to_df()
    view_cols = {LATENT_VIEW: [n for n, _ in _LATENT_FEATURES],
                 CLINICAL_VIEW: [n for n, _ in clinical_features(params.cohort.base)]}
    feature_cols = [c for cols in view_cols.values() for c in cols]
    got = got[[ROW_ID, *(c for c in feature_cols if c in got.columns)]].drop_duplicates(ROW_ID)
    merged = ent.merge(got, on=ROW_ID, how="left").sort_values(ROW_ID)
    missing_views = pd.Series("", index=merged.index)
    for view, cols in view_cols.items():
        present = [c for c in cols if c in merged.columns]
        # a matched row has at least one value; a single probe column could be legitimately null
        absent = merged[present].isna().all(axis=1) if present else pd.Series(True, index=merged.index)
        missing_views[absent] = missing_views[absent].map(lambda s, v=view: f"{s},{v}" if s else v)
    bad = missing_views != ""
    unmatched = merged.loc[bad, [JOIN_KEY, ENTITY_TS]].assign(missing=missing_views[bad]).reset_index(drop=True)
    frame = merged if keep_unmatched else merged[~bad]
    frame = frame.drop(columns=[ROW_ID]).reset_index(drop=True)
    report = TrainingSetReport(rows_in=len(ent), rows_out=len(frame), unmatched=unmatched)
    return frame, report


def online_features(repo_dir: Path | str, patient_ids: list[str], params: Params, *,
                    store: Any = None) -> pd.DataFrame:
    """prognosis_v1 features of patients from the online store (one row each, nulls when absent)."""
    from features.store.repo import open_store

    store = store or open_store(repo_dir, params)
    service = store.get_feature_service(params.features.feature_service)
    rows = [{JOIN_KEY: str(p)} for p in patient_ids]
    return store.get_online_features(features=service, entity_rows=rows).to_df()
