"""Attribute directions fitted from labelled latents (the demo's age edit).

The health attribute comes from a survival model (training.pyfunc.health_direction_of); an
attribute with a value per latent, such as age at the photo, gets its direction from a
least-squares fit of that value on the latents. Moving along it changes the fitted value
fastest, which is what editing (embedding.editing.edit_grid) shows.
"""

from __future__ import annotations

import numpy as np


def least_squares_direction(latents: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The coefficients b of values ≈ a + latents @ b, as (D,) float32.

    With fewer latents than dimensions (a demo cohort: hundreds of 512-d latents) the fit is
    underdetermined and the minimum-norm b is returned, the one that uses no direction the
    data do not support. Values that do not vary give the zero vector (no direction).
    Raises ValueError for shapes that do not match (latents (N, D), values (N,)), fewer
    than two latents, or non-finite entries.
    """
    x = np.asarray(latents)
    y = np.asarray(values, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"latents must be (N, D) and values (N,), got {x.shape} and {y.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"a direction needs at least 2 latents, got {x.shape[0]}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("latents and values must be finite (no NaN or infinity)")
    # centring both sides fits the intercept a, so b alone is the direction
    coef, *_ = np.linalg.lstsq(x - x.mean(axis=0), y - y.mean(), rcond=None)
    return np.asarray(coef, dtype=np.float32)
