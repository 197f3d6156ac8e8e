"""Late fusion ("combined" in the paper): a second-stage Cox model on member risk scores.

The second stage must not learn from risks the members produced on their own training
patients (those are over-optimistic), so its inputs are out-of-fold risks: each member is
refitted on K-1 folds and scores the held-out fold. At prediction time the members fitted
on the whole training set supply the risks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ground.errors import DataError
from ground.types import check_survival_target
from training.base import SurvivalModel
from training.preprocess import Preprocessor


def out_of_fold_risks(df: pd.DataFrame, factories: dict[str, Callable[[], SurvivalModel]], *, folds: int,
                      seed: int, min_events_per_feature: float) -> pd.DataFrame:
    """(n, members) out-of-fold log-risks, seeded folds stratified by event."""
    from sklearn.model_selection import StratifiedKFold

    _, event = check_survival_target(df["time_days"].to_numpy(), df["event"].to_numpy(), what="fusion target")
    k = min(folds, int(event.sum()), int((~event).sum()) if (~event).any() else folds)
    if k < 2:
        raise DataError(f"fusion: {int(event.sum())} events are too few for {folds}-fold out-of-fold risks; "
                        "add patients or lower training.fusion_folds")
    oof = pd.DataFrame(index=df.index, columns=list(factories), dtype=np.float64)
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    # A member that passed the events-per-feature check on the whole training part has, by
    # construction, only (k-1)/k of those events in a fold; the refits only supply stacking
    # inputs, so the check is scaled to the fold's share rather than failing the fusion.
    fold_minimum = min_events_per_feature * (k - 1) / k
    for tr, va in skf.split(np.zeros(len(df)), event):
        part = df.iloc[tr]
        for name, make in factories.items():
            member = make().fit(part, min_events_per_feature=fold_minimum)
            oof.iloc[va, oof.columns.get_loc(name)] = member.predict_risk(df.iloc[va])
    return oof


class FusionModel(SurvivalModel):
    kind = "fusion"
    penalised = False

    def __init__(self, members: dict[str, SurvivalModel], *, alpha: float, seed: int = 0) -> None:
        super().__init__(Preprocessor(), seed=seed)
        self.members = members
        self.alpha = alpha
        self.needs_latent = any(m.needs_latent for m in members.values())
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.coef_: np.ndarray | None = None

    def fit_stage2(self, oof: pd.DataFrame, time: np.ndarray, event: np.ndarray, *,
                   min_events_per_feature: float) -> FusionModel:
        """Fit the second stage on out-of-fold member risks (columns named like `members`)."""
        from sksurv.linear_model import CoxPHSurvivalAnalysis
        from sksurv.util import Surv

        from training.preprocess import check_events_per_feature

        time, event = check_survival_target(time, event, what="fusion target")
        R = oof[list(self.members)].to_numpy(dtype=np.float64)
        check_events_per_feature(int(event.sum()), R.shape[1], minimum=min_events_per_feature, model="fusion")
        self.mean_ = R.mean(axis=0)
        sd = R.std(axis=0)
        self.scale_ = np.where(sd > 1e-12, sd, 1.0)
        Z = (R - self.mean_) / self.scale_
        est = CoxPHSurvivalAnalysis(alpha=self.alpha, ties="efron").fit(Z, Surv.from_arrays(event, time))
        self.coef_ = np.asarray(est.coef_, dtype=np.float64)
        # baseline on out-of-fold scores: calibrated for patients the members have not seen
        self.set_baseline(time, event, Z @ self.coef_)
        return self

    def member_risks(self, df: pd.DataFrame) -> np.ndarray:
        return np.column_stack([m.predict_risk(df) for m in self.members.values()])

    def predict_risk(self, df: pd.DataFrame) -> np.ndarray:
        return ((self.member_risks(df) - self.mean_) / self.scale_) @ self.coef_

    def describe(self):
        d = super().describe()
        d.update(members=list(self.members), weights=[round(float(c), 4) for c in self.coef_],
                 n_features=len(self.members))
        return d
