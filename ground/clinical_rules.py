"""The one definition of what a clinical value may be: ids, timestamps, ranges, counts, levels.

Two places check clinical values and both read them from here:

* the clinical data contract (`features.contracts.suites.clinical_contract`) turns each rule
  into a Great Expectations expectation, so a failing row is quarantined with the rule's reason;
* the photo-scoring endpoint calls `check_clinical_fields` on the form fields of a request,
  so a value the contract would quarantine is answered with 422 instead of being scored.

The rules per base cohort name the snake_case columns of `features.cohort.covariate_columns`
(a test keeps the two in step). Ranges are plausibility bounds, wider than the bundled
datasets: they stop impossible or absurd values (a negative count, 1e308, inf), not unusual
patients. Categorical levels are the levels the base dataset has; a level the model never saw
would silently fall on the reference category, so it is refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ground.errors import DataError
from ground.types import CLINICAL_ID_COLUMNS, SEX_VALUES, SURVIVAL_COLUMNS

# --- ids -------------------------------------------------------------------------------------------

ID_CHARS = r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}"
# The API's id rule (OpenAPI / pydantic). Rust regex (pydantic) and `re.fullmatch` read `$` as the end
# of the text; `re.search` / `re.match` would also accept a trailing newline, so use `is_valid_id`.
PATIENT_ID_PATTERN = f"^{ID_CHARS}$"
# The same rule for engines that search (Great Expectations' pandas regex uses str.contains): \Z is
# the end of the text, so "p1\n" fails.
ID_SEARCH_PATTERN = rf"^{ID_CHARS}\Z"
ID_RULE = "letters, digits and . _ : - , starting with a letter or digit, at most 128 characters"
_ID = re.compile(ID_CHARS)


def is_valid_id(value: object) -> bool:
    """True when value is a patient/photo id the API accepts (see PATIENT_ID_PATTERN)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def check_patient_id(value: object, *, field: str = "patient_id") -> str:
    """The id unchanged, or DataError naming the field."""
    if not is_valid_id(value):
        raise DataError(f"{field}: {_show(value)} is not a valid id ({ID_RULE})")
    return str(value)


# --- timestamps ------------------------------------------------------------------------------------

# A record cannot be known after the moment it is checked; clocks of the writing system and of
# this one may differ by this much.
CLOCK_SKEW = dt.timedelta(hours=1)


def latest_record_time(now: dt.datetime | None = None) -> dt.datetime:
    """The latest record_known_at accepted now (UTC): now + CLOCK_SKEW."""
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=dt.UTC)
    return now + CLOCK_SKEW


# --- numbers and levels ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NumericRule:
    """A finite number in [min, max] ((min, max] when min_exclusive), a whole number if integer."""

    name: str
    min: float
    max: float
    unit: str = ""
    integer: bool = False
    min_exclusive: bool = False
    hint: str = ""

    @property
    def reason(self) -> str:
        """What a value outside the range is told (the contract's quarantine reason)."""
        unit = f" {self.unit}" if self.unit else ""
        text = (f"{self.name} is not > {self.min:g} and <= {self.max:g}{unit}" if self.min_exclusive
                else f"{self.name} outside {self.min:g}-{self.max:g}{unit}")
        return f"{text} ({self.hint})" if self.hint else text

    @property
    def integer_reason(self) -> str:
        return f"{self.name} is not a whole number (a count)"

    def accepts(self, x: float) -> bool:
        if not math.isfinite(x) or x > self.max:
            return False
        return x > self.min if self.min_exclusive else x >= self.min

    def check(self, value: object) -> float:
        """value (text or number) as a float, or DataError with a one-line reason naming the field."""
        x = _number(value)
        if x is None:
            raise DataError(f"{self.name}: {_show(value)} is not a number")
        if not math.isfinite(x):
            raise DataError(f"{self.name}: {_show(value)} is not a finite number")
        if not self.accepts(x):
            raise DataError(f"{self.name}: {_show(value)} is out of range; {self.reason}")
        if self.integer and x != math.floor(x):
            raise DataError(f"{self.name}: {_show(value)} is not a whole number (a count)")
        return x


@dataclasses.dataclass(frozen=True)
class CategoricalRule:
    """One of `levels` (exact text); levels None accepts any non-empty text up to 128 characters."""

    name: str
    levels: tuple[str, ...] | None

    @property
    def reason(self) -> str:
        if self.levels is None:
            return f"{self.name} is empty"
        return f"{self.name} is not one of {', '.join(self.levels)}"

    def check(self, value: object) -> str:
        text = _level_text(value)
        if text is None or text == "":
            raise DataError(f"{self.name}: {_show(value)} is not a text value")
        if self.levels is None:
            if len(text) > 128 or not text.isprintable():
                raise DataError(f"{self.name}: {_show(value)} is not printable text of at most 128 characters")
            return text
        if text not in self.levels:
            raise DataError(f"{self.name}: {_show(value)} is not a known level; {self.reason}")
        return text


Rule = NumericRule | CategoricalRule

AGE_RANGE = (0.0, 120.0)  # params.contracts.age_min / age_max override it
TIME_DAYS = NumericRule("time_days", 0, 55_000, "days", min_exclusive=True,
                        hint="a same-day death needs a small positive time such as 0.5; 55,000 days is 150 years")
EVENT_VALUES = (0, 1)
SEX = CategoricalRule("sex", SEX_VALUES)


def _n(name: str, lo: float, hi: float, unit: str = "", *, integer: bool = False) -> NumericRule:
    return NumericRule(name, lo, hi, unit, integer=integer)


def _c(name: str, *levels: str) -> CategoricalRule:
    return CategoricalRule(name, tuple(levels))


_BINARY = ("0", "1")

# Per base cohort: cancer_type levels, then the covariates of features.cohort.covariate_columns(base)
# (numeric first, then categorical, each in that order).
BASE_RULES: dict[str, tuple[tuple[str, ...], tuple[NumericRule, ...], tuple[CategoricalRule, ...]]] = {
    "gbsg2": (
        ("breast",),
        (_n("estrec", 0, 10_000, "fmol/mg"), _n("pnodes", 0, 100, "positive lymph nodes", integer=True),
         _n("progrec", 0, 10_000, "fmol/mg"), _n("tsize", 0, 500, "mm")),
        (_c("hor_th", "no", "yes"), _c("menostat", "Post", "Pre"), _c("tgrade", "I", "II", "III")),
    ),
    "whas500": (
        ("none_myocardial_infarction",),
        (_n("bmi", 5, 100, "kg/m2"), _n("diasbp", 0, 300, "mmHg"), _n("hr", 0, 350, "beats/min"),
         _n("los", 0, 3_650, "days in hospital", integer=True), _n("sysbp", 0, 350, "mmHg")),
        tuple(_c(name, *_BINARY) for name in ("afb", "av3", "chf", "cvd", "miord", "mitype", "sho")),
    ),
    "flchain": (
        ("none_general_population",),
        (_n("creatinine", 0, 30, "mg/dL"), _n("kappa", 0, 1_000, "mg/dL"), _n("lambda", 0, 1_000, "mg/dL"),
         _n("creatinine_missing", 0, 1, "flag", integer=True)),
        (_c("flc_grp", *(str(i) for i in range(1, 11))), _c("mgus", "no", "yes"),
         _c("sample_yr", *(str(y) for y in range(1995, 2004)))),
    ),
    "veterans_lung_cancer": (
        ("lung_adeno", "lung_large", "lung_smallcell", "lung_squamous"),
        (_n("karnofsky_score", 0, 100, "points", integer=True),
         _n("months_from_diagnosis", 0, 1_200, "months", integer=True)),
        (_c("prior_therapy", "no", "yes"), _c("treatment", "standard", "test")),
    ),
    "aids": (
        ("none_hiv",),
        (_n("cd4", 0, 5_000, "cells/uL"), _n("priorzdv", 0, 1_200, "months")),
        (_c("hemophil", *_BINARY), _c("ivdrug", "1", "2", "3"), _c("karnof", "70", "80", "90", "100"),
         _c("raceth", "1", "2", "3", "4", "5"), _c("strat2", *_BINARY), _c("tx", *_BINARY),
         _c("txgrp", "1", "2", "3", "4")),
    ),
}


@dataclasses.dataclass(frozen=True)
class ClinicalRules:
    """Every clinical covariate of one base cohort with its rule (age, sex, cancer_type first)."""

    base: str | None
    numeric: tuple[NumericRule, ...]
    categorical: tuple[CategoricalRule, ...]

    @property
    def fields(self) -> dict[str, Rule]:
        out: dict[str, Rule] = {r.name: r for r in self.numeric}
        out.update((r.name, r) for r in self.categorical)
        return out

    def get(self, name: str) -> Rule | None:
        return self.fields.get(name)


def clinical_rules(base: str | None, *, age_range: tuple[float, float] | None = None) -> ClinicalRules:
    """The rules of a base cohort's covariates; base None: age and sex only, cancer_type any text.

    age_range: (min, max) years, default AGE_RANGE; pass params.contracts (age_min, age_max).
    """
    lo, hi = age_range if age_range is not None else AGE_RANGE
    age = NumericRule("age", float(lo), float(hi), "years")
    if base is None:
        return ClinicalRules(None, (age,), (SEX, CategoricalRule("cancer_type", None)))
    try:
        cancer, numeric, categorical = BASE_RULES[base]
    except KeyError:
        raise DataError(f"unknown base dataset {base!r}; choose one of: {', '.join(BASE_RULES)}") from None
    return ClinicalRules(base, (age, *numeric), (SEX, CategoricalRule("cancer_type", cancer), *categorical))


# --- the photo endpoint ----------------------------------------------------------------------------

# model input columns that are not clinical form fields
NOT_CLINICAL_FIELDS = frozenset({"latent", *CLINICAL_ID_COLUMNS, *SURVIVAL_COLUMNS})


def check_clinical_fields(fields: Mapping[str, object], *, base: str | None,
                          columns: Iterable[str] | None = None,
                          age_range: tuple[float, float] | None = None) -> dict[str, float | str]:
    """Check a scoring request's clinical fields against the contract's rules.

    Args:
        fields: field name -> value as sent (form text; numbers are accepted too).
        base: the served model's base cohort (params.cohort.base): which covariates exist and
            their levels. None: only the rules that hold for every cohort (age, sex, finite numbers).
        columns: the model's input columns (model signature) when known: these clinical fields
            are required ("latent", ids and labels are not fields). None: the base's covariates
            are required when base is given, nothing otherwise.
        age_range: (min, max) age in years, as params.contracts.age_min/age_max.

    Returns:
        {field: value} for every field sent, numbers as float and categories as their level text,
        in the order sent.

    Raises:
        DataError: one line naming the first offending field: an unknown field, missing required
            fields, NaN/inf/non-numbers, values out of range, non-whole counts, unknown levels.
    """
    rules = clinical_rules(base, age_range=age_range)
    known = rules.fields
    model_fields = None if columns is None else [c for c in columns if c not in NOT_CLINICAL_FIELDS]
    if model_fields is not None:
        required = model_fields
    else:
        required = list(known) if base is not None else []
    allowed = set(known) | set(model_fields or [])
    for name in fields:
        if name in NOT_CLINICAL_FIELDS or ((base is not None or columns is not None) and name not in allowed):
            expected = ", ".join(required or sorted(allowed))
            what = f"the {base} cohort" if base is not None else "the model"
            raise DataError(f"field {name[:64]!r} is not a clinical field of {what} (expected: {expected})")
    missing = [c for c in required if c not in fields]
    if missing:
        raise DataError(f"missing clinical field(s) {', '.join(missing)} (the champion model needs them)")
    out: dict[str, float | str] = {}
    for name, value in fields.items():
        rule = known.get(name)
        if rule is not None:
            out[name] = rule.check(value)
            continue
        # a field the model takes but no rule describes (base unknown): a finite number or short text
        x = _number(value)
        if x is not None:
            if not math.isfinite(x):
                raise DataError(f"{name}: {_show(value)} is not a finite number")
            out[name] = x
        else:
            out[name] = CategoricalRule(name, None).check(value)
    return out


# --- helpers ---------------------------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", re.IGNORECASE)


def _number(value: object) -> float | None:
    """A float from a number or numeric text (plain decimal notation, nan/inf spelt out), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            return float(text)
    return None


def _level_text(value: object) -> str | None:
    """Category text; a whole float such as 1.0 (a form field parsed as a number) reads as '1'."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value) and value == math.floor(value) and abs(value) < 1e15:
        return str(int(value))
    return None


def _show(value: object) -> str:
    """A short, one-line rendering of a user's value for an error message."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def describe(rules: ClinicalRules) -> dict[str, Any]:
    """The rules as plain data (docs, OpenAPI descriptions)."""
    out: dict[str, Any] = {}
    for r in rules.numeric:
        out[r.name] = {"min": r.min, "max": r.max, "unit": r.unit, "integer": r.integer,
                       "min_exclusive": r.min_exclusive}
    for c in rules.categorical:
        out[c.name] = {"levels": list(c.levels) if c.levels is not None else None}
    return out
