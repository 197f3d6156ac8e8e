"""The one rule that turns projected latents into the feature-store latent: one vector per photo.

The face_latent feature view, the latent contract and every survival model read one 512-d
vector per photo. A projection in "z" or "w" gives that vector directly. A "w+" projection gives
one w per synthesis layer, (num_ws, w_dim) per photo; its feature latent is the mean over the
layers, which is the `w` the projection reports (embedding.projection.ProjectionResult.w) and a
point in the same space as a "w" latent, so models trained on either read it alike. The
per-layer latents stay in the `facesurv project` table's `latent_layers` column for editing.
"""

from __future__ import annotations

import numpy as np

# embedding.projection.SPACES, not imported: that module brings torch, and this one is numpy only
SPACES = ("z", "w", "w+")


def feature_latents(latents: np.ndarray, *, space: str) -> np.ndarray:
    """(N, d) float32 feature latents from a projection's latents.

    Args:
        latents: (N, d) for "z" and "w"; (N, num_ws, d) for "w+".
        space: the projection space the latents were found in.
    Raises:
        ValueError: an unknown space, or latents whose shape does not fit it.
    """
    if space not in SPACES:
        raise ValueError(f"unknown projection space {space!r}; use one of {', '.join(SPACES)}")
    arr = np.asarray(latents, dtype=np.float32)
    want = 3 if space == "w+" else 2
    if arr.ndim != want:
        shape = "(N, num_ws, d)" if space == "w+" else "(N, d)"
        raise ValueError(f"{space} latents must be {shape}; got shape {arr.shape}")
    return arr.mean(axis=1, dtype=np.float32) if space == "w+" else arr
