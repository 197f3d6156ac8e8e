"""Evaluation metrics and their bootstrap CIs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.metrics import calibration_table, evaluate, risk_tertiles, subgroup_c_index


def _data(n=150, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t = rng.exponential(800 * np.exp(-x))
    c = rng.uniform(200, 2500, n)
    return np.maximum(np.minimum(t, c), 1.0), t <= c, x


def _surv(risk):
    return lambda days: np.exp(-np.outer(np.exp(risk), np.asarray(days) / 800.0))


def test_metrics_rank_a_good_model_above_a_reversed_one():
    time, event, x = _data()
    kw = dict(train_time=time, train_event=event, time=time, event=event, horizons=[365, 1095, 1825],
              groups=np.where(x > 0, "a", "b"), bootstrap=30, seed=0)
    good = evaluate(risk=x, survival=_surv(x), **kw)
    bad = evaluate(risk=-x, survival=_surv(-x), **kw)
    assert good.point["c_index"] > 0.65 and bad.point["c_index"] < 0.35
    assert good.point["uno_c"] > 0.6 and good.point["auc_365d"] > 0.6 and good.point["auc_mean"] > 0.6
    assert good.point["ibs"] < bad.point["ibs"] and good.point["brier_1095d"] < bad.point["brier_1095d"]
    for k in ("c_index", "uno_c", "ibs", "brier_365d"):
        assert good.lower[k] <= good.point[k] <= good.upper[k], k
    assert list(good.subgroups["group"]) == ["a", "b"] and len(good.calibration) >= 2


def test_horizon_beyond_follow_up_is_nan_not_extrapolated():
    time, event, x = _data()
    ev = evaluate(train_time=time, train_event=event, time=time, event=event, risk=x, survival=_surv(x),
                  horizons=[365, 10_000], bootstrap=0, seed=0)
    assert np.isfinite(ev.point["brier_365d"]) and np.isnan(ev.point["brier_10000d"])
    assert np.isnan(ev.lower["c_index"])  # no bootstrap, no interval


def test_evaluate_rejects_an_all_censored_test_set():
    from ground.errors import DataError

    time, event, x = _data()
    with pytest.raises(DataError, match="all 150 patients are censored"):
        evaluate(train_time=time, train_event=event, time=time, event=np.zeros_like(event), risk=x,
                 survival=_surv(x), horizons=[365], bootstrap=0, seed=0)


def test_subgroups_calibration_and_tertiles():
    time, event, x = _data()
    sub = subgroup_c_index(time, event, x, np.array(["breast"] * 149 + ["lung"]), bootstrap=20, seed=0)
    lung = sub.set_index("group").loc["lung"]
    assert lung["n"] == 1 and np.isnan(lung["c_index"])
    cal = calibration_table(time, event, _surv(x)(np.array([1000.0]))[:, 0], 1000.0, bins=5)
    assert len(cal) == 5 and cal["n"].sum() == 150
    assert np.corrcoef(cal["predicted"], cal["observed"])[0, 1] > 0.8
    tert = risk_tertiles(x)
    assert set(np.unique(tert)) == {0, 1, 2} and x[tert == 2].min() >= x[tert == 0].max()


def test_plots_are_written(tmp_path):
    from training import plots

    time, event, x = _data()
    cal = calibration_table(time, event, _surv(x)(np.array([1000.0]))[:, 0], 1000.0)
    sub = pd.DataFrame({"group": ["a"], "n": [10], "events": [5], "c_index": [0.7], "c_index_lo": [0.6],
                        "c_index_hi": [0.8]})
    for f in (plots.calibration_plot(cal, 1000, tmp_path / "cal.png"),
              plots.km_by_tertile(time, event, risk_tertiles(x), tmp_path / "km.png"),
              plots.subgroup_plot(sub, tmp_path / "sub.png")):
        assert f.stat().st_size > 1000 and f.read_bytes()[:4] == b"\x89PNG"


def test_brier_and_ibs_agree_with_scikit_survival():
    from sksurv.metrics import brier_score, integrated_brier_score
    from sksurv.util import Surv

    from training.metrics import evaluation_grid

    time, event, x = _data()
    ev = evaluate(train_time=time, train_event=event, time=time, event=event, risk=x, survival=_surv(x),
                  horizons=[365, 1095], bootstrap=0, seed=0)
    y = Surv.from_arrays(event, time)
    grid = evaluation_grid(time, time)
    assert ev.point["ibs"] == pytest.approx(integrated_brier_score(y, y, _surv(x)(grid), grid))
    ref = brier_score(y, y, _surv(x)(np.array([1095.0]))[:, 0], 1095.0)[1][0]
    assert ev.point["brier_1095d"] == pytest.approx(ref)


def test_resamples_are_the_seeded_draws_less_those_without_an_event():
    """One helper draws every bootstrap here: rng.integers(0, n, n) per resample, as before it was shared."""
    from training.resample import resamples

    event = np.array([True, False, False, False, False])
    rng = np.random.default_rng(7)
    draws = [rng.integers(0, 5, 5) for _ in range(60)]
    expected = [b for b in draws if event[b].any()]
    got = list(resamples(event, count=60, rng=7))
    assert 0 < len(got) == len(expected) < 60
    assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_resamples_from_a_shared_generator_continue_one_stream():
    """The per-group C-indices share one Generator: each group's resamples follow the previous group's."""
    from training.resample import resamples

    first, second = np.array([True, False, True]), np.array([False, True, False, False])
    rng = np.random.default_rng(3)
    a = list(resamples(first, count=4, rng=rng))
    b = list(resamples(second, count=4, rng=rng))
    ref = np.random.default_rng(3)
    expected_a = [x for x in (ref.integers(0, 3, 3) for _ in range(4)) if first[x].any()]
    expected_b = [x for x in (ref.integers(0, 4, 4) for _ in range(4)) if second[x].any()]
    assert all(np.array_equal(x, y) for x, y in zip(a, expected_a, strict=True)) and len(a) == len(expected_a)
    assert all(np.array_equal(x, y) for x, y in zip(b, expected_b, strict=True)) and len(b) == len(expected_b)
