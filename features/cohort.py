"""Clinical cohort import: real survival datasets bundled with scikit-survival, in the
platform's clinical schema (docs/schema.md).

The datasets carry no dates and no photos, so the import adds what the platform needs and
says how: a photo_id per patient, an admission (photo) date spread uniformly over a window,
and a record_known_at a few days later, all drawn from a seeded generator so that an
import is byte-for-byte reproducible.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ground.errors import DataError
from ground.types import (
    CLINICAL_CORE_COVARIATES,
    CLINICAL_ID_COLUMNS,
    SURVIVAL_COLUMNS,
    check_survival_target,
)


@dataclass(frozen=True)
class CohortSpec:
    """How one bundled dataset maps onto the clinical schema."""

    name: str
    loader: str                      # sksurv.datasets function name
    event_field: str
    time_field: str
    age_column: str
    sex: Callable[[pd.DataFrame], pd.Series]
    cancer_type: Callable[[pd.DataFrame], pd.Series]
    numeric: tuple[str, ...]         # covariates kept as numbers (renamed to snake_case)
    categorical: tuple[str, ...]     # covariates kept as strings
    dropped: tuple[str, ...] = ()    # columns removed, with the reason in `notes`
    notes: str = ""


def _const(value: str) -> Callable[[pd.DataFrame], pd.Series]:
    return lambda X: pd.Series([value] * len(X), index=X.index)


def _map(column: str, mapping: dict[str, str]) -> Callable[[pd.DataFrame], pd.Series]:
    return lambda X: X[column].astype(str).map(mapping)


COHORTS: dict[str, CohortSpec] = {
    "gbsg2": CohortSpec(
        "gbsg2", "load_gbsg2", "cens", "time", "age",
        sex=_const("female"), cancer_type=_const("breast"),
        numeric=("estrec", "pnodes", "progrec", "tsize"),
        categorical=("horTh", "menostat", "tgrade"),
        notes="German Breast Cancer Study Group 2: 686 node-positive breast cancer patients, recurrence-free survival.",
    ),
    "whas500": CohortSpec(
        "whas500", "load_whas500", "fstat", "lenfol", "age",
        sex=_map("gender", {"0": "male", "1": "female"}), cancer_type=_const("none_myocardial_infarction"),
        numeric=("bmi", "diasbp", "hr", "los", "sysbp"),
        categorical=("afb", "av3", "chf", "cvd", "miord", "mitype", "sho"),
        dropped=("gender",),
        notes="Worcester Heart Attack Study: not a cancer cohort; cancer_type says so. gender becomes sex.",
    ),
    "flchain": CohortSpec(
        "flchain", "load_flchain", "death", "futime", "age",
        sex=_map("sex", {"F": "female", "M": "male"}), cancer_type=_const("none_general_population"),
        numeric=("creatinine", "kappa", "lambda"),
        categorical=("flc.grp", "mgus", "sample.yr"),
        dropped=("chapter", "sex"),
        notes=("Serum free light chain study (general population). `chapter` (cause of death) leaks the "
               "outcome and is dropped; missing creatinine is filled with the median and flagged in "
               "creatinine_missing; follow-up of 0 days becomes 0.5 days."),
    ),
    "veterans_lung_cancer": CohortSpec(
        "veterans_lung_cancer", "load_veterans_lung_cancer", "Status", "Survival_in_days", "Age_in_years",
        sex=_const("unknown"), cancer_type=lambda X: "lung_" + X["Celltype"].astype(str),
        numeric=("Karnofsky_score", "Months_from_Diagnosis"),
        categorical=("Prior_therapy", "Treatment"),
        dropped=("Celltype",),
        notes="Veterans' Administration lung cancer trial; the cell type becomes cancer_type (lung_<celltype>).",
    ),
    "aids": CohortSpec(
        "aids", "load_aids", "censor", "time", "age",
        sex=_map("sex", {"1": "male", "2": "female"}), cancer_type=_const("none_hiv"),
        numeric=("cd4", "priorzdv"),
        categorical=("hemophil", "ivdrug", "karnof", "raceth", "strat2", "tx", "txgrp"),
        dropped=("sex",),
        notes="AIDS Clinical Trials Group 320: not a cancer cohort; cancer_type says so.",
    ),
}


def snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and (name[i - 1].islower()):
            out.append("_")
        out.append(ch.lower() if ch.isalnum() else "_")
    return "".join(out).strip("_")


def covariate_columns(base: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(numeric, categorical) covariate names of an imported cohort, beyond age/sex/cancer_type.

    Each has one rule (range, whole number, levels) in ground.clinical_rules.BASE_RULES, which
    the clinical contract and the photo endpoint share; tests/foundation/test_clinical_rules.py
    keeps the two lists in step.
    """
    spec = _spec(base)
    numeric = tuple(snake(c) for c in spec.numeric)
    if base == "flchain":
        numeric = numeric + ("creatinine_missing",)
    return numeric, tuple(snake(c) for c in spec.categorical)


def clinical_columns(base: str) -> list[str]:
    """Every column of an imported cohort's clinical table, in file order."""
    numeric, categorical = covariate_columns(base)
    return [*CLINICAL_ID_COLUMNS, *CLINICAL_CORE_COVARIATES, *numeric, *categorical, *SURVIVAL_COLUMNS]


def _spec(base: str) -> CohortSpec:
    try:
        return COHORTS[base]
    except KeyError:
        raise DataError(f"unknown base dataset {base!r}; choose one of: {', '.join(COHORTS)}") from None


def load_base(base: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Load a bundled dataset offline: (covariates, time in days, event)."""
    from sksurv import datasets

    spec = _spec(base)
    X, y = getattr(datasets, spec.loader)()
    return X.reset_index(drop=True), np.asarray(y[spec.time_field], float), np.asarray(y[spec.event_field], bool)


def import_cohort(
    base: str,
    *,
    seed: int,
    admission_start: str,
    admission_span_days: int,
    record_lag_days: int,
) -> pd.DataFrame:
    """Build a clinical table (one row per patient) from a bundled dataset.

    Returns a DataFrame with the columns of `clinical_columns(base)`; timestamps are
    ISO-8601 UTC strings; deterministic for a seed.
    """
    spec = _spec(base)
    X, time, event = load_base(base)
    n = len(X)
    time = np.where(time <= 0, 0.5, time)  # a same-day death is still a positive follow-up
    time, event = check_survival_target(time, event, what=f"{base} survival target")

    rng = np.random.default_rng(seed)
    start = dt.datetime.fromisoformat(admission_start).replace(tzinfo=dt.UTC)
    admit_offset = rng.integers(0, admission_span_days, size=n)
    admit_seconds = rng.integers(8 * 3600, 18 * 3600, size=n)  # photos taken in clinic hours
    lag = rng.integers(0, record_lag_days + 1, size=n)
    photo_at = [start + dt.timedelta(days=int(d), seconds=int(s)) for d, s in zip(admit_offset, admit_seconds, strict=True)]
    known_at = [p + dt.timedelta(days=int(g)) for p, g in zip(photo_at, lag, strict=True)]

    width = max(5, len(str(n)))
    out = pd.DataFrame({
        "patient_id": [f"{base}-{i + 1:0{width}d}" for i in range(n)],
        "photo_id": [f"ph-{base}-{i + 1:0{width}d}" for i in range(n)],
        "photo_taken_at": [p.isoformat() for p in photo_at],
        "record_known_at": [k.isoformat() for k in known_at],
        "age": X[spec.age_column].astype(float).round(2),
        "sex": spec.sex(X).astype(str),
        "cancer_type": spec.cancer_type(X).astype(str),
    })
    for col in spec.numeric:
        values = X[col].astype(float)
        if base == "flchain" and col == "creatinine":
            out["creatinine_missing"] = values.isna().astype(int)
            values = values.fillna(float(values.median()))
        out[snake(col)] = values.round(4)
    if base == "flchain":  # keep the flag after the numeric covariates, as covariate_columns says
        out["creatinine_missing"] = out.pop("creatinine_missing")
    for col in spec.categorical:
        out[snake(col)] = X[col].astype(str)
    out["time_days"] = time
    out["event"] = event.astype(int)
    return out[clinical_columns(base)]


def summarize(df: pd.DataFrame) -> dict[str, float | int]:
    """Patients, events and median follow-up (reverse Kaplan-Meier) of a clinical table."""
    time, event = check_survival_target(df["time_days"].to_numpy(), df["event"].to_numpy(), allow_all_censored=True)
    return {
        "patients": int(len(df)),
        "events": int(event.sum()),
        "event_rate": round(float(event.mean()), 4),
        "median_follow_up_days": round(reverse_km_median(time, event), 1),
    }


def reverse_km_median(time: np.ndarray, event: np.ndarray) -> float:
    """Median potential follow-up: Kaplan-Meier with censoring as the event (Schemper & Smith)."""
    order = np.argsort(time, kind="stable")
    t, censored = time[order], ~event[order]
    at_risk = len(t) - np.arange(len(t))
    surv = np.cumprod(1.0 - censored / at_risk)
    below = np.flatnonzero(surv <= 0.5)
    return float(t[below[0]]) if below.size else float(t[-1])
