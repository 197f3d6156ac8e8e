"""The semi-synthetic cohort's pure parts: subsample, faces, the clinical truth, drawn
outcomes and the ceiling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.synth_cohort import (
    assemble_cohort,
    clinical_design,
    clinical_truth,
    random_direction,
    real_faces,
    rendered_faces,
    select_patients,
)
from features.synth_faces import assign_faces, face_log_hazard, read_face_labels
from features.synth_survival import (
    WeibullPH,
    c_index,
    calibrate_censoring,
    censoring_sampler,
    draw_outcomes,
    fit_weibull_ph,
)
from ground.errors import DataError


@pytest.fixture(scope="module")
def gbsg2_truth(gbsg2_clinical):
    return clinical_truth(gbsg2_clinical, "gbsg2", alpha=0.01)


def _rendered(G, clinical, *, n=60, strength=1.0, space="w", seed=0):
    chosen = select_patients(clinical, n, seed=seed)
    d = random_direction(G.w_dim if space == "w" else G.z_dim, seed=seed)
    faces = rendered_faces(n, G=G, direction=d, space=space, strength=strength, seed=seed, truncation_psi=1.0,
                           photo_ids=chosen["photo_id"].tolist(), patient_ids=chosen["patient_id"].tolist())
    return chosen, faces


# --- patients ---------------------------------------------------------------------------------------

def test_select_patients_is_seeded_ordered_and_blind_to_the_outcome(gbsg2_clinical):
    a = select_patients(gbsg2_clinical, 200, seed=5)
    assert a.equals(select_patients(gbsg2_clinical, 200, seed=5))
    assert not a.equals(select_patients(gbsg2_clinical, 200, seed=6))
    assert len(a) == 200 and list(a.columns) == list(gbsg2_clinical.columns)
    assert a["patient_id"].is_monotonic_increasing
    flipped = gbsg2_clinical.assign(event=1 - gbsg2_clinical["event"], time_days=gbsg2_clinical["time_days"][::-1].values)
    assert select_patients(flipped, 200, seed=5)["patient_id"].equals(a["patient_id"])
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
    sub = gbsg2_clinical.iloc[:50]
    assert np.allclose(clinical_design(sub, "gbsg2", reference=gbsg2_clinical), X[:50])


# --- the clinical truth and drawn outcomes -----------------------------------------------------------

def test_weibull_fit_recovers_a_known_model():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4000, 2))
    truth = WeibullPH(beta=np.array([0.8, -0.4]), scale=0.2, shape=1.5, n=0, events=0)
    t = truth.draw_times(X @ truth.beta, rng.uniform(size=4000))
    c = rng.uniform(0, 3 * np.median(t), size=4000)
    fit = fit_weibull_ph(X, np.minimum(t, c), t <= c, alpha=0.0)
    assert np.allclose(fit.beta, truth.beta, atol=0.08)
    assert abs(fit.shape - 1.5) < 0.1 and abs(np.log(fit.scale / 0.2)) < 0.15


def test_weibull_fit_bad_design():
    with pytest.raises(DataError, match="design must be"):
        fit_weibull_ph(np.zeros((3, 2)), np.ones(4), np.ones(4, bool), alpha=0.0)
    with pytest.raises(DataError, match="alpha must be >= 0"):
        fit_weibull_ph(np.zeros((4, 2)), np.ones(4), np.ones(4, bool), alpha=-1.0)


def test_censoring_sampler_is_a_distribution_ending_at_the_last_follow_up():
    time = np.array([5.0, 10, 20, 30, 40])
    event = np.array([True, False, True, False, False])
    t, p = censoring_sampler(time, event)
    assert np.isclose(p.sum(), 1) and (p > 0).all() and t.max() == 40 and set(t) <= set(time[~event])


def test_calibrated_censoring_reaches_the_target_event_rate():
    rng = np.random.default_rng(1)
    t, c = rng.exponential(1.0, 5000), rng.exponential(1.0, 5000)
    for target in (0.2, 0.5, 0.8):
        f = calibrate_censoring(t, c, target_event_rate=target)
        assert abs(np.mean(t <= f * c) - target) < 0.002


def test_drawn_outcomes_have_the_base_event_rate_and_follow_the_log_hazard(gbsg2_clinical, gbsg2_truth):
    ct, cp = censoring_sampler(gbsg2_clinical["time_days"].to_numpy(), gbsg2_clinical["event"].to_numpy().astype(bool))
    lp = np.random.default_rng(2).normal(0, 1, 3000)
    time, event, _ = draw_outcomes(gbsg2_truth, lp, censor_times=ct, censor_probs=cp, target_event_rate=0.44,
                                   rng=np.random.default_rng(3))
    assert abs(event.mean() - 0.44) < 0.01 and (time >= 1).all() and np.allclose(time, np.round(time))
    assert c_index(time, event, lp) > 0.7 and abs(c_index(time, event, -lp) - (1 - c_index(time, event, lp))) < 1e-9


# --- faces -------------------------------------------------------------------------------------------

def test_assign_faces_gives_distinct_photos_of_the_same_sex(face_folder):
    labels = read_face_labels(face_folder)
    ages = np.array([30.0, 45, 60, 75, 50, 40])
    sexes = np.array(["female", "female", "male", "male", "unknown", "female"])
    m = assign_faces(ages, sexes, labels, gap_sd=5.0, rng=np.random.default_rng(0))
    assert len(set(m.index)) == 6
    assert (labels.sex[m.index][:4] == sexes[:4]).all() and (m.sex == labels.sex[m.index]).all()
    assert np.allclose(m.gap, labels.age[m.index] - ages)


def test_realised_gap_follows_the_drawn_one(face_folder):
    labels = read_face_labels(face_folder)
    ages = np.full(8, 50.0)
    m = assign_faces(ages, np.array(["male"] * 8), labels, gap_sd=15.0, rng=np.random.default_rng(4))
    assert np.corrcoef(m.gap, m.gap_drawn)[0, 1] > 0.8


def test_too_few_photos_of_a_sex(face_folder):
    labels = read_face_labels(face_folder)
    with pytest.raises(DataError, match="43 female patients need distinct photos but only 42"):
        assign_faces(np.full(43, 50.0), np.array(["female"] * 43), labels, gap_sd=5, rng=np.random.default_rng(0))


def test_face_log_hazard_is_log_hr_per_decade():
    assert np.allclose(face_log_hazard(np.array([10.0, -20.0, 0.0]), hr_per_decade=1.151),
                       [np.log(1.151), -2 * np.log(1.151), 0.0])
    with pytest.raises(DataError, match="must be > 0"):
        face_log_hazard(np.zeros(2), hr_per_decade=0)


@pytest.mark.parametrize(("line", "match"), [
    ("../outside.jpg,30,F,white", "not a photo file directly inside"),
    ("missing.jpg,30,F,white", "not a photo file directly inside"),
    ("face_0000.jpg,old,F,white", "age 'old' is not a number"),
    ("face_0000.jpg,130,F,white", "age 130 is outside 0-120"),
    ("face_0000.jpg,30,X,white", "sex 'X' must be M, F, male or female"),
])
def test_bad_label_rows(tmp_path, face_folder, line, match):
    import shutil

    bad = tmp_path / "faces"
    shutil.copytree(face_folder, bad)
    (bad / "labels.csv").write_text("file,age,sex,race_group\n" + line + "\n")
    with pytest.raises(DataError, match=match):
        read_face_labels(bad)


def test_label_file_missing_or_incomplete(tmp_path):
    with pytest.raises(DataError, match="no such face folder"):
        read_face_labels(tmp_path / "nope")
    with pytest.raises(DataError, match="labels.csv: missing"):
        read_face_labels(tmp_path)
    (tmp_path / "labels.csv").write_text("file,age\n")
    with pytest.raises(DataError, match="lacks column"):
        read_face_labels(tmp_path)


def test_linked_photo_is_refused(tmp_path, face_folder):
    import shutil

    bad = tmp_path / "faces"
    shutil.copytree(face_folder, bad)
    (bad / "link.jpg").symlink_to(face_folder / "face_0000.jpg")
    (bad / "labels.csv").write_text("file,age,sex\nlink.jpg,30,F\n")
    with pytest.raises(DataError, match="not a photo file directly inside"):
        read_face_labels(bad)


def test_rendered_faces_carry_the_standardised_coordinate(gbsg2_clinical, tiny_G):
    _, faces = _rendered(tiny_G, gbsg2_clinical, n=80, strength=0.7, space="z")
    z = np.stack(faces.table["z"].to_list())
    assert np.allclose(faces.table["lp_face"], 0.7 * (z.astype(np.float64) @ faces.direction.astype(np.float64)),
                       atol=1e-5)
    assert faces.images.shape == (80, 16, 16, 3) and faces.images.dtype == np.uint8


def test_rendered_faces_in_w_are_standardised_by_the_prior(gbsg2_clinical, tiny_G):
    _, faces = _rendered(tiny_G, gbsg2_clinical, n=200, strength=1.0, space="w")
    assert abs(faces.table["lp_face"].std() - 1.0) < 0.15 and abs(faces.table["lp_face"].mean()) < 0.2


@pytest.mark.parametrize(("kw", "match"), [({"strength": -1.0}, "strength must be >= 0"),
                                           ({"space": "w+"}, "space must be 'z' or 'w'")])
def test_rendered_faces_bad_arguments(gbsg2_clinical, tiny_G, kw, match):
    with pytest.raises(DataError, match=match):
        _rendered(tiny_G, gbsg2_clinical, n=4, **kw)


def test_direction_of_wrong_length(gbsg2_clinical, tiny_G):
    with pytest.raises(DataError, match="direction must be a finite non-zero vector of length 512"):
        rendered_faces(2, G=tiny_G, direction=np.ones(7), space="w", strength=1.0, seed=0, truncation_psi=1.0,
                       photo_ids=["a", "b"], patient_ids=["a", "b"])


# --- outcome from the truth, and the ceiling ---------------------------------------------------------

def test_outcome_is_drawn_from_clinical_and_face_log_hazards(gbsg2_clinical, gbsg2_truth, face_folder):
    labels = read_face_labels(face_folder)
    chosen = select_patients(gbsg2_clinical, 20, seed=0)
    faces = real_faces(chosen, labels, gap_sd=10.0, hr_per_decade=3.0, seed=0)
    cohort = assemble_cohort(chosen, faces, base="gbsg2", base_table=gbsg2_clinical, model=gbsg2_truth,
                             survival_seed=1, seed=0, rung="real faces")
    out = cohort.outcome
    assert np.allclose(out["lp_total"], out["lp_clin"] + out["lp_face"])
    assert np.allclose(out["lp_face"], np.log(3.0) * faces.table["gap"] / 10)
    # the clinical covariates are the real ones; only the outcome was redrawn
    keep = [c for c in chosen.columns if c not in ("time_days", "event")]
    assert cohort.clinical[keep].equals(chosen[keep])
    assert set(cohort.summary["ceiling_c_index"]) == {"face", "clinical", "total"}


def test_ceiling_orders_total_above_its_parts_on_a_large_cohort(gbsg2_clinical, gbsg2_truth, tiny_G):
    chosen, faces = _rendered(tiny_G, gbsg2_clinical, n=600, strength=1.0, space="z", seed=3)
    cohort = assemble_cohort(chosen, faces, base="gbsg2", base_table=gbsg2_clinical, model=gbsg2_truth,
                             survival_seed=3, seed=3, rung="rendered")
    c = cohort.summary["ceiling_c_index"]
    assert c["total"] > max(c["face"], c["clinical"]) and c["face"] > 0.6
    no_signal = assemble_cohort(*_rendered(tiny_G, gbsg2_clinical, n=600, strength=0.0, space="z", seed=3),
                                base="gbsg2", base_table=gbsg2_clinical, model=gbsg2_truth, survival_seed=3,
                                seed=3, rung="rendered")
    assert no_signal.summary["ceiling_c_index"]["total"] == no_signal.summary["ceiling_c_index"]["clinical"]


def test_only_the_outcome_changes_with_the_survival_seed(gbsg2_clinical, gbsg2_truth, tiny_G):
    chosen, faces = _rendered(tiny_G, gbsg2_clinical, n=50, seed=2)
    a = assemble_cohort(chosen, faces, base="gbsg2", base_table=gbsg2_clinical, model=gbsg2_truth,
                        survival_seed=1, seed=2, rung="r")
    b = assemble_cohort(chosen, faces, base="gbsg2", base_table=gbsg2_clinical, model=gbsg2_truth,
                        survival_seed=2, seed=2, rung="r")
    assert np.allclose(a.outcome["lp_total"], b.outcome["lp_total"])
    assert not np.array_equal(a.outcome["time_days"], b.outcome["time_days"])


@pytest.mark.parametrize("base", ["whas500", "flchain", "veterans_lung_cancer", "aids"])
def test_every_base_dataset_draws_a_cohort(base, tiny_G):
    from features.cohort import clinical_columns, import_cohort

    clinical = import_cohort(base, seed=1, admission_start="2012-01-01", admission_span_days=100, record_lag_days=3)
    model = clinical_truth(clinical, base, alpha=0.01)
    chosen, faces = _rendered(tiny_G, clinical, n=100, seed=1)
    c = assemble_cohort(chosen, faces, base=base, base_table=clinical, model=model, survival_seed=1, seed=1,
                        rung="r")
    assert list(c.clinical.columns) == clinical_columns(base) and len(c.outcome) == 100
    assert abs(c.clinical["event"].mean() - clinical["event"].mean()) < 0.08
    assert isinstance(c.clinical, pd.DataFrame)
