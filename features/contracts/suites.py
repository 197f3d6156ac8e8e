"""The three data contracts as code: a typed view of the table and the checks on it.

Each check is (GX expectation class name, its kwargs, the reason a quarantined row gets).
The typed view keeps the input's row order and index, so GX's unexpected_index_list
points straight back at the input rows; derived columns (parsed timestamps, latent norm)
exist only in the view, never in the rows written out.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ground.clinical_rules import (
    CLOCK_SKEW,
    EVENT_VALUES,
    ID_RULE,
    ID_SEARCH_PATTERN,
    TIME_DAYS,
    NumericRule,
    clinical_rules,
    latest_record_time,
)
from ground.config import Params

KINDS = ("clinical", "manifest", "latents")
MANIFEST_STATUSES = ("aligned", "quarantined")
MANIFEST_SIZE_COLUMNS = ("output_size", "width", "height")


@dataclass(frozen=True)
class Check:
    expectation: str                 # class name in great_expectations.expectations
    kwargs: dict[str, Any]
    reason: str                      # what a failing row is told, e.g. "age outside 0-120"
    row_reasons: dict[int, str] | None = None  # per-row reasons that replace `reason` (ragged lines)
    exclusive: bool = False          # a row failing it is told only this check's reasons

    @property
    def label(self) -> str:
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in self.expectation).lstrip("_")
        cols = self.kwargs.get("column") or ",".join(self.kwargs.get("column_list") or [
            str(self.kwargs[k]) for k in ("column_A", "column_B") if k in self.kwargs])
        return f"{snake}({cols})" if cols else snake


@dataclass
class Contract:
    kind: str
    view: pd.DataFrame               # typed frame GX validates (same index as the input)
    checks: list[Check] = field(default_factory=list)


def _numeric(df: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(df[col], errors="coerce")


def _timestamps(df: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_datetime(df[col], utc=True, errors="coerce", format="ISO8601")


def clinical_contract(df: pd.DataFrame, params: Params, *, now: dt.datetime | None = None) -> Contract:
    """The clinical table's checks; every value rule comes from ground.clinical_rules (shared with the API).

    Corrections: a patient may have several rows with different record_known_at (the later one
    is the current record, the earlier ones its history); two rows of one patient with the same
    record_known_at are ambiguous and both quarantined, as is a photo_id used by two patients.
    """
    from features.cohort import clinical_columns

    base = params.cohort.base
    c = params.contracts
    rules = clinical_rules(base, age_range=(c.age_min, c.age_max))
    expected = clinical_columns(base)
    view = df.copy()
    checks = [Check("ExpectTableColumnsToMatchSet", {"column_set": list(expected), "exact_match": True},
                    f"columns differ from the {base} clinical schema (a column beyond it may leak the outcome, "
                    "e.g. a cause or date of death; one missing cannot be served)")]
    present = set(df.columns)
    for col in ("patient_id", "photo_id"):
        if col in present:
            checks.append(Check("ExpectColumnValuesToNotBeNull", {"column": col}, f"{col} is empty"))
            checks.append(Check("ExpectColumnValuesToMatchRegex", {"column": col, "regex": ID_SEARCH_PATTERN},
                                f"{col} is not a valid id ({ID_RULE})"))
    for col in ("photo_taken_at", "record_known_at"):
        if col in present:
            view[col] = _timestamps(df, col)
            checks.append(Check("ExpectColumnValuesToNotBeNull", {"column": col},
                                f"{col} is not an ISO-8601 timestamp"))
    if "record_known_at" in present:
        latest = latest_record_time(now)
        checks.append(Check("ExpectColumnValuesToBeBetween", {"column": "record_known_at", "max_value": latest},
                            f"record_known_at is in the future (after the check time + {_skew()} clock skew)"))
    if {"patient_id", "record_known_at"} <= present:
        checks.append(Check("ExpectCompoundColumnsToBeUnique", {"column_list": ["patient_id", "record_known_at"]},
                            "patient_id appears more than once with the same record_known_at (a correction "
                            "is a new row with a later record_known_at)"))
    elif "patient_id" in present:
        checks.append(Check("ExpectColumnValuesToBeUnique", {"column": "patient_id"},
                            "patient_id appears more than once"))
    if {"patient_id", "photo_id"} <= present:
        view[PATIENTS_PER_PHOTO] = df.groupby("photo_id", dropna=True)["patient_id"].transform("nunique")
        checks.append(Check("ExpectColumnValuesToBeBetween", {"column": PATIENTS_PER_PHOTO, "max_value": 1},
                            "photo_id appears with more than one patient_id"))
    if {"photo_taken_at", "record_known_at"} <= present:
        checks.append(Check("ExpectColumnPairValuesAToBeGreaterThanB",
                            {"column_A": "record_known_at", "column_B": "photo_taken_at", "or_equal": True,
                             "ignore_row_if": "either_value_is_missing"},
                            "photo_taken_at is after record_known_at"))
    for rule in (*rules.numeric, TIME_DAYS):
        if rule.name in present:
            checks += _numeric_checks(df, view, rule)
    if "event" in present:
        view["event"] = _numeric(df, "event")
        checks.append(Check("ExpectColumnValuesToNotBeNull", {"column": "event"}, "event is missing or not a number"))
        checks.append(Check("ExpectColumnValuesToBeInSet", {"column": "event", "value_set": list(EVENT_VALUES)},
                            "event is not 0 (censored) or 1 (died)"))
    for cat in rules.categorical:
        if cat.name in present:
            checks.append(Check("ExpectColumnValuesToNotBeNull", {"column": cat.name}, f"{cat.name} is empty"))
            if cat.levels is not None:
                levels = "" if cat.name == "sex" else f" (the {base} cohort's levels)"
                checks.append(Check("ExpectColumnValuesToBeInSet", {"column": cat.name, "value_set": list(cat.levels)},
                                    cat.reason + levels))
    return Contract("clinical", view, checks)


PATIENTS_PER_PHOTO = "patients_per_photo_id"


def _skew() -> str:
    minutes = int(CLOCK_SKEW.total_seconds() // 60)
    return f"{minutes // 60} h" if minutes % 60 == 0 else f"{minutes} min"


def _numeric_checks(df: pd.DataFrame, view: pd.DataFrame, rule: NumericRule) -> list[Check]:
    """Present and a number; finite and in range (inf and 1e308 fail the range); whole for counts."""
    col = rule.name
    values = _numeric(df, col)
    view[col] = values
    between: dict[str, Any] = {"column": col, "min_value": rule.min, "max_value": rule.max}
    if rule.min_exclusive:
        between["strict_min"] = True
    checks = [Check("ExpectColumnValuesToNotBeNull", {"column": col}, f"{col} is missing or not a number"),
              Check("ExpectColumnValuesToBeBetween", between, rule.reason)]
    if rule.integer:
        finite = np.isfinite(values.to_numpy(dtype=float))
        whole = [bool(v == np.floor(v)) if ok else None for v, ok in zip(values, finite, strict=True)]
        view[f"{col}_is_whole"] = pd.Series(whole, index=df.index, dtype=object)
        checks.append(Check("ExpectColumnValuesToBeInSet", {"column": f"{col}_is_whole", "value_set": [True]},
                            rule.integer_reason))
    return checks


def manifest_contract(df: pd.DataFrame, params: Params) -> Contract:
    from great_expectations.expectations.row_conditions import Column

    required = ["photo_id", "status", "aligner_version"]
    view = df.copy()
    checks = [Check("ExpectTableColumnsToMatchSet", {"column_set": required, "exact_match": False},
                    "the manifest lacks photo_id, status or aligner_version")]
    present = set(df.columns)
    if "photo_id" in present:
        checks.append(Check("ExpectColumnValuesToNotBeNull", {"column": "photo_id"}, "photo_id is empty"))
        checks.append(Check("ExpectColumnValuesToBeUnique", {"column": "photo_id"}, "photo_id appears more than once"))
    if "status" in present:
        checks.append(Check("ExpectColumnValuesToBeInSet", {"column": "status", "value_set": list(MANIFEST_STATUSES)},
                            f"status is not {' or '.join(MANIFEST_STATUSES)}"))
        aligned = {"row_condition": Column("status") == "aligned"}
        if "aligner_version" in present:
            checks.append(Check("ExpectColumnValuesToNotBeNull", {"column": "aligner_version", **aligned},
                                "aligned photo without aligner_version"))
        if "reason" in present:
            checks.append(Check("ExpectColumnValuesToNotBeNull",
                                {"column": "reason", "row_condition": Column("status") == "quarantined"},
                                "quarantined photo without a reason"))
        for col in MANIFEST_SIZE_COLUMNS:
            if col in present:
                view[col] = _numeric(df, col)
                checks.append(Check("ExpectColumnValuesToBeInSet",
                                    {"column": col, "value_set": [params.align.output_size], **aligned},
                                    f"aligned photo's {col} is not {params.align.output_size} px"))
    return Contract("manifest", view, checks)


def _latent_stats(values: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dims = np.zeros(len(values), dtype=np.int64)
    finite = np.zeros(len(values), dtype=bool)
    norms = np.full(len(values), np.nan)
    for i, v in enumerate(values):
        if isinstance(v, str):
            import json

            try:
                v = json.loads(v)
            except ValueError:
                continue
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        try:
            arr = np.asarray(v, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            continue
        dims[i] = arr.shape[0]
        finite[i] = bool(np.isfinite(arr).all()) and arr.shape[0] > 0
        if finite[i]:
            norms[i] = float(np.linalg.norm(arr))
    return dims, finite, norms


def latents_contract(df: pd.DataFrame, params: Params) -> Contract:
    c = params.contracts
    required = ["photo_id", "latent", "photo_sha256", "generator_sha256"]
    view = df.copy()
    checks = [Check("ExpectTableColumnsToMatchSet", {"column_set": required, "exact_match": False},
                    "the latents table lacks photo_id, latent, photo_sha256 or generator_sha256")]
    present = set(df.columns)
    for col in ("photo_id", "photo_sha256", "generator_sha256"):
        if col in present:
            checks.append(Check("ExpectColumnValuesToNotBeNull", {"column": col}, f"{col} is empty"))
    if "latent" in present:
        dims, finite, norms = _latent_stats(df["latent"])
        # GX need not see 512 floats per row: the view carries a short description instead
        view["latent"] = [f"<{d} values>" for d in dims]
        view["latent_dim"], view["latent_finite"], view["latent_norm"] = dims, finite, norms
        checks += [
            Check("ExpectColumnValuesToBeInSet", {"column": "latent_dim", "value_set": [c.latent_dim]},
                  f"latent does not have {c.latent_dim} values"),
            Check("ExpectColumnValuesToBeInSet", {"column": "latent_finite", "value_set": [True]},
                  "latent has NaN or infinite values"),
            Check("ExpectColumnValuesToBeBetween", {"column": "latent_norm", "min_value": c.latent_norm_min,
                                                    "max_value": c.latent_norm_max},
                  f"latent norm outside {c.latent_norm_min:g}-{c.latent_norm_max:g}"),
        ]
    # the loss the projection optimised is not recorded; perceptual when present, else MSE
    loss_cols = [col for col in ("perceptual_loss", "mse") if col in present]
    if loss_cols:
        loss = _numeric(df, loss_cols[0])
        if len(loss_cols) == 2:
            loss = loss.where(loss.notna(), _numeric(df, "mse"))
        view["projection_loss"] = loss
        checks.append(Check("ExpectColumnValuesToBeBetween", {"column": "projection_loss", "max_value":
                                                              c.max_projection_loss},
                            f"projection loss above {c.max_projection_loss:g}"))
        checks.append(Check("ExpectColumnValuesToNotBeNull", {"column": "projection_loss"},
                            "projection loss is missing"))
    return Contract("latents", view, checks)


BUILDERS = {"clinical": clinical_contract, "manifest": manifest_contract, "latents": latents_contract}
