"""Issue 13, items 3 and 5: one definition of the clinical rules, used by the contract and the API.

`check_clinical_fields` is what the photo endpoint calls on its form fields; the contract builds
its expectations from the same `clinical_rules`, so the two cannot drift apart.
"""

from __future__ import annotations

import re

import pytest

from ground.clinical_rules import (
    BASE_RULES,
    PATIENT_ID_PATTERN,
    check_clinical_fields,
    check_patient_id,
    clinical_rules,
    is_valid_id,
)
from ground.errors import DataError

GBSG2 = {"age": "61", "sex": "female", "cancer_type": "breast", "estrec": "20", "pnodes": "3", "progrec": "40",
         "tsize": "25", "hor_th": "no", "menostat": "Post", "tgrade": "II"}
MODEL = ["age", "estrec", "pnodes", "progrec", "tsize", "latent"]


def test_good_fields_come_back_typed_in_order():
    out = check_clinical_fields(GBSG2, base="gbsg2")
    assert out == {**GBSG2, "age": 61.0, "estrec": 20.0, "pnodes": 3.0, "progrec": 40.0, "tsize": 25.0}
    assert list(out) == list(GBSG2)
    # a model that takes a subset needs only those; the other known fields are still checked
    assert check_clinical_fields({"age": "61", "estrec": "20", "pnodes": "3", "progrec": "40", "tsize": "25.5",
                                  "sex": "female"}, base="gbsg2", columns=MODEL)["tsize"] == 25.5


@pytest.mark.parametrize(("field", "value", "message"), [
    ("age", "nan", "age: 'nan' is not a finite number"),
    ("age", "NaN", "age: 'NaN' is not a finite number"),
    ("age", "inf", "age: 'inf' is not a finite number"),
    ("age", "-Infinity", "age: '-Infinity' is not a finite number"),
    ("age", "-50", "age: '-50' is out of range; age outside 0-120 years"),
    ("age", "1e308", "age: '1e308' is out of range; age outside 0-120 years"),
    ("age", "old", "age: 'old' is not a number"),
    ("age", "1_000", "age: '1_000' is not a number"),
    ("age", "", "age: '' is not a number"),
    ("age", float("nan"), "age: nan is not a finite number"),
    ("age", True, "age: True is not a number"),
    ("pnodes", "-7", "pnodes: '-7' is out of range; pnodes outside 0-100"),
    ("pnodes", "2.5", "pnodes: '2.5' is not a whole number (a count)"),
    ("tsize", "inf", "tsize: 'inf' is not a finite number"),
    ("tgrade", "IV", "tgrade: 'IV' is not a known level; tgrade is not one of I, II, III"),
    ("tgrade", "3", "tgrade: '3' is not a known level"),
    ("sex", "f", "sex: 'f' is not a known level; sex is not one of female, male, unknown"),
    ("cancer_type", "lung_adeno", "cancer_type: 'lung_adeno' is not a known level; cancer_type is not one of breast"),
    ("menostat", 1.5, "menostat: 1.5 is not a text value"),
], ids=lambda v: repr(v)[:24] if not isinstance(v, str) or len(v) < 24 else None)
def test_bad_fields_are_one_line_errors_naming_the_field(field, value, message):
    with pytest.raises(DataError, match=re.escape(message)) as err:
        check_clinical_fields({**GBSG2, field: value}, base="gbsg2")
    assert "\n" not in str(err.value) and str(err.value).startswith(field)


def test_a_missing_required_field_is_named():
    fields = {k: v for k, v in GBSG2.items() if k not in ("pnodes", "tsize")}
    with pytest.raises(DataError, match=re.escape("missing clinical field(s) pnodes, tsize (the champion model")):
        check_clinical_fields(fields, base="gbsg2")
    with pytest.raises(DataError, match=re.escape("missing clinical field(s) estrec, pnodes, progrec, tsize")):
        check_clinical_fields({"age": "61"}, base="gbsg2", columns=MODEL)


@pytest.mark.parametrize("name", ["agee", "time_days", "event", "latent", "chapter"])
def test_fields_no_model_takes_are_refused(name):
    with pytest.raises(DataError, match=f"field '{name}' is not a clinical field of the gbsg2 cohort"):
        check_clinical_fields({**GBSG2, name: "1"}, base="gbsg2")


def test_levels_are_those_of_the_base_cohort():
    assert check_clinical_fields({"karnof": "100"}, base="aids", columns=["karnof"]) == {"karnof": "100"}
    # a form field a server already parsed as a number still names its level
    assert check_clinical_fields({"karnof": 100.0}, base="aids", columns=["karnof"]) == {"karnof": "100"}
    with pytest.raises(DataError, match="karnof: '60' is not a known level"):
        check_clinical_fields({"karnof": "60"}, base="aids", columns=["karnof"])
    with pytest.raises(DataError, match="cancer_type is not one of lung_adeno, lung_large"):
        check_clinical_fields({"cancer_type": "breast"}, base="veterans_lung_cancer", columns=["cancer_type"])


def test_the_age_range_follows_params():
    with pytest.raises(DataError, match="age outside 18-90 years"):
        check_clinical_fields({"age": "17"}, base="gbsg2", columns=["age"], age_range=(18, 90))


def test_without_a_base_the_rules_that_hold_everywhere_apply():
    assert check_clinical_fields({"age": "61", "foo": "2.5", "bar": "x"}, base=None) == {
        "age": 61.0, "foo": 2.5, "bar": "x"}
    for fields, message in (({"age": "-50"}, "age outside"), ({"foo": "inf"}, "foo: 'inf' is not a finite"),
                            ({"sex": "f"}, "sex is not one of"), ({"bar": "x" * 200}, "at most 128")):
        with pytest.raises(DataError, match=message):
            check_clinical_fields(fields, base=None)


def test_an_unknown_base_is_an_error():
    with pytest.raises(DataError, match="unknown base dataset 'nope'"):
        check_clinical_fields({}, base="nope")


@pytest.mark.parametrize("bad", ["../../etc/passwd", "p" * 100_000, "p1\n", "", "-p", "p 1", None, 7])
def test_the_id_rule(bad):
    assert not is_valid_id(bad)
    with pytest.raises(DataError, match="patient_id: .* is not a valid id"):
        check_patient_id(bad)
    assert is_valid_id("gbsg2-00001") and is_valid_id("site:A.b_c-1") and is_valid_id("p" * 128)
    assert not is_valid_id("p" * 129)


def test_the_api_pattern_is_the_rule():
    """PATIENT_ID_PATTERN (OpenAPI / pydantic) and is_valid_id agree, trailing newline aside."""
    for text in ("gbsg2-00001", "../x", "p" * 128, "p" * 129, "a:b", "é"):
        assert bool(re.fullmatch(PATIENT_ID_PATTERN, text)) == is_valid_id(text)


@pytest.mark.parametrize("base", sorted(BASE_RULES))
def test_every_covariate_of_every_base_has_one_rule(base):
    from features.cohort import covariate_columns

    numeric, categorical = covariate_columns(base)
    rules = clinical_rules(base)
    assert [r.name for r in rules.numeric] == ["age", *numeric]
    assert [r.name for r in rules.categorical] == ["sex", "cancer_type", *categorical]


@pytest.mark.parametrize("base", sorted(BASE_RULES))
def test_every_imported_record_meets_the_rules(base):
    """The bundled datasets are inside the ranges and levels (the rules refuse the absurd, not the real)."""
    from features.cohort import clinical_columns, import_cohort

    df = import_cohort(base, seed=0, admission_start="2012-01-01", admission_span_days=100, record_lag_days=5)
    rules = clinical_rules(base)
    for rule in (*rules.numeric, *rules.categorical):
        bad = [v for v in df[rule.name] if not _ok(rule, v)]
        assert not bad, f"{base}.{rule.name}: {bad[:5]}"
    assert set(rules.fields) < set(clinical_columns(base))


def _ok(rule, value) -> bool:
    try:
        rule.check(str(value))
    except DataError:
        return False
    return True
