"""The training frame: reading it from a file and checking it before anything is fitted or recorded.

One row per patient: patient_id, age, sex, cancer_type, the base's covariates, optionally
`latent` (512 floats), time_days and event.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from ground.errors import DataError
from ground.types import check_survival_target
from training.models import uses_latent
from training.preprocess import (
    LATENT_COLUMN,
    Preprocessor,
    check_events_per_feature,
    clinical_feature_columns,
)


def has_latent(df: pd.DataFrame) -> bool:
    return LATENT_COLUMN in df.columns and bool(df[LATENT_COLUMN].notna().any())


def validate_training_frame(df: pd.DataFrame, *, params: Any, base: str | None = None
                            ) -> tuple[tuple[str, ...], tuple[str, ...], list[str], list[str]]:
    """Check a training frame before anything is fitted or recorded.

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


def load_training_frame(path: Path) -> pd.DataFrame:
    """Read a training table (.csv or .parquet). A CSV `latent` column holds JSON lists."""
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
