"""Fitting and evaluating one training: frames in, fitted models and the results table out.

    fitted = fit_and_evaluate(df, params=params, split=ws.artifacts_dir / "splits" / "test_split.json")
    fitted.table1                     # one row per evaluated model, metrics with 95% CIs

Every check on the input runs first (training.frame); then the frozen split, every configured
model on the training part, the late fusion on the members' out-of-fold risks, and each
reported model's evaluation on the test part. Nothing here talks to MLflow: recording the
result (runs, logged models, registration) is training.record's, on whatever Fitted it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ground.types import check_survival_target
from training.base import SurvivalModel
from training.frame import has_latent, validate_training_frame
from training.metrics import Evaluation, evaluate
from training.models import factory
from training.splits import FrozenSplit, split_frame
from training.table1 import table_row

SERVED = "fusion"  # the late fusion: the model a server scores with


@dataclass(frozen=True)
class Fitted:
    """One training's fitted models and their evaluation on the test part of `split`.

    models: every fitted model in fitting order: training.models that fit the data, then fusion
    members not among them, then the fusion (SERVED) when there are members.
    evaluations: the reported models (training.models that fit the data, then the fusion), in
    table order; members fitted only for the fusion are not evaluated.
    """

    split: FrozenSplit
    train_df: pd.DataFrame
    test_df: pd.DataFrame
    models: dict[str, SurvivalModel]
    evaluations: dict[str, Evaluation]
    table1: pd.DataFrame
    health_direction: np.ndarray | None  # the reported coxnet_latent's risk direction (raw latent scale)
    has_latent: bool

    @property
    def fusion_only(self) -> list[str]:
        """Models fitted only as fusion members."""
        return [m for m in self.models if m not in self.evaluations]


def evaluate_model(model: SurvivalModel, train_df: pd.DataFrame, test_df: pd.DataFrame, *, params: Any,
                   bootstrap: int | None = None) -> Evaluation:
    """training.metrics.evaluate of `model` on test_df (censoring weights from train_df);
    bootstrap None: params.evaluation.bootstrap."""
    risk = model.predict_risk(test_df)
    return evaluate(train_time=train_df["time_days"].to_numpy(), train_event=train_df["event"].to_numpy(),
                    time=test_df["time_days"].to_numpy(), event=test_df["event"].to_numpy(), risk=risk,
                    survival=lambda days: model.survival_from_risk(risk, days),
                    horizons=params.training.horizons_days,
                    groups=test_df["cancer_type"].to_numpy() if "cancer_type" in test_df else None,
                    bootstrap=params.evaluation.bootstrap if bootstrap is None else bootstrap,
                    seed=params.evaluation.seed)


def fit_and_evaluate(df: pd.DataFrame, *, params: Any, split: FrozenSplit | Path | None = None,
                     data_versions: Mapping[str, str] | None = None, base: str | None = None,
                     progress: Callable[[str], None] | None = None) -> Fitted:
    """Validate, split, fit every configured model and the fusion, evaluate; see the module docstring.

    Args:
        df: one row per patient (training.frame); its index is ignored.
        params: ground.config.Params (training, evaluation, cohort).
        split: the test patients: a FrozenSplit; or the path of the frozen split file, read when
            it exists and otherwise drawn (training.seed, training.test_fraction) and written
            there; or None: drawn and written nowhere.
        data_versions: recorded in a newly drawn split.
        base: the cohort base naming the clinical covariates (default: params.cohort.base when
            the frame has its columns, else inferred from dtypes).
        progress: called with one line as each model's fit and evaluation starts (counts of all).

    Raises:
        DataError (one line): bad input (training.frame.validate_training_frame), a split that
            does not fit the data, or a model that cannot be fitted. Nothing is written when the
            input is rejected.
    """
    df = df.reset_index(drop=True)
    numeric, categorical, model_names, members = validate_training_frame(df, params=params, base=base)
    t = params.training
    frozen, path = (split, None) if isinstance(split, FrozenSplit) else (None, split)
    train_idx, test_idx, frozen = split_frame(df, test_fraction=t.test_fraction, seed=t.seed, path=path,
                                              data_versions={k: str(v) for k, v in (data_versions or {}).items()},
                                              split=frozen)
    train_df, test_df = df.iloc[train_idx].reset_index(drop=True), df.iloc[test_idx].reset_index(drop=True)
    _, train_event = check_survival_target(train_df["time_days"].to_numpy(), train_df["event"].to_numpy(),
                                           what="training part of the split")
    factories = {m: factory(m, t, numeric=numeric, categorical=categorical) for m in {*model_names, *members}}
    models: dict[str, SurvivalModel] = {}
    order = [*model_names, *[m for m in members if m not in model_names]]
    reported = [*model_names, *([SERVED] if members else [])]
    steps = len(order) + (1 if members else 0) + len(reported)
    say = progress or (lambda line: None)
    for i, name in enumerate(order, 1):
        say(f"training: fitting {name} on {len(train_df)} patients ({i}/{steps})")
        models[name] = factories[name]().fit(train_df, min_events_per_feature=t.min_events_per_feature)
    if members:
        say(f"training: fitting the fusion of {', '.join(members)} ({len(order) + 1}/{steps})")
        from training.fusion import FusionModel, out_of_fold_risks

        oof = out_of_fold_risks(train_df, {m: factories[m] for m in members}, folds=t.fusion_folds,
                                seed=t.seed, min_events_per_feature=t.min_events_per_feature)
        fusion = FusionModel({m: models[m] for m in members}, alpha=t.coxph_alpha, seed=t.seed)
        models[SERVED] = fusion.fit_stage2(oof, train_df["time_days"].to_numpy(float), train_event,
                                           min_events_per_feature=t.min_events_per_feature)
    evaluations = {}
    for i, name in enumerate(reported, steps - len(reported) + 1):
        say(f"training: evaluating {name} on {len(test_df)} test patients with a bootstrap ({i}/{steps})")
        evaluations[name] = evaluate_model(models[name], train_df, test_df, params=params)
    table = pd.DataFrame([table_row(name, models[name], evaluations[name], len(train_df)) for name in reported])
    coxnet = models.get("coxnet_latent") if "coxnet_latent" in model_names else None
    return Fitted(split=frozen, train_df=train_df, test_df=test_df, models=models, evaluations=evaluations,
                  table1=table, health_direction=getattr(coxnet, "health_direction", None), has_latent=has_latent(df))
