"""Attribute directions from labelled latents: the least-squares fit the demo's age grid uses."""

from __future__ import annotations

import numpy as np
import pytest

from embedding.attributes import least_squares_direction


def test_recovers_the_direction_a_linear_attribute_was_made_from() -> None:
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(40, 5)).astype(np.float32)
    b = np.array([0.5, -1.0, 0.0, 2.0, 0.25])
    d = least_squares_direction(latents, 60.0 + latents @ b)  # the intercept is not part of the direction
    assert d.dtype == np.float32 and d.shape == (5,)
    np.testing.assert_allclose(d, b, atol=1e-4)


def test_fewer_latents_than_dimensions_give_the_minimum_norm_direction() -> None:
    rng = np.random.default_rng(1)
    latents = rng.normal(size=(6, 20))
    values = rng.normal(size=6)
    d = least_squares_direction(latents, values).astype(np.float64)
    centred = latents - latents.mean(axis=0)
    np.testing.assert_allclose(centred @ d, values - values.mean(), atol=1e-4)  # an exact fit
    # minimum norm: nothing along directions the centred latents do not span
    _, _, vt = np.linalg.svd(centred)
    assert np.abs(vt[6:] @ d).max() < 1e-4


def test_a_constant_attribute_has_no_direction() -> None:
    latents = np.random.default_rng(2).normal(size=(10, 4))
    assert not least_squares_direction(latents, np.full(10, 42.0)).any()


@pytest.mark.parametrize(("latents", "values", "match"), [
    (np.zeros((5, 3)), np.zeros(4), r"latents must be \(N, D\) and values \(N,\), got \(5, 3\) and \(4,\)"),
    (np.zeros(5), np.zeros(5), r"latents must be \(N, D\)"),
    (np.zeros((1, 3)), np.zeros(1), "at least 2 latents, got 1"),
    (np.array([[0.0, np.nan], [1.0, 2.0]]), np.zeros(2), "must be finite"),
    (np.zeros((2, 2)), np.array([1.0, np.inf]), "must be finite"),
])
def test_bad_arguments_are_refused(latents, values, match) -> None:
    with pytest.raises(ValueError, match=match):
        least_squares_direction(latents, values)
