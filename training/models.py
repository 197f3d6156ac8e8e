"""Model names used in params.yaml (training.models, training.fusion_members) -> constructors."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ground.errors import ConfigError
from training.base import SurvivalModel
from training.coxnet import CoxnetModel
from training.coxph import CoxPHModel
from training.deepsurv import DeepSurvModel
from training.preprocess import Preprocessor

if TYPE_CHECKING:
    from ground.config import TrainingParams

MODEL_NAMES = ("coxph_clinical", "deepsurv_clinical", "coxnet_latent", "deepsurv_latent")
FEATURES = {"coxph_clinical": "clinical", "deepsurv_clinical": "clinical", "coxnet_latent": "latent",
            "deepsurv_latent": "latent", "fusion": "latent + clinical"}


def uses_latent(name: str) -> bool:
    return name.endswith("_latent")


def factory(name: str, training: TrainingParams, *, numeric: tuple[str, ...], categorical: tuple[str, ...]
            ) -> Callable[[], SurvivalModel]:
    """A zero-argument constructor of an unfitted model (a fresh preprocessor each call)."""
    t = training
    if name == "coxph_clinical":
        return lambda: CoxPHModel(Preprocessor(numeric, categorical), alpha=t.coxph_alpha, seed=t.seed)
    if name == "coxnet_latent":
        return lambda: CoxnetModel(Preprocessor(use_latent=True), l1_ratio=t.coxnet_l1_ratio,
                                   alpha_min_ratio=t.coxnet_alpha_min_ratio, folds=t.coxnet_cv_folds, seed=t.seed)
    if name in ("deepsurv_clinical", "deepsurv_latent"):
        latent = name == "deepsurv_latent"
        return lambda: DeepSurvModel(
            Preprocessor(() if latent else numeric, () if latent else categorical, use_latent=latent),
            hidden=t.deepsurv_hidden, dropout=t.deepsurv_dropout, lr=t.deepsurv_lr,
            weight_decay=t.deepsurv_weight_decay, epochs=t.deepsurv_epochs, batch_size=t.deepsurv_batch_size,
            val_fraction=t.deepsurv_val_fraction, patience=t.deepsurv_patience, seed=t.seed)
    raise ConfigError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
