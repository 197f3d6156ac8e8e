"""Model units: preprocessing, Breslow baseline, CoxPH, Coxnet health direction, DeepSurv, fusion."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ground.errors import DataError
from training.baseline import breslow, survival_at
from training.preprocess import Preprocessor, clinical_feature_columns


def _c(df, risk):
    from sksurv.metrics import concordance_index_censored

    return concordance_index_censored(df["event"].to_numpy(bool), df["time_days"].to_numpy(float), risk)[0]


def test_preprocessor_one_hot_reference_and_unseen_level():
    df = pd.DataFrame({"age": [50.0, 60.0, 70.0], "grade": ["I", "II", "III"]})
    p = Preprocessor(("age",), ("grade",)).fit(df)
    X = p.transform(df)
    assert p.feature_names == ["age", "grade=II", "grade=III"]
    np.testing.assert_allclose(X[:, 0], (df["age"] - 60) / df["age"].std(ddof=0))
    np.testing.assert_array_equal(X[:, 1:], [[0, 0], [1, 0], [0, 1]])
    unseen = p.transform(pd.DataFrame({"age": [60.0], "grade": ["IV"]}))
    np.testing.assert_array_equal(unseen, [[0.0, 0.0, 0.0]])


def test_preprocessor_rejects_nan_covariate():
    df = pd.DataFrame({"age": [50.0, np.nan, 70.0], "grade": ["I", "II", "III"]})
    with pytest.raises(DataError, match=r"covariate 'age' has 1 missing .*first at row 1"):
        Preprocessor(("age",), ("grade",)).fit(df)


def test_clinical_columns_inferred_and_from_base(cohort_df):
    num, cat = clinical_feature_columns(cohort_df)
    assert "pnodes" in num and "age" in num and "tgrade" in cat and "latent" not in num + cat
    assert "time_days" not in num and "patient_id" not in cat
    num_b, cat_b = clinical_feature_columns(cohort_df, base="gbsg2")
    assert set(num_b) == set(num) and set(cat_b) == set(cat)
    # what the feature store adds beside the latent is provenance, not a covariate
    feast_like = cohort_df.assign(perceptual_loss=0.1, steps=100, generator_sha256="abc", space="w",
                                  generator_version="facesurv-generator v2",
                                  event_timestamp=pd.Timestamp("2020-01-01", tz="UTC"))
    assert clinical_feature_columns(feast_like) == (num, cat)
    # every face_latent feature of the store's schema, with a value of its kind
    from features.feature_repo.schema import LATENT_FEATURES

    dummy = {"string": "x", "int64": 1, "float32": 0.5, "bool": True}
    every = cohort_df.assign(**{n: dummy[k] for n, k in LATENT_FEATURES if k in dummy})
    assert clinical_feature_columns(every) == (num, cat)


def test_breslow_matches_nelson_aalen_without_covariates():
    time = np.array([1.0, 2.0, 2.0, 3.0, 5.0])
    event = np.array([True, True, False, True, False])
    t, h = breslow(time, event, np.zeros(5))
    np.testing.assert_allclose(t, [1, 2, 3])
    np.testing.assert_allclose(h, np.cumsum([1 / 5, 1 / 4, 1 / 2]))
    s = survival_at(t, h, np.array([0.0, 1.0]), np.array([0.5, 2.5, 10.0]))
    assert s[0, 0] == 1.0 and np.all(np.diff(s, axis=1) <= 0) and np.all(s[1] <= s[0])


def test_coxph_finds_the_clinical_effect(cohort_df, fast_params):
    from training.models import factory

    num, cat = clinical_feature_columns(cohort_df)
    m = factory("coxph_clinical", fast_params.training, numeric=num, categorical=cat)().fit(cohort_df)
    coef = dict(zip(m.preprocessor.feature_names, m.coef_, strict=True))
    assert coef["pnodes"] > 0.1
    s = m.predict_survival(cohort_df.head(5), np.array([365.0, 1825.0]))
    assert s.shape == (5, 2) and np.all((s >= 0) & (s <= 1)) and np.all(s[:, 1] <= s[:, 0])


def test_coxnet_health_direction_on_raw_latent_scale(cohort_df, fast_params, true_direction):
    from training.models import factory

    m = factory("coxnet_latent", fast_params.training, numeric=(), categorical=())().fit(cohort_df)
    d = m.health_direction
    # the latents were multiplied by per-dimension scales, so the raw-scale truth is direction / scale
    truth = true_direction
    assert d.shape == truth.shape
    cos = d @ truth / (np.linalg.norm(d) * np.linalg.norm(truth))
    assert cos > 0.8, cos
    z = np.stack(cohort_df["latent"].to_numpy())
    np.testing.assert_allclose(m.predict_risk(cohort_df) - m.predict_risk(cohort_df).mean(),
                               (z - z.mean(axis=0)) @ d, atol=1e-8)


def test_deepsurv_trains_and_predicts(cohort_df, fast_params):
    from training.models import factory

    num, cat = clinical_feature_columns(cohort_df)
    m = factory("deepsurv_latent", fast_params.training, numeric=num, categorical=cat)()
    m.config["epochs"] = 12
    m.fit(cohort_df)
    risk = m.predict_risk(cohort_df)
    assert np.isfinite(risk).all() and np.ptp(risk) > 0
    assert _c(cohort_df, risk) > 0.6
    s = m.predict_survival(cohort_df.head(3), np.array([100.0, 1000.0]))
    assert np.all(s[:, 1] <= s[:, 0])


def test_pycox_ibs_works_with_the_scipy_shim(cohort_df):
    from training.deepsurv import pycox_models

    pycox_models()
    from pycox.evaluation import EvalSurv

    times = np.array([100.0, 500.0, 1000.0])
    surv = pd.DataFrame(np.tile([[0.9], [0.7], [0.5]], (1, len(cohort_df))), index=times)
    ev = EvalSurv(surv, cohort_df["time_days"].to_numpy(), cohort_df["event"].to_numpy(), censor_surv="km")
    assert 0 < ev.integrated_brier_score(np.linspace(100, 900, 5)) < 1


def test_out_of_fold_refits_check_events_at_the_folds_share(cohort_df, fast_params):
    # a member that just passes the check on the whole training part would fail it on every
    # fold (which holds (k-1)/k of the events); the fusion must not fail because of that
    from ground.errors import DataError
    from training.fusion import out_of_fold_risks
    from training.models import factory
    from training.preprocess import Preprocessor

    num, cat = clinical_feature_columns(cohort_df)
    make = factory("coxph_clinical", fast_params.training, numeric=num, categorical=cat)
    n_features = len(Preprocessor(num, cat).fit(cohort_df).feature_names)
    just_enough = int(cohort_df["event"].sum()) / n_features      # the whole part passes exactly
    make().fit(cohort_df, min_events_per_feature=just_enough)
    with pytest.raises(DataError, match="too few events"):
        make().fit(cohort_df.iloc[: len(cohort_df) * 4 // 5], min_events_per_feature=just_enough)
    oof = out_of_fold_risks(cohort_df, {"coxph_clinical": make}, folds=5, seed=0, min_events_per_feature=just_enough)
    assert np.isfinite(oof.to_numpy(dtype=float)).all()


def test_fusion_uses_out_of_fold_risks(cohort_df, fast_params):
    from training.fusion import FusionModel, out_of_fold_risks
    from training.models import factory

    num, cat = clinical_feature_columns(cohort_df)
    fac = {m: factory(m, fast_params.training, numeric=num, categorical=cat) for m in ("coxph_clinical", "coxnet_latent")}
    oof = out_of_fold_risks(cohort_df, fac, folds=3, seed=0, min_events_per_feature=1.0)
    assert oof.shape == (len(cohort_df), 2) and np.isfinite(oof.to_numpy()).all()
    members = {k: f().fit(cohort_df) for k, f in fac.items()}
    fusion = FusionModel(members, alpha=1e-4).fit_stage2(oof, cohort_df["time_days"].to_numpy(float),
                                                         cohort_df["event"].to_numpy(), min_events_per_feature=1.0)
    assert fusion.coef_[list(members).index("coxnet_latent")] > 0
    assert _c(cohort_df, fusion.predict_risk(cohort_df)) >= _c(cohort_df, members["coxph_clinical"].predict_risk(cohort_df))


def test_a_risk_a_few_ulps_from_a_training_risk_keeps_its_percentile():
    # the same patient scored in another batch can differ in the last bits of its risk
    from training.base import SurvivalModel

    m = SurvivalModel(Preprocessor())
    m.train_risk_sorted_ = np.array([-1.0, -0.2, 0.3, 0.3, 1.7])
    exact = m.risk_percentile(np.array([0.3]))
    below = m.risk_percentile(np.array([np.nextafter(0.3, -1.0)]))
    assert exact[0] == below[0] == 80.0
    assert m.risk_percentile(np.array([0.29]))[0] == 40.0  # a real difference still moves the rank
