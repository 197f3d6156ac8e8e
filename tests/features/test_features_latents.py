"""The one w+ reduction: one 512-d feature latent per photo, whatever the projection space."""

from __future__ import annotations

import numpy as np
import pytest

from features.latents import feature_latents


def test_z_and_w_latents_pass_through_as_float32():
    lat = np.arange(6, dtype=np.float64).reshape(2, 3)
    out = feature_latents(lat, space="w")
    assert out.dtype == np.float32 and out.shape == (2, 3)
    np.testing.assert_array_equal(out, lat.astype(np.float32))


def test_w_plus_latents_become_their_layer_mean():
    layers = np.stack([np.full((4, 3), i, dtype=np.float32) + np.arange(4)[:, None] for i in range(2)])
    out = feature_latents(layers, space="w+")  # (2 photos, 4 layers, 3 dims)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, [[1.5] * 3, [2.5] * 3])


@pytest.mark.parametrize(("shape", "space", "match"), [
    ((2, 4, 3), "w", r"w latents must be \(N, d\); got shape \(2, 4, 3\)"),
    ((2, 3), "w+", r"w\+ latents must be \(N, num_ws, d\); got shape \(2, 3\)"),
    ((2, 3), "s", "unknown projection space 's'"),
])
def test_latents_that_do_not_fit_their_space_are_refused(shape, space, match):
    with pytest.raises(ValueError, match=match):
        feature_latents(np.zeros(shape), space=space)
