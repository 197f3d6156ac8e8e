"""The semi-synthetic cohort's pure parts: subsample, residuals, shift, and the oracle's margin."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facesurv.errors import DataError
from features.synth_cohort import (
    clinical_design,
    martingale_residuals,
    select_patients,
    shift_along,
    standardise,
    synthesize_cohort,
)


def _cohort(clinical, G, direction, **kw):
    opts = {"base": "gbsg2", "patients": 60, "strength": 2.0, "space": "w", "seed": 0, "cox_alpha": 0.01,
            "oracle_folds": 3, "truncation_psi": 1.0}
    opts.update(kw)
    return synthesize_cohort(clinical, G=G, direction=direction, **opts)


@pytest.fixture(scope="module")
def oracle_cohort(gbsg2_clinical, tiny_G, tiny_direction, single_thread):
    with single_thread():
        return _cohort(gbsg2_clinical, tiny_G, tiny_direction.vector.numpy(), patients=250, oracle_folds=5,
                       seed=3)


def test_select_patients_is_stratified_seeded_and_ordered(gbsg2_clinical):
    a = select_patients(gbsg2_clinical, 200, seed=5)
    b = select_patients(gbsg2_clinical, 200, seed=5)
    c = select_patients(gbsg2_clinical, 200, seed=6)
    assert a.equals(b) and not a.equals(c)
    assert len(a) == 200 and list(a.columns) == list(gbsg2_clinical.columns)
    assert a["patient_id"].is_monotonic_increasing
    full_rate = gbsg2_clinical["event"].mean()
    assert abs(a["event"].mean() - full_rate) < 1.0 / 200 + 1e-9
    assert select_patients(gbsg2_clinical, 0, seed=5).equals(gbsg2_clinical)


def test_select_patients_more_than_available(gbsg2_clinical):
    with pytest.raises(DataError, match="asked for 687 patients but the base dataset has only 686"):
        select_patients(gbsg2_clinical, 687, seed=0)


def test_select_patients_negative(gbsg2_clinical):
    with pytest.raises(DataError, match="patients must be >= 0"):
        select_patients(gbsg2_clinical, -1, seed=0)


def test_clinical_design_is_standardised_and_one_hot(gbsg2_clinical):
    X = clinical_design(gbsg2_clinical, "gbsg2")
    # age + 4 numeric standardised; horTh 1, menostat 1, tgrade 2 dummies; sex/cancer_type constant
    assert X.shape == (686, 9)
    assert np.allclose(X[:, :5].mean(0), 0, atol=1e-9) and np.allclose(X[:, :5].std(0), 1)
    assert set(np.unique(X[:, 5:])) == {0.0, 1.0}


def test_martingale_residuals_sum_to_zero_and_sign():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 1))
    time = rng.exponential(1.0 / np.exp(0.8 * x[:, 0])) * 100 + 0.1
    event = rng.random(300) < 0.7
    r = martingale_residuals(x, time, event, alpha=0.0)
    assert abs(r.sum()) < 1e-6  # a property of the Cox MLE with the Breslow baseline
    assert (r <= 1.0 + 1e-12).all()
    assert (r[~event] <= 0).all()  # censored: minus the cumulative hazard
    # among events, the earlier (for its covariate), the larger the residual
    i = np.flatnonzero(event)
    assert np.corrcoef(r[i], time[i] * np.exp(0.8 * x[i, 0]))[0, 1] < -0.5


def test_standardise():
    z = standardise(np.array([1.0, 2.0, 3.0, 6.0]))
    assert z.mean() == pytest.approx(0) and z.std() == pytest.approx(1)
    with pytest.raises(DataError, match="no spread"):
        standardise(np.ones(3))


def test_shift_along_moves_only_along_d_by_strength_times_spread():
    rng = np.random.default_rng(1)
    lat = rng.standard_normal((50, 8)).astype(np.float32)
    d = np.zeros(8)
    d[2] = 2.0
    scores = rng.standard_normal(50)
    shifted, spread = shift_along(lat, d, scores, strength=1.5)
    assert spread == pytest.approx(lat[:, 2].std(), rel=1e-6)
    assert np.allclose(np.delete(shifted, 2, axis=1), np.delete(lat, 2, axis=1))
    assert np.allclose(shifted[:, 2] - lat[:, 2], 1.5 * spread * scores, atol=1e-5)
    assert shifted.dtype == np.float32


def test_cohort_truth_matches_the_rendered_photos(gbsg2_clinical, tiny_G, tiny_direction):
    c = _cohort(gbsg2_clinical, tiny_G, tiny_direction.vector.numpy(), patients=20)
    assert c.images.shape == (20, 16, 16, 3) and c.images.dtype == np.uint8
    assert list(c.clinical.columns) == list(gbsg2_clinical.columns)
    w = torch.from_numpy(np.stack(c.truth["latent"].to_list()))
    with torch.no_grad():
        img = tiny_G.synthesis(w.unsqueeze(1).expand(-1, tiny_G.num_ws, -1), noise_mode="const")
    expected = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(expected, c.images)
    # in space w the base latent is the mapping of the stored z
    z = torch.from_numpy(np.stack(c.truth["z"].to_list()))
    with torch.no_grad():
        base = tiny_G.mapping(z)[:, 0].numpy()
    d = c.direction.astype(np.float64)
    moved = w.numpy().astype(np.float64) - base
    assert np.allclose(moved, np.outer(moved @ d, d), atol=1e-4)  # moved along d only
    assert np.allclose(moved @ d, c.truth["shift"], atol=1e-4)


def test_sign_convention_higher_residual_moves_towards_plus_d(oracle_cohort):
    t = oracle_cohort.truth
    assert np.corrcoef(t["along_d"], t["residual"])[0, 1] > 0.8  # s=2: 2/sqrt(5) ≈ 0.89 expected
    assert (np.sign(t["shift"]) == np.sign(t["residual"])).all()


def test_oracle_beats_clinical_on_held_out_patients(oracle_cohort):
    """A Cox model on the true latent along d plus clinical covariates, fit on a training split
    and scored on held-out patients, beats the clinical model by a clear margin."""
    from sklearn.model_selection import train_test_split
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.metrics import concordance_index_censored
    from sksurv.util import Surv

    clin = oracle_cohort.clinical
    X = clinical_design(clin, "gbsg2")
    along = oracle_cohort.truth["along_d"].to_numpy()
    Xo = np.column_stack([X, (along - along.mean()) / along.std()])
    y = Surv.from_arrays(event=clin["event"].astype(bool), time=clin["time_days"])
    idx_train, idx_test = train_test_split(np.arange(len(clin)), test_size=0.3, random_state=0,
                                           stratify=clin["event"])

    def held_out_c(design):
        m = CoxPHSurvivalAnalysis(alpha=0.01).fit(design[idx_train], y[idx_train])
        yt = y[idx_test]
        return concordance_index_censored(yt["event"], yt["time"], m.predict(design[idx_test]))[0]

    c_clin, c_oracle = held_out_c(X), held_out_c(Xo)
    assert c_oracle > c_clin + 0.1, (c_clin, c_oracle)
    s = oracle_cohort.summary["c_index"]
    assert s["oracle_cox"] > s["clinical_cox"] + 0.1


def test_no_signal_at_strength_zero(gbsg2_clinical, tiny_G, tiny_direction):
    c = _cohort(gbsg2_clinical, tiny_G, tiny_direction.vector.numpy(), patients=250, strength=0.0, seed=3,
                oracle_folds=5)
    assert abs(c.summary["c_index"]["latent_along_d"] - 0.5) < 0.08
    assert np.allclose(c.truth["shift"], 0)


def test_z_space_shifts_z_and_renders_its_mapping(gbsg2_clinical, tiny_G):
    d = np.zeros(tiny_G.z_dim, dtype=np.float32)
    d[0] = 1.0
    c = _cohort(gbsg2_clinical, tiny_G, d, patients=12, space="z")
    z = np.stack(c.truth["z"].to_list())
    assert np.array_equal(z, np.stack(c.truth["latent"].to_list()))
    with torch.no_grad():
        w = tiny_G.mapping(torch.from_numpy(z))[:, 0].numpy()
    assert np.allclose(w, np.stack(c.truth["w"].to_list()), atol=1e-5)


def test_direction_of_wrong_length(gbsg2_clinical, tiny_G):
    with pytest.raises(DataError, match="direction must be a finite non-zero vector of length 512"):
        _cohort(gbsg2_clinical, tiny_G, np.ones(7))


def test_negative_strength(gbsg2_clinical, tiny_G, tiny_direction):
    with pytest.raises(DataError, match="strength must be >= 0"):
        _cohort(gbsg2_clinical, tiny_G, tiny_direction.vector.numpy(), strength=-1.0)


def test_unknown_space(gbsg2_clinical, tiny_G, tiny_direction):
    with pytest.raises(DataError, match="space must be 'z' or 'w'"):
        _cohort(gbsg2_clinical, tiny_G, tiny_direction.vector.numpy(), space="w+")


@pytest.mark.parametrize("base", ["whas500", "flchain", "veterans_lung_cancer", "aids"])
def test_every_base_dataset_builds_with_a_signal(base, tiny_G, tiny_direction):
    from features.cohort import clinical_columns, import_cohort

    clinical = import_cohort(base, seed=1, admission_start="2012-01-01", admission_span_days=100, record_lag_days=3)
    c = _cohort(clinical, tiny_G, tiny_direction.vector.numpy(), base=base, patients=100)
    assert list(c.clinical.columns) == clinical_columns(base) and len(c.truth) == 100
    assert c.summary["c_index"]["latent_along_d"] > 0.6
