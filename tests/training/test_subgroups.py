"""Harrell's C by subgroup: planted signal, groups too small to show, input checks, determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ground.errors import DataError
from training.subgroups import age_bands, group_columns, subgroup_c_index_table, subgroup_text


def planted(n: int = 600, *, seed: int = 0) -> dict:
    """A cohort whose hazard is exp(1.5 * signal); 'noise' is a risk unrelated to survival."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    t = rng.exponential(1000.0 * np.exp(-1.5 * signal))
    c = rng.uniform(200, 3000, n)
    time = np.maximum(np.minimum(t, c), 1.0)
    event = t <= c
    sex = rng.choice(["female", "male"], n)
    age = rng.integers(30, 90, n)
    return {"time": time, "event": event, "risks": {"planted": signal, "noise": rng.normal(size=n)},
            "frame": pd.DataFrame({"age": age, "sex": sex, "cancer_type": rng.choice(["breast", "lung"], n)})}


@pytest.fixture(scope="module")
def cohort() -> dict:
    return planted()


def test_planted_signal_has_a_ci_above_one_half_in_every_big_group(cohort):
    groups = group_columns(cohort["frame"])
    rows = subgroup_c_index_table(cohort["time"], cohort["event"], cohort["risks"], groups, bootstrap=100, seed=0)
    assert {r["grouping"] for r in rows} == {"age", "sex", "cancer_type"}
    shown = [r for r in rows if r["model"] == "planted" and r["events"] >= 40]
    assert len(shown) >= 6
    for r in shown:
        stat = r["c_index"]
        assert r["reason"] is None and stat["resamples"] >= 90
        assert stat["ci"][0] > 0.5, r
        assert stat["ci"][0] <= stat["value"] <= stat["ci"][1]
    noise = [r["c_index"] for r in rows if r["model"] == "noise" and r["events"] >= 40]
    assert all(s["ci"][0] < 0.5 < s["ci"][1] or abs(s["value"] - 0.5) < 0.1 for s in noise)


def test_groups_keep_category_order_and_counts_add_up(cohort):
    groups = group_columns(cohort["frame"])
    rows = subgroup_c_index_table(cohort["time"], cohort["event"], {"planted": cohort["risks"]["planted"]},
                                  {"age": groups["age"]}, bootstrap=0)
    assert [r["group"] for r in rows] == ["<50", "50-64", "65-74", ">=75"]
    assert sum(r["n"] for r in rows) == len(cohort["time"])
    assert sum(r["events"] for r in rows) == int(cohort["event"].sum())
    assert all(r["c_index"]["ci"] == [None, None] and r["c_index"]["resamples"] == 0 for r in rows)


def test_a_group_with_nine_events_gets_no_number():
    rng = np.random.default_rng(1)
    n = 200
    time = rng.uniform(10, 1000, n)
    event = np.zeros(n, dtype=bool)
    group = np.array(["big"] * 150 + ["small"] * 50, dtype=object)
    event[:60] = True
    event[150:159] = True  # 9 events in "small"
    rows = subgroup_c_index_table(time, event, {"m": rng.normal(size=n)}, {"g": group}, bootstrap=20)
    small = next(r for r in rows if r["group"] == "small")
    assert small["c_index"] is None and small["events"] == 9 and small["n"] == 50
    assert small["reason"] == "fewer than 10 events (9)"
    assert subgroup_text(small) == "not shown: fewer than 10 events (9)"
    big = next(r for r in rows if r["group"] == "big")
    assert isinstance(big["c_index"]["value"], float)
    assert subgroup_text(big).startswith(f"{big['c_index']['value']:.3f} [")
    relaxed = subgroup_c_index_table(time, event, {"m": rng.normal(size=n)}, {"g": group}, min_events=9, bootstrap=0)
    assert next(r for r in relaxed if r["group"] == "small")["c_index"] is not None


def test_subgroup_text_formats():
    row = {"c_index": {"value": 0.6123, "ci": [0.551, 0.6712], "resamples": 200}, "reason": None}
    assert subgroup_text(row) == "0.612 [0.55, 0.67]"
    assert subgroup_text({"c_index": {"value": 0.6, "ci": [None, None], "resamples": 3}}) == "0.600 [no CI]"


def test_missing_labels_leave_the_patient_out(cohort):
    sex = cohort["frame"]["sex"].to_numpy(dtype=object).copy()
    sex[:10] = None
    rows = subgroup_c_index_table(cohort["time"], cohort["event"], {"p": cohort["risks"]["planted"]},
                                  {"sex": sex}, bootstrap=0)
    assert [r["group"] for r in rows] == ["female", "male"]
    assert sum(r["n"] for r in rows) == len(sex) - 10


def test_deterministic_given_seed_and_independent_of_other_groupings(cohort):
    groups = group_columns(cohort["frame"])
    args = (cohort["time"], cohort["event"], cohort["risks"])
    a = subgroup_c_index_table(*args, groups, bootstrap=30, seed=5)
    b = subgroup_c_index_table(*args, groups, bootstrap=30, seed=5)
    c = subgroup_c_index_table(*args, groups, bootstrap=30, seed=6)
    assert a == b
    assert a != c
    only_sex = subgroup_c_index_table(*args, {"sex": groups["sex"]}, bootstrap=30, seed=5)
    assert only_sex == [r for r in a if r["grouping"] == "sex"]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"min_events": 0}, "min_events must be an integer >= 1"),
    ({"level": 1.5}, r"level must be in \(0, 1\)"),
    ({"level": 0}, r"level must be in \(0, 1\)"),
    ({"bootstrap": -1}, "bootstrap must be an integer >= 0"),
])
def test_bad_options_are_refused(cohort, kwargs, match):
    with pytest.raises(DataError, match=match):
        subgroup_c_index_table(cohort["time"], cohort["event"], cohort["risks"], {"sex": cohort["frame"]["sex"]},
                               **kwargs)


def test_length_mismatches_are_refused(cohort):
    time, event, risks = cohort["time"], cohort["event"], cohort["risks"]
    with pytest.raises(DataError, match=r"groups 'sex' has 599 labels but there are 600 patients"):
        subgroup_c_index_table(time, event, risks, {"sex": cohort["frame"]["sex"][:-1]})
    with pytest.raises(DataError, match=r"risk 'short' has shape \(5,\) but there are 600 patients"):
        subgroup_c_index_table(time, event, {"short": np.zeros(5)}, {"sex": cohort["frame"]["sex"]})
    with pytest.raises(DataError, match="NaN or infinite"):
        subgroup_c_index_table(time, event, {"nan": np.full(600, np.nan)}, {"sex": cohort["frame"]["sex"]})
    with pytest.raises(DataError, match="groups must be a non-empty dict"):
        subgroup_c_index_table(time, event, risks, {})
    with pytest.raises(DataError, match="time has 600 values but event has 3"):
        subgroup_c_index_table(time, event[:3], risks, {"sex": cohort["frame"]["sex"]})


def test_age_bands_labels_and_checks():
    bands = age_bands([0, 49, 49.5, 50, 64, 65, 74.9, 75, 120, np.nan])
    assert list(bands.categories) == ["<50", "50-64", "65-74", ">=75"]
    assert list(bands.astype(object)[:9]) == ["<50", "<50", "<50", "50-64", "50-64", "65-74", "65-74", ">=75", ">=75"]
    assert pd.isna(bands[9])
    assert list(age_bands([1.0], edges=(0, 40.5, 100)).categories) == ["<40.5", ">=40.5"]
    assert list(age_bands([1.0], edges=(0, 10, 20.5, 100)).categories) == ["<10", "10-<20.5", ">=20.5"]
    with pytest.raises(DataError, match=r"outside \[0, 200\) \(first at row 1"):
        age_bands([30, 250])
    with pytest.raises(DataError, match="strictly increasing"):
        age_bands([30], edges=(0, 65, 50, 200))
    with pytest.raises(DataError, match="at least 3"):
        age_bands([30], edges=(0, 200))
    with pytest.raises(DataError, match="age must be numeric"):
        age_bands(["old"])


def test_group_columns_takes_only_present_columns():
    frame = pd.DataFrame({"sex": ["female", "male"], "site": ["a", "b"], "other": [1, 2]})
    groups = group_columns(frame, extra=("site", "absent"))
    assert list(groups) == ["sex", "site"]
    assert list(groups["site"]) == ["a", "b"]
    with pytest.raises(DataError, match="pandas DataFrame"):
        group_columns({"sex": ["f"]})  # type: ignore[arg-type]
