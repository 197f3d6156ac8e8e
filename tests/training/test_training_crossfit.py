"""Cross-fitted evaluation: out-of-fold predictions for every patient and paired bootstrap CIs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ground.errors import ConfigError, DataError
from training.crossfit import (
    CrossFit,
    bootstrap_derived,
    bootstrap_summary,
    brier_terms,
    ceiling_formulas,
    cross_fit,
    difference,
    fold_assignment,
    ibs_columns,
    ratio,
)

FOLDS = 3


def _columns(df):
    from training.preprocess import clinical_feature_columns

    return clinical_feature_columns(df, base="gbsg2")


def _ceilings(df: pd.DataFrame, true_direction: np.ndarray) -> dict[str, np.ndarray]:
    """The synthetic cohort's true linear predictors (tests/training/conftest.py synth_frame)."""
    face = np.stack(df["latent"].to_numpy()) @ true_direction
    clinical = (0.4 * (df["pnodes"] - df["pnodes"].mean()) / df["pnodes"].std()).to_numpy()
    return {"ceiling_face": face, "ceiling_clinical": clinical, "ceiling_total": face + clinical}


@pytest.fixture(scope="module")
def spied(cohort_df, fast_params):
    """One cross-fit (coxph_clinical, coxnet_latent, fusion) recording every fit's patients.

    `events` is the sequence of ("fold", k) markers (from the progress callback) and
    ("fit", name, patient ids) records, so each fit can be attributed to its outer fold.
    """
    import training.crossfit as crossfit_module

    events: list[tuple] = []
    real = crossfit_module.factory

    def spy_factory(name, training, **kw):
        make = real(name, training, **kw)

        def build():
            model = make()
            fit = model.fit

            def recording_fit(df, **fkw):
                events.append(("fit", name, frozenset(df["patient_id"])))
                return fit(df, **fkw)

            model.fit = recording_fit
            return model
        return build

    def progress(line: str) -> None:
        if "done" not in line:
            events.append(("fold", int(line.split("fold ")[1].split("/")[0]) - 1))

    numeric, categorical = _columns(cohort_df)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(crossfit_module, "factory", spy_factory)
        cf = cross_fit(cohort_df, training=fast_params.training, numeric=numeric, categorical=categorical,
                       folds=FOLDS, seed=0, progress=progress)
    return cf, events


def test_every_patient_gets_exactly_one_out_of_fold_prediction(spied, cohort_df):
    cf, _ = spied
    n = len(cohort_df)
    assert isinstance(cf, CrossFit) and cf.models == ["coxph_clinical", "coxnet_latent", "fusion"]
    assert cf.fold.shape == (n,) and set(cf.fold.tolist()) == set(range(FOLDS))
    assert np.bincount(cf.fold).sum() == n and np.bincount(cf.fold).min() >= n // FOLDS - 1
    assert list(cf.patient_id) == list(cohort_df["patient_id"])
    # event-stratified: every fold holds about the cohort's share of events
    share = [cf.event[cf.fold == k].mean() for k in range(FOLDS)]
    assert max(share) - min(share) < 0.05
    for name in cf.models:
        assert cf.risk[name].shape == (n,) and np.isfinite(cf.risk[name]).all(), name
        s = cf.survival[name]
        assert s.shape == (n, len(cf.grid)) and np.isfinite(s).all() and ((s >= 0) & (s <= 1)).all(), name
        assert (np.diff(s, axis=1) <= 1e-12).all(), name  # survival curves do not rise
    assert all(h in cf.grid for h in (365, 1095, 1825)) and (np.diff(cf.grid) > 0).all()
    assert len(cf.fold_seconds) == FOLDS


def test_no_model_sees_its_held_out_fold(spied):
    cf, events = spied
    held_out = {k: frozenset(cf.patient_id[cf.fold == k]) for k in range(FOLDS)}
    everyone = frozenset(cf.patient_id)
    current = None
    outer = {k: {} for k in range(FOLDS)}
    for ev in events:
        if ev[0] == "fold":
            current = ev[1]
            continue
        _, name, ids = ev
        assert current is not None
        assert not ids & held_out[current], f"{name} saw held-out patients of fold {current}"
        if ids == everyone - held_out[current]:
            outer[current][name] = True
    # in each fold the models and fusion members were fitted on all other folds; the fusion's
    # stage-2 inputs came from refits on parts of them (fusion_folds per member)
    for k in range(FOLDS):
        assert set(outer[k]) == {"coxph_clinical", "coxnet_latent"}, k
    fits = [ev for ev in events if ev[0] == "fit"]
    assert len(fits) == FOLDS * (2 + 2 * 3)  # per fold: 2 models + 2 members x 3 fusion folds


def test_planted_signal_excludes_chance_and_noise_includes_it(cohort_df, true_direction, spied):
    cf, _ = spied
    rng = np.random.default_rng(0)
    ceil = _ceilings(cohort_df, true_direction)
    out = bootstrap_summary(cf.time, cf.event, {"truth": ceil["ceiling_total"], "noise": rng.normal(size=len(cf.time)),
                                                "coxnet": cf.risk["coxnet_latent"]},
                            bootstrap=100, seed=0)
    lo, hi = out["truth"]["c_index"]["ci"]
    assert 0.5 < lo < out["truth"]["c_index"]["value"] < hi
    lo, hi = out["noise"]["c_index"]["ci"]
    assert lo < 0.5 < hi
    assert out["coxnet"]["c_index"]["ci"][0] > 0.5  # the out-of-fold latent model recovers the signal
    assert set(out["truth"]) == {"c_index"} and out["truth"]["c_index"]["resamples"] == 100


def test_paired_difference_of_identical_risks_is_exactly_zero(cohort_df):
    time, event = cohort_df["time_days"].to_numpy(), cohort_df["event"].to_numpy()
    x = np.random.default_rng(1).normal(size=len(time))
    out = bootstrap_derived(time, event, {"a": x, "b": x.copy()}, {"a_minus_b": difference("a", "b")},
                            bootstrap=50, seed=3)
    assert out["a_minus_b"] == {"value": 0.0, "ci": [0.0, 0.0], "resamples": 50}


def test_retention_of_the_ceiling_itself_is_one(cohort_df, true_direction):
    ceil = _ceilings(cohort_df, true_direction)
    time, event = cohort_df["time_days"].to_numpy(), cohort_df["event"].to_numpy()
    risks = {**ceil, "fusion": ceil["ceiling_total"], "coxph_clinical": ceil["ceiling_clinical"],
             "coxnet_latent": ceil["ceiling_face"]}
    out = bootstrap_derived(time, event, risks, ceiling_formulas(), bootstrap=50, seed=0)
    for name in ("retention", "retention_face"):
        assert out[name]["value"] == 1.0 and out[name]["ci"] == [1.0, 1.0], name
    assert out["fusion_gain"]["value"] == out["ceiling_gain"]["value"] > 0


def test_ratio_drops_resamples_with_a_non_positive_denominator(cohort_df):
    time, event = cohort_df["time_days"].to_numpy(), cohort_df["event"].to_numpy()
    x = np.random.default_rng(2).normal(size=len(time))
    # denominator C(noise) - 0.5 is about zero: negative on about half of the resamples
    f = {"r": ratio(lambda c: c["x"] - 0.5, lambda c: c["noise"] - 0.5),
         "never": ratio(lambda c: 1.0, lambda c: -1.0)}
    out = bootstrap_derived(time, event, {"x": x, "noise": -x}, f, bootstrap=40, seed=0)
    assert out["never"] == {"value": None, "ci": [None, None], "resamples": 0}
    assert out["r"]["resamples"] < 40


def test_summary_shares_resamples_and_is_deterministic(spied, cohort_df, true_direction):
    cf, _ = spied
    ceil = _ceilings(cohort_df, true_direction)
    a = cf.summary(bootstrap=30, seed=5, extra_risks=ceil, derived=ceiling_formulas())
    b = cf.summary(bootstrap=30, seed=5, extra_risks=ceil, derived=ceiling_formulas())
    assert a == b
    alone = bootstrap_summary(cf.time, cf.event, {**cf.risk, **ceil}, survival=cf.survival, grid=cf.grid,
                              bootstrap=30, seed=5)
    assert alone == a["models"]
    assert set(a["derived"]) == {"fusion_gain", "ceiling_gain", "retention", "retention_face"}
    assert {"c_index", "ibs"} == set(a["models"]["fusion"]) and set(a["models"]["ceiling_total"]) == {"c_index"}
    ibs = a["models"]["coxnet_latent"]["ibs"]
    assert 0 < ibs["ci"][0] <= ibs["value"] <= ibs["ci"][1] < 0.25


def test_ibs_matches_scikit_survival(cohort_df, spied):
    from sksurv.metrics import integrated_brier_score
    from sksurv.util import Surv

    from training.metrics import evaluation_grid

    cf, _ = spied
    days = evaluation_grid(cf.time, cf.time)
    cols = np.isin(cf.grid, days)
    assert np.array_equal(ibs_columns(cf.time, cf.grid), cols) and cols.sum() == len(days)
    s = cf.survival["coxnet_latent"][:, cols]
    y = Surv.from_arrays(cf.event, cf.time)
    expected = integrated_brier_score(y, y, s, days)
    out = bootstrap_summary(cf.time, cf.event, {"m": cf.risk["coxnet_latent"]},
                            survival={"m": cf.survival["coxnet_latent"]}, grid=cf.grid, bootstrap=0, seed=0)
    assert out["m"]["ibs"]["value"] == pytest.approx(expected, rel=1e-10)
    assert out["m"]["ibs"]["ci"] == [None, None]
    assert brier_terms(cf.time, cf.event, s, days).shape == s.shape


def test_cross_fit_is_deterministic_for_a_seed(cohort_df, fast_params):
    numeric, categorical = _columns(cohort_df)
    kw = dict(training=fast_params.training, numeric=numeric, categorical=categorical, folds=FOLDS,
              models=["coxph_clinical"], progress=lambda _: None)
    a, b = cross_fit(cohort_df, seed=4, **kw), cross_fit(cohort_df, seed=4, **kw)
    c = cross_fit(cohort_df, seed=5, **kw)
    assert np.array_equal(a.fold, b.fold) and np.array_equal(a.risk["coxph_clinical"], b.risk["coxph_clinical"])
    assert np.array_equal(a.survival["coxph_clinical"], b.survival["coxph_clinical"])
    assert not np.array_equal(a.fold, c.fold)
    assert np.array_equal(a.fold, fold_assignment(a.event, folds=FOLDS, seed=4))


def test_clinical_only_frame_skips_latent_models(cohort_df, fast_params):
    numeric, categorical = _columns(cohort_df)
    cf = cross_fit(cohort_df.drop(columns="latent"), training=fast_params.training, numeric=numeric,
                   categorical=categorical, folds=FOLDS, seed=0, progress=lambda _: None)
    assert cf.models == ["coxph_clinical", "fusion"]  # the fusion keeps its clinical member


@pytest.mark.slow
def test_cross_fit_with_every_default_model(cohort_df, fast_params):
    from ground.config import with_overrides

    params = with_overrides(fast_params, training={
        "models": ["coxph_clinical", "deepsurv_clinical", "coxnet_latent", "deepsurv_latent"],
        "fusion_members": ["coxnet_latent", "coxph_clinical", "deepsurv_clinical"]})
    numeric, categorical = _columns(cohort_df)
    lines: list[str] = []
    cf = cross_fit(cohort_df, training=params.training, numeric=numeric, categorical=categorical, folds=FOLDS,
                   seed=0, progress=lines.append)
    assert cf.models == ["coxph_clinical", "deepsurv_clinical", "coxnet_latent", "deepsurv_latent", "fusion"]
    assert all(np.isfinite(r).all() for r in cf.risk.values()) and len(lines) == 2 * FOLDS


# ---------------------------------------------------------------------------------------- bad input
def _cf_call(df, fast_params, **over):
    numeric, categorical = _columns(df) if "pnodes" in df else (("age", "pnodes"), ("sex",))
    kw = dict(training=fast_params.training, numeric=numeric, categorical=categorical, folds=FOLDS, seed=0,
              models=["coxph_clinical"], progress=lambda _: None)
    kw.update(over)
    return cross_fit(df, **kw)


def test_cross_fit_rejects_one_fold(cohort_df, fast_params):
    with pytest.raises(DataError, match=r"folds must be >= 2, got 1; use e.g. folds=5"):
        _cf_call(cohort_df, fast_params, folds=1)


def test_cross_fit_rejects_more_folds_than_events(cohort_df, fast_params):
    df = cohort_df.copy()
    df["event"] = 0
    df.loc[:3, "event"] = 1
    with pytest.raises(DataError, match=r"5 folds need at least 5 events, the data has 4; lower folds to at most 4"):
        _cf_call(df, fast_params, folds=5)


def test_cross_fit_rejects_a_bad_target(cohort_df, fast_params):
    df = cohort_df.copy()
    df.loc[3, "time_days"] = -1.0
    with pytest.raises(DataError, match=r"cross_fit target: time must be > 0 days; 1 values are not \(first at row 3"):
        _cf_call(df, fast_params)


def test_cross_fit_rejects_a_missing_column(cohort_df, fast_params):
    with pytest.raises(DataError, match=r"lacks the column 'event'; it needs time_days and event"):
        _cf_call(cohort_df.drop(columns="event"), fast_params)


def test_cross_fit_rejects_duplicate_patients(cohort_df, fast_params):
    df = pd.concat([cohort_df, cohort_df.head(1)], ignore_index=True)
    with pytest.raises(DataError, match=r"patient_id .* appears more than once; pass one row per patient"):
        _cf_call(df, fast_params)


def test_cross_fit_rejects_latent_models_without_latents(cohort_df, fast_params):
    with pytest.raises(DataError, match=r"\['coxnet_latent'\] need a `latent` column"):
        _cf_call(cohort_df.drop(columns="latent"), fast_params, models=["coxnet_latent"])


def test_cross_fit_rejects_an_unknown_model(cohort_df, fast_params):
    with pytest.raises(ConfigError, match=r"unknown model 'cox'; choose from coxph_clinical"):
        _cf_call(cohort_df, fast_params, models=["cox"])


def test_cross_fit_rejects_a_missing_covariate(cohort_df, fast_params):
    with pytest.raises(DataError, match=r"cross_fit data lacks the columns \['pnodes'\]"):
        _cf_call(cohort_df.drop(columns="pnodes"), fast_params)


@pytest.fixture()
def target(cohort_df):
    return cohort_df["time_days"].to_numpy(), cohort_df["event"].to_numpy()


def test_bootstrap_rejects_mismatched_lengths(target):
    time, event = target
    with pytest.raises(DataError, match=r"risk 'm' has shape \(5,\) but there are 220 patients; pass one risk per"):
        bootstrap_summary(time, event, {"m": np.zeros(5)}, bootstrap=0, seed=0)


def test_bootstrap_rejects_mismatched_time_and_event(target):
    time, event = target
    with pytest.raises(DataError, match=r"time has 220 values but event has 219"):
        bootstrap_summary(time, event[:-1], {"m": np.zeros(220)}, bootstrap=0, seed=0)


def test_bootstrap_rejects_non_finite_risks(target):
    time, event = target
    r = np.zeros(len(time))
    r[7] = np.nan
    with pytest.raises(DataError, match=r"risk 'm' has 1 NaN or infinite values \(first at row 7\); pass finite"):
        bootstrap_summary(time, event, {"m": r}, bootstrap=0, seed=0)


def test_bootstrap_rejects_a_negative_resample_count(target):
    time, event = target
    with pytest.raises(DataError, match=r"number of resamples must be an integer >= 0, got -1"):
        bootstrap_summary(time, event, {"m": np.zeros(len(time))}, bootstrap=-1, seed=0)


def test_bootstrap_rejects_survival_of_the_wrong_shape(target):
    time, event = target
    with pytest.raises(DataError, match=r"survival 'm' has shape \(220, 2\), expected \(220, 3\)"):
        bootstrap_summary(time, event, {"m": np.zeros(len(time))}, survival={"m": np.ones((len(time), 2))},
                          grid=np.array([100.0, 200.0, 300.0]), bootstrap=0, seed=0)


def test_bootstrap_rejects_survival_without_grid(target):
    time, event = target
    with pytest.raises(DataError, match=r"survival was given without grid"):
        bootstrap_summary(time, event, {"m": np.zeros(len(time))}, survival={"m": np.ones((len(time), 2))},
                          bootstrap=0, seed=0)


def test_bootstrap_rejects_a_formula_on_a_missing_risk(target):
    time, event = target
    with pytest.raises(DataError, match=r"derived statistic 'fusion_gain' needs the risk 'fusion'; pass it in risks"):
        bootstrap_derived(time, event, {"m": np.zeros(len(time))}, ceiling_formulas(), bootstrap=0, seed=0)
