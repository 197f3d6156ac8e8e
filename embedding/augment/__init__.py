"""Adaptive discriminator augmentation (ADA, Karras et al. 2020): the random draws of the augmentation
pipeline (:mod:`embedding.augment.params`), their differentiable application to images
(:mod:`embedding.augment.pipeline`) and the controller of their probability
(:mod:`embedding.augment.controller`). Pure functions and a small state object; no training loop.
"""

from __future__ import annotations

from embedding.augment.controller import MODES, P_MAX, AdaController
from embedding.augment.params import (
    ALL_OPS,
    BLIT_OPS,
    COLOR_OPS,
    DEFAULT_OPS,
    GEOM_OPS,
    OP_GROUPS,
    AugmentParams,
    resolve_ops,
    sample_params,
)
from embedding.augment.pipeline import apply_params, augment, blit, recolor, resample

__all__ = [
    "ALL_OPS", "BLIT_OPS", "COLOR_OPS", "DEFAULT_OPS", "GEOM_OPS", "MODES", "OP_GROUPS", "P_MAX",
    "AdaController", "AugmentParams", "apply_params", "augment", "blit", "recolor", "resample",
    "resolve_ops", "sample_params",
]
