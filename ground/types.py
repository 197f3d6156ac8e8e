"""Shared types: the clinical schema and the one survival-target validator.

`check_survival_target` is the single check of (time, event) pairs: cohort import, data
contracts, training and evaluation all call it, so a bad target is described the same way
wherever it is caught.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ground.errors import DataError

# Columns every clinical table starts with, in this order; dataset covariates follow, then
# the survival label. The label travels with the entity dataframe and is never a feature.
CLINICAL_ID_COLUMNS = ("patient_id", "photo_id", "photo_taken_at", "record_known_at")
CLINICAL_CORE_COVARIATES = ("age", "sex", "cancer_type")
SURVIVAL_COLUMNS = ("time_days", "event")
SEX_VALUES = ("female", "male", "unknown")

LATENT_DIM = 512


@dataclass(frozen=True)
class ClinicalColumn:
    """One column of a cohort's clinical table, as docs/schema.md lists it."""

    name: str
    kind: str  # "id" | "timestamp" | "numeric" | "categorical" | "label"
    description: str


def check_survival_target(
    time: object, event: object, *, allow_all_censored: bool = False, what: str = "survival target"
) -> tuple[np.ndarray, np.ndarray]:
    """Validate right-censored survival data.

    Args:
        time: (n,) follow-up times in days, finite and > 0.
        event: (n,) event indicators: 1/True = death observed, 0/False = censored.
        allow_all_censored: accept data with no event (only for descriptive use).

    Returns:
        (time, event) as float64 (n,) and bool (n,) arrays.

    Raises:
        DataError: with the row index of the first offending value and how to fix it.
    """
    t = np.asarray(time)
    e = np.asarray(event)
    if t.ndim != 1 or e.ndim != 1:
        raise DataError(f"{what}: time and event must be 1-D, got shapes {t.shape} and {e.shape}")
    if t.shape[0] != e.shape[0]:
        raise DataError(f"{what}: time has {t.shape[0]} values but event has {e.shape[0]}; pass one of each per patient")
    if t.shape[0] == 0:
        raise DataError(f"{what}: no patients (empty data); provide at least one row")
    try:
        t = t.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{what}: time must be numeric (days), got dtype {t.dtype}") from None
    bad = ~np.isfinite(t)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{what}: time has {int(bad.sum())} missing or infinite values (first at row {i}); drop or fill those rows")
    bad = t <= 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{what}: time must be > 0 days; {int(bad.sum())} values are not (first at row {i}: {t[i]!r}); "
            "a patient who died on admission day should get a small positive time such as 0.5"
        )
    if e.dtype == bool:
        ev = e
    else:
        try:
            ef = e.astype(np.float64)
        except (TypeError, ValueError):
            raise DataError(f"{what}: event must be 0/1 or true/false, got dtype {e.dtype}") from None
        bad = ~np.isin(ef, (0.0, 1.0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"{what}: event must be 0 (censored) or 1 (died); {int(bad.sum())} values are not (first at row {i}: {e[i]!r})")
        ev = ef.astype(bool)
    if not allow_all_censored and not ev.any():
        raise DataError(f"{what}: all {ev.shape[0]} patients are censored (no event); a survival model needs observed events")
    return t, ev
