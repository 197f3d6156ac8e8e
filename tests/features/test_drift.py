"""Nightly drift checks (features.drift): quiet on one distribution, loud on planted shifts, Holm by hand,
deterministic subsampling, the verdict's lines, and every bad input refused with a message."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from features.drift import _mmd2_batch as mmd2_batch
from features.drift import clinical_drift, drift_verdict, holm_adjust, latent_drift
from ground.errors import DataError

NUMERIC, CATEGORICAL = ["age", "bmi"], ["sex", "cancer_type"]
SCALES = np.linspace(0.5, 2.0, 16)  # an anisotropic reference, so "SDs along the moved direction" matters


def patients(n: int, *, seed: int, age_shift: float = 0.0, new_level: float = 0.0) -> pd.DataFrame:
    """n patients; age ~ N(60 + age_shift, 10); a share `new_level` of cancer types is 'melanoma'."""
    rng = np.random.default_rng(seed)
    cancer = rng.choice(["breast", "lung", "colon"], n, p=[0.5, 0.3, 0.2]).astype(object)
    cancer[rng.random(n) < new_level] = "melanoma"
    return pd.DataFrame({"age": rng.normal(60 + age_shift, 10, n), "bmi": rng.normal(26, 4, n),
                         "sex": rng.choice(["female", "male"], n), "cancer_type": cancer})


def latents(n: int, *, seed: int, shift: np.ndarray | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, len(SCALES))) * SCALES
    return x if shift is None else x + shift


def one_sd_along(seed: int) -> np.ndarray:
    """A random direction v scaled to one reference SD along it: sqrt(v' diag(SCALES²) v)."""
    v = np.random.default_rng(seed).standard_normal(len(SCALES))
    v /= np.linalg.norm(v)
    return v * np.sqrt(v**2 @ SCALES**2)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return patients(500, seed=0)


# --- clinical ---------------------------------------------------------------------------------


def test_same_distribution_does_not_drift(reference):
    got = clinical_drift(reference, patients(300, seed=1), numeric=NUMERIC, categorical=CATEGORICAL)
    assert [f["feature"] for f in got["features"]] == NUMERIC + CATEGORICAL
    assert got["drifted"] == [] and got["untested"] == []
    assert all(f["p_value"] > 0.05 and not f["drifted"] for f in got["features"])
    assert all(f["unseen_levels"] == {} for f in got["features"] if f["kind"] == "categorical")
    assert (got["n_reference"], got["n_current"], got["alpha"], got["correction"]) == (500, 300, 0.01, "holm")
    assert drift_verdict(got, None, max_latent_shift_sd=0.5, mmd_alpha=0.01) == {
        "drift": False, "reasons": [], "checked": ["clinical"]}


def test_shifted_age_and_a_new_cancer_type_are_flagged_by_name(reference):
    cur = patients(300, seed=2, age_shift=10, new_level=0.15)
    got = clinical_drift(reference, cur, numeric=NUMERIC, categorical=CATEGORICAL)
    assert got["drifted"] == ["age", "cancer_type"]
    rows = {f["feature"]: f for f in got["features"]}
    age, cancer = rows["age"], rows["cancer_type"]
    assert (age["test"], age["effect_measure"]) == ("ks", "smd")
    assert age["effect"] == pytest.approx(1.0, abs=0.25) and age["p_adjusted"] < 1e-6
    assert (cancer["test"], cancer["effect_measure"]) == ("chi2", "tvd")
    assert cancer["unseen_levels"] == {"melanoma": int((cur["cancer_type"] == "melanoma").sum())}
    assert 0.1 < cancer["effect"] < 0.2
    assert not rows["bmi"]["drifted"] and not rows["sex"]["drifted"]
    verdict = drift_verdict(got, None, max_latent_shift_sd=0.5, mmd_alpha=0.01)
    assert verdict["drift"] is True
    assert verdict["reasons"][0].startswith("clinical: age drifted (KS p_adj ") and verdict["reasons"][0].endswith(
        f", smd {age['effect']:.2f})")
    assert verdict["reasons"][2] == (f"clinical: cancer_type has levels unseen in the reference: "
                                     f"melanoma ({cancer['unseen_levels']['melanoma']})")
    assert len(verdict["reasons"]) == 3


def test_missing_values_are_counted_and_left_out(reference):
    cur = patients(300, seed=1)
    cur.loc[:4, "age"] = np.nan
    cur.loc[10:12, "sex"] = None
    got = {f["feature"]: f for f in clinical_drift(reference, cur, numeric=["age"], categorical=["sex"])["features"]}
    assert got["age"]["missing"] == {"reference": 0, "current": 5}
    assert got["age"]["n"] == {"reference": 500, "current": 295}
    assert got["sex"]["missing"] == {"reference": 0, "current": 3}
    assert got["age"]["p_value"] == pytest.approx(stats.ks_2samp(reference["age"], cur["age"].dropna()).pvalue)
    table = [reference["sex"].value_counts().sort_index(), cur["sex"].dropna().value_counts().sort_index()]
    chi = stats.chi2_contingency(np.array(table), correction=False)
    assert got["sex"]["statistic"] == pytest.approx(chi.statistic)


def test_whole_numbers_read_as_one_level_when_a_missing_value_makes_the_column_float():
    ref = pd.DataFrame({"grade": [1, 2, 3, 1, 2, 3]})
    cur = pd.DataFrame({"grade": [1.0, 2.0, np.nan, 3.0]})
    row = clinical_drift(ref, cur, numeric=[], categorical=["grade"])["features"][0]
    assert row["unseen_levels"] == {} and row["missing"]["current"] == 1 and row["statistic"] == pytest.approx(0.0)


def test_a_column_emptied_in_the_batch_is_untested_and_marks_drift(reference):
    cur = patients(50, seed=3)
    cur["bmi"] = np.nan
    got = clinical_drift(reference, cur, numeric=NUMERIC, categorical=[])
    bmi = got["features"][1]
    assert got["untested"] == ["bmi"] and bmi["p_value"] is None and bmi["p_adjusted"] is None
    assert bmi["note"] == "not tested: needs 2 non-missing values per side (current has 0)"
    assert got["features"][0]["p_adjusted"] == got["features"][0]["p_value"]  # a family of one
    verdict = drift_verdict(got, None, max_latent_shift_sd=0.5, mmd_alpha=0.01)
    assert verdict["reasons"] == ["clinical: bmi not tested: needs 2 non-missing values per side (current has 0)"]


def test_holm_matches_a_hand_computation(reference):
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> 0.06, monotone)
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.5, 0.4]) == pytest.approx([0.8, 0.8])
    assert holm_adjust([0.02, 0.02, 0.9]) == pytest.approx([0.06, 0.06, 0.9])
    assert holm_adjust([]) == []
    got = clinical_drift(reference, patients(300, seed=2, age_shift=3), numeric=NUMERIC, categorical=CATEGORICAL)
    assert [f["p_adjusted"] for f in got["features"]] == holm_adjust([f["p_value"] for f in got["features"]])
    with pytest.raises(DataError, match=r"p-values must be a 1-D list of numbers in \[0, 1\]"):
        holm_adjust([0.5, 1.5])


@pytest.mark.parametrize(("change", "match"), [
    (lambda r, c: ("nope", c, {}), "reference must be a pandas DataFrame, got str"),
    (lambda r, c: (r, c.head(1), {}), "current has 1 rows; drift needs at least 2 per side"),
    (lambda r, c: (r.drop(columns="bmi"), c, {}), "the reference frame has no column 'bmi'"),
    (lambda r, c: (r, c.drop(columns="sex"), {}), "the current frame has no column 'sex'"),
    (lambda r, c: (r, c, {"alpha": 0}), r"alpha must be in \(0, 1\)"),
    (lambda r, c: (r, c, {"alpha": 1.0}), r"alpha must be in \(0, 1\)"),
    (lambda r, c: (r, c, {"numeric": "age"}), "numeric must be a list of column names"),
    (lambda r, c: (r, c, {"numeric": [], "categorical": []}), "no features to check"),
    (lambda r, c: (r, c, {"categorical": ["sex", "age"]}), "features listed more than once: age"),
    (lambda r, c: (r, c.assign(age="old"), {}), "numeric feature 'age' has non-numeric values in the current"),
    (lambda r, c: (r.assign(bmi=np.inf), c, {}), "numeric feature 'bmi' has infinite values in the reference"),
])
def test_bad_clinical_inputs_are_refused(reference, change, match):
    ref, cur, options = change(reference, patients(20, seed=4))
    kwargs = {"numeric": NUMERIC, "categorical": CATEGORICAL, **options}
    with pytest.raises(DataError, match=match):
        clinical_drift(ref, cur, **kwargs)


# --- latent -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def latent_ref() -> np.ndarray:
    return latents(600, seed=10)


def test_same_distribution_latents_do_not_drift(latent_ref):
    got = latent_drift(latent_ref, latents(200, seed=11), permutations=100, seed=0)
    assert got["mean_shift_sd"] < 0.25 and got["mmd_p_value"] > 0.1
    assert got["mean_shift_sd_raw"] >= got["mean_shift_sd"]
    assert (got["n_reference"], got["n_current"], got["permutations"]) == (600, 200, 100)
    assert got["rows_used"] == {"reference": 600, "current": 200}
    assert drift_verdict(None, got, max_latent_shift_sd=0.5, mmd_alpha=0.02) == {
        "drift": False, "reasons": [], "checked": ["latent"]}


def test_a_batch_moved_one_sd_along_a_direction_is_flagged(latent_ref):
    got = latent_drift(latent_ref, latents(200, seed=12, shift=one_sd_along(5)), permutations=100, seed=0)
    assert got["mean_shift_sd"] == pytest.approx(1.0, abs=0.25)
    assert got["mmd_p_value"] == pytest.approx(1 / 101)  # no relabelling reaches the observed MMD²
    verdict = drift_verdict(None, got, max_latent_shift_sd=0.5, mmd_alpha=0.02)
    assert verdict["drift"] is True
    assert verdict["reasons"] == [
        f"latent mean moved {got['mean_shift_sd']:.2f} reference SDs (threshold 0.5)",
        f"latent distribution differs (MMD² {got['mmd2']:.3g}, permutation p 0.0099 <= 0.02)"]


def test_in_high_dimension_the_noise_floor_is_taken_off_the_mean_shift():
    # 64-d, 100 new rows: two samples of one distribution have means ~sqrt(64/100) = 0.8 SD apart
    raw, debiased = [], []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        got = latent_drift(rng.standard_normal((2000, 64)), rng.standard_normal((100, 64)), permutations=0,
                           max_rows=100)
        raw.append(got["mean_shift_sd_raw"])
        debiased.append(got["mean_shift_sd"])
        assert got["mmd_p_value"] is None
    assert min(raw) > 0.6
    assert np.median(debiased) < 0.2 and max(debiased) < 0.5


def test_mmd2_is_the_unbiased_estimate_with_the_median_bandwidth():
    rng = np.random.default_rng(30)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((5, 3)) + 0.5
    got = latent_drift(x, y, permutations=0)
    z = np.concatenate([x, y])
    dists = [np.linalg.norm(z[i] - z[j]) for i, j in itertools.combinations(range(11), 2)]
    h = float(np.median(dists))

    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * h * h))
    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(a, b) for a in x for b in y) / 30
    assert got["bandwidth"] == pytest.approx(h)
    assert got["mmd2"] == pytest.approx(xx + yy - 2 * xy)
    # the batched form used for the permutations agrees with indexing the kernel per labelling
    kz = np.array([[k(a, b) if i != j else 0.0 for j, b in enumerate(z)] for i, a in enumerate(z)])
    labels = np.zeros((11, 4), dtype=bool)
    for p in range(4):
        labels[rng.permutation(11)[:6], p] = True
    for p, value in enumerate(mmd2_batch(kz, labels)):
        a, b = np.flatnonzero(labels[:, p]), np.flatnonzero(~labels[:, p])
        direct = kz[np.ix_(a, a)].sum() / 30 + kz[np.ix_(b, b)].sum() / 20 - 2 * kz[np.ix_(a, b)].mean()
        assert value == pytest.approx(direct)


def test_subsampling_is_deterministic_for_a_seed(latent_ref):
    cur = latents(250, seed=13)
    a = latent_drift(latent_ref, cur, permutations=19, seed=7, max_rows=100)
    assert a == latent_drift(latent_ref, cur, permutations=19, seed=7, max_rows=100)
    b = latent_drift(latent_ref, cur, permutations=19, seed=8, max_rows=100)
    assert a["mmd2"] != b["mmd2"]
    assert a["mean_shift_sd"] == b["mean_shift_sd"]  # the mean shift uses every row
    assert a["rows_used"] == {"reference": 100, "current": 100} and a["n_reference"] == 600
    assert a["mmd_p_value"] * 20 == pytest.approx(round(a["mmd_p_value"] * 20))  # (1 + k) / (1 + 19)


@pytest.mark.parametrize(("ref", "cur", "options", "match"), [
    (np.zeros((5, 3)), np.zeros((5, 4)), {}, "reference has D = 3 but current has D = 4"),
    (np.zeros(5), np.zeros((5, 4)), {}, r"reference must be 2-D \(n, D\), got shape \(5,\)"),
    (np.ones((5, 3)), np.ones((1, 3)), {}, "current has 1 rows; drift needs at least 2 per side"),
    (np.ones((5, 3)), np.array([[0, 0, 0], [0, np.nan, 0], [np.inf, 0, 0]]), {},
     r"current has 2 rows with NaN or infinite values \(first at row 1\)"),
    ([["a", "b"], ["c", "d"]], np.ones((2, 2)), {}, "reference must be an \\(n, D\\) array of numbers"),
    (np.ones((5, 3)), np.ones((5, 3)), {"permutations": -1}, "permutations must be an integer >= 0"),
    (np.ones((5, 3)), np.ones((5, 3)), {"permutations": 2.5}, "permutations must be an integer >= 0"),
    (np.ones((5, 3)), np.ones((5, 3)), {"max_rows": 1}, "max_rows must be an integer >= 2"),
    (np.ones((5, 3)), np.ones((5, 3)), {"seed": -3}, "seed must be an integer >= 0"),
])
def test_bad_latent_inputs_are_refused(ref, cur, options, match):
    with pytest.raises(DataError, match=match):
        latent_drift(ref, cur, **options)


# --- verdict ----------------------------------------------------------------------------------


def test_verdict_lines_from_hand_made_results():
    clinical = {"features": [
        {"feature": "age", "test": "ks", "drifted": True, "p_value": 1e-6, "p_adjusted": 1e-5, "effect": 0.84,
         "effect_measure": "smd", "note": None},
        {"feature": "sex", "test": "chi2", "drifted": False, "p_value": 0.4, "p_adjusted": 0.8, "effect": 0.02,
         "effect_measure": "tvd", "note": None, "unseen_levels": {}},
    ]}
    latent = {"mean_shift_sd": 0.84, "mmd2": 0.0123, "mmd_p_value": 0.5, "permutations": 200}
    got = drift_verdict(clinical, latent, max_latent_shift_sd=0.5, mmd_alpha=0.01)
    assert got == {"drift": True, "checked": ["clinical", "latent"], "reasons": [
        "clinical: age drifted (KS p_adj 1e-05, smd 0.84)",
        "latent mean moved 0.84 reference SDs (threshold 0.5)"]}
    assert drift_verdict(None, None, max_latent_shift_sd=0.5, mmd_alpha=0.01) == {
        "drift": False, "reasons": [], "checked": []}


@pytest.mark.parametrize(("clinical", "latent", "options", "match"), [
    (None, None, {"max_latent_shift_sd": 0}, "max_latent_shift_sd must be a finite number > 0"),
    (None, None, {"max_latent_shift_sd": float("inf")}, "max_latent_shift_sd must be a finite number > 0"),
    (None, None, {"mmd_alpha": 1.5}, r"mmd_alpha must be in \(0, 1\)"),
    ({"drifted": []}, None, {}, "clinical lacks features; pass clinical_drift's result or None"),
    (None, {"mmd2": 0.1}, {}, "latent lacks mean_shift_sd, mmd_p_value, permutations"),
    (None, {"mean_shift_sd": 0.1, "mmd2": 0.0, "mmd_p_value": 0.5, "permutations": 50}, {"mmd_alpha": 0.01},
     r"mmd_alpha 0.01 is below the smallest p-value 0.0196 that 50 permutations can give; .*permutations >= 99"),
])
def test_bad_verdict_inputs_are_refused(clinical, latent, options, match):
    kwargs = {"max_latent_shift_sd": 0.5, "mmd_alpha": 0.02, **options}
    with pytest.raises(DataError, match=match):
        drift_verdict(clinical, latent, **kwargs)
