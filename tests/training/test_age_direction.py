"""training.age_direction: a ridge age direction with nested held-out R^2 and a shuffled-label control.

The old least-squares direction interpolated any values with fewer patients than dimensions
(in-sample R^2 = 1 on noise); these tests pin that the new one finds a planted signal, admits
there is none in noise, and refuses bad input in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from ground.errors import DataError
from training.age_direction import AgeDirection, age_direction


def _planted(n: int = 160, d: int = 24, *, seed: int = 3, noise: float = 0.5):
    rng = np.random.default_rng(seed)
    scales = np.linspace(0.5, 2.0, d)                 # unequal latent scales, like real latents
    x = rng.normal(size=(n, d)) * scales
    true = rng.normal(size=d)
    true /= np.linalg.norm(true)
    signal = x @ true
    y = 50.0 + 10.0 * (signal / signal.std() + noise * rng.normal(size=n))
    return x, y, true


@pytest.fixture(scope="module")
def planted():
    x, y, true = _planted()
    return x, y, true, age_direction(x, y, shuffles=20, bootstrap=200, seed=0)


@pytest.fixture(scope="module")
def noise():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(40, 64)), rng.uniform(20, 80, size=40)   # N = 40 < D = 64, nothing to find
    return x, y, age_direction(x, y, shuffles=20, bootstrap=200, seed=0)


def test_a_planted_signal_is_found_held_out_and_beats_the_shuffled_control(planted):
    x, y, true, res = planted
    assert isinstance(res, AgeDirection)
    assert res.n == 160 and res.folds == 5 and len(res.fold_alphas) == 5
    lo, hi = res.r2.ci
    assert lo > 0.5 and lo <= res.r2.value <= hi
    assert lo > res.shuffled.interval[1]
    assert res.shuffled.mean < 0.1
    assert res.shuffled.p_value == pytest.approx(1 / 21)
    d = res.direction.astype(np.float64)
    assert res.direction.dtype == np.float32 and res.direction.shape == (24,)
    cosine = abs(d @ true) / (np.linalg.norm(d) * np.linalg.norm(true))
    assert cosine > 0.8


def test_the_direction_is_the_ridge_coefficients_on_the_raw_latent_scale(planted):
    x, y, _, res = planted
    coef = Ridge(alpha=res.alpha).fit(x, y).coef_
    np.testing.assert_allclose(res.direction, coef, rtol=1e-4, atol=1e-6)
    # moving a latent by t * direction moves the fitted value by t * |direction|^2
    t = 0.3
    moved = (x[0] + t * coef) @ coef - x[0] @ coef
    assert moved == pytest.approx(t * float(coef @ coef))


def test_pure_noise_with_fewer_patients_than_dimensions_shows_no_held_out_signal(noise):
    x, y, res = noise
    assert res.r2.value <= 0.05
    assert res.r2.ci[0] < 0.0
    assert res.shuffled.p_value > 0.05
    assert res.r2.value <= res.shuffled.interval[1] + 0.05


def test_the_old_least_squares_direction_fitted_the_same_noise_perfectly(noise):
    """The regression the new direction removes: in-sample R^2 = 1 on values that are pure noise."""
    x, y, _ = noise
    # the minimum-norm least-squares fit of values on the centred latents (what embedding.attributes did)
    b, *_ = np.linalg.lstsq(x - x.mean(axis=0), y - y.mean(), rcond=None)
    fitted = y.mean() + (x - x.mean(axis=0)) @ b
    r2_in_sample = 1.0 - ((y - fitted) ** 2).sum() / ((y - y.mean()) ** 2).sum()
    assert r2_in_sample > 0.999


def test_same_seed_same_result_and_to_dict_is_json_ready(noise):
    x, y, res = noise
    again = age_direction(x, y, shuffles=20, bootstrap=200, seed=0)
    np.testing.assert_array_equal(again.direction, res.direction)
    assert again.r2 == res.r2 and again.shuffled == res.shuffled
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["n"] == 40 and d["folds"] == 5 and len(d["direction"]) == 64
    assert set(d["r2"]) == {"value", "ci"} and set(d["shuffled"]) >= {"mean", "interval", "p_value"}


def test_no_shuffles_and_no_bootstrap_give_empty_controls_not_errors():
    x, y, _ = _planted(n=30, d=5)
    res = age_direction(x, y, shuffles=0, bootstrap=0, folds=3)
    assert res.shuffled.p_value == 1.0 and res.shuffled.r2s == ()
    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["shuffled"]["mean"] is None and d["r2"]["ci"] == [None, None]


@pytest.mark.parametrize(("latents", "values", "kwargs", "match"), [
    (np.zeros((20, 4, 1)), np.arange(20.0), {}, r"latents must be \(N, D\)"),
    (np.zeros((20, 4)), np.arange(19.0), {}, r"same N"),
    (np.random.default_rng(0).normal(size=(9, 4)), np.arange(9.0), {}, r"too few for 5-fold"),
    (np.full((20, 4), np.nan), np.arange(20.0), {}, r"finite"),
    (np.random.default_rng(0).normal(size=(20, 4)), np.r_[np.arange(19.0), np.inf], {}, r"finite"),
    (np.random.default_rng(0).normal(size=(20, 4)), np.full(20, 42.0), {}, r"constant"),
    (np.random.default_rng(0).normal(size=(20, 4)), np.arange(20.0), {"folds": 1}, r"folds must be .*>= 2"),
    (np.random.default_rng(0).normal(size=(20, 4)), np.arange(20.0), {"shuffles": -1}, r"shuffles must be"),
    (np.random.default_rng(0).normal(size=(20, 4)), np.arange(20.0), {"bootstrap": -5}, r"bootstrap must be"),
    (np.random.default_rng(0).normal(size=(20, 4)), np.arange(20.0), {"alphas": [0.0, 1.0]}, r"alphas"),
])
def test_bad_input_is_one_line_data_error_saying_how_to_fix_it(latents, values, kwargs, match):
    with pytest.raises(DataError, match=match) as info:
        age_direction(latents, values, **kwargs)
    assert "\n" not in str(info.value)
