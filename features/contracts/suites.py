"""The three data contracts as code: a typed view of the table and the checks on it.

Each check is (GX expectation class name, its kwargs, the reason a quarantined row gets).
The typed view keeps the input's row order and index, so GX's unexpected_index_list
points straight back at the input rows; derived columns (parsed timestamps, latent norm)
exist only in the view, never in the rows written out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from facesurv.config import Params
from facesurv.types import SEX_VALUES

KINDS = ("clinical", "manifest", "latents")
MANIFEST_STATUSES = ("aligned", "quarantined")
MANIFEST_SIZE_COLUMNS = ("output_size", "width", "height")


@dataclass(frozen=True)
class Check:
    expectation: str                 # class name in great_expectations.expectations
    kwargs: dict[str, Any]
    reason: str                      # what a failing row is told, e.g. "age outside 0-120"

    @property
    def label(self) -> str:
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in self.expectation).lstrip("_")
        cols = self.kwargs.get("column") or ",".join(
            str(self.kwargs[k]) for k in ("column_A", "column_B") if k in self.kwargs)
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


def clinical_contract(df: pd.DataFrame, params: Params) -> Contract:
    from features.cohort import clinical_columns, covariate_columns

    base = params.cohort.base
    c = params.contracts
    expected = clinical_columns(base)
    numeric, categorical = covariate_columns(base)
    view = df.copy()
    checks = [Check("ExpectTableColumnsToMatchSet", {"column_set": list(expected), "exact_match": True},
                    f"columns differ from the {base} clinical schema (a column beyond it may leak the outcome, "
                    "e.g. a cause or date of death; one missing cannot be served)")]
    present = set(df.columns)
    for col in ("patient_id", "photo_id"):
        if col in present:
            checks.append(Check("ExpectColumnValuesToNotBeNull", {"column": col}, f"{col} is empty"))
            checks.append(Check("ExpectColumnValuesToBeUnique", {"column": col}, f"{col} appears more than once"))
    for col in ("photo_taken_at", "record_known_at"):
        if col in present:
            view[col] = _timestamps(df, col)
            checks.append(Check("ExpectColumnValuesToNotBeNull", {"column": col},
                                f"{col} is not an ISO-8601 timestamp"))
    if {"photo_taken_at", "record_known_at"} <= present:
        checks.append(Check("ExpectColumnPairValuesAToBeGreaterThanB",
                            {"column_A": "record_known_at", "column_B": "photo_taken_at", "or_equal": True,
                             "ignore_row_if": "either_value_is_missing"},
                            "photo_taken_at is after record_known_at"))
    for col in ("age", *numeric, "time_days", "event"):
        if col in present:
            view[col] = _numeric(df, col)
            checks.append(Check("ExpectColumnValuesToNotBeNull", {"column": col}, f"{col} is missing or not a number"))
    if "age" in present:
        checks.append(Check("ExpectColumnValuesToBeBetween", {"column": "age", "min_value": c.age_min,
                                                              "max_value": c.age_max},
                            f"age outside {c.age_min:g}-{c.age_max:g} years"))
    if "time_days" in present:
        checks.append(Check("ExpectColumnValuesToBeBetween", {"column": "time_days", "min_value": 0,
                                                              "strict_min": True},
                            "time_days is not > 0 (a same-day death needs a small positive time such as 0.5)"))
    if "event" in present:
        checks.append(Check("ExpectColumnValuesToBeInSet", {"column": "event", "value_set": [0, 1]},
                            "event is not 0 (censored) or 1 (died)"))
    if "sex" in present:
        checks.append(Check("ExpectColumnValuesToBeInSet", {"column": "sex", "value_set": list(SEX_VALUES)},
                            f"sex is not one of {', '.join(SEX_VALUES)}"))
    for col in ("cancer_type", *categorical):
        if col in present:
            checks.append(Check("ExpectColumnValuesToNotBeNull", {"column": col}, f"{col} is empty"))
    return Contract("clinical", view, checks)


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
