"""Retention: how much of a reference model's signal above chance a model keeps.

The demo's oracle compares the Coxnet on the recovered latents with the same Coxnet on the
true latents (same frozen test split): the pixel -> latent round trip can only lose signal,
so the ratio of their C-indices above chance says how much of it projection keeps. The
cross-fitted retentions against the Bayes ceiling, with paired CIs, are
training.crossfit.ceiling_formulas.
"""

from __future__ import annotations

import math


def retention_vs_oracle(c_model: float | None, c_oracle: float | None) -> float | None:
    """(C_model - 0.5) / (C_oracle - 0.5).

    None where it is undefined: either C-index missing (None, or NaN where a test split had
    no comparable pairs), or an oracle no better than chance (a ratio over a gain <= 0 would
    be infinite or flip its sign). Raises ValueError for a C-index outside [0, 1].
    """
    for name, c in (("c_model", c_model), ("c_oracle", c_oracle)):
        if c is not None and not math.isnan(c) and not 0.0 <= c <= 1.0:
            raise ValueError(f"retention_vs_oracle: {name} = {c:g} is not a C-index (it lies in [0, 1])")
    if c_model is None or c_oracle is None or math.isnan(c_model) or math.isnan(c_oracle):
        return None
    gain = c_oracle - 0.5
    return (c_model - 0.5) / gain if gain > 0 else None
