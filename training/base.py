"""What every survival model here shares: a fitted preprocessor, a log-risk function, the
Breslow baseline, and the training cohort's risk distribution (for percentiles)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ground.errors import DataError
from ground.types import check_survival_target
from training.baseline import breslow, survival_at
from training.preprocess import Preprocessor


class SurvivalModel:
    """Base class. Subclasses set `kind` and implement `_fit_matrix` and `_log_risk_matrix`."""

    kind = "base"
    needs_latent = False
    penalised = True  # unpenalised models get the events-per-feature check

    def __init__(self, preprocessor: Preprocessor, *, seed: int = 0) -> None:
        self.preprocessor = preprocessor
        self.seed = seed
        self.baseline_times_: np.ndarray | None = None
        self.baseline_cumhaz_: np.ndarray | None = None
        self.train_risk_sorted_: np.ndarray | None = None

    # -- subclass hooks --------------------------------------------------------------
    def _fit_matrix(self, X: np.ndarray, time: np.ndarray, event: np.ndarray) -> None:
        raise NotImplementedError

    def _log_risk_matrix(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- public ----------------------------------------------------------------------
    def fit(self, df: pd.DataFrame, *, min_events_per_feature: float = 0.0) -> SurvivalModel:
        """Fit on a training frame (covariates + time_days + event)."""
        from training.preprocess import check_events_per_feature

        time, event = check_survival_target(df["time_days"].to_numpy(), df["event"].to_numpy(),
                                            what=f"{self.kind} training target")
        X = self.preprocessor.fit(df).transform(df, what="training data")
        if not self.penalised:
            check_events_per_feature(int(event.sum()), X.shape[1], minimum=min_events_per_feature, model=self.kind)
        self._fit_matrix(X, time, event)
        lr = self._log_risk_matrix(X)
        self.set_baseline(time, event, lr)
        return self

    def set_baseline(self, time: np.ndarray, event: np.ndarray, log_risk: np.ndarray) -> None:
        self.baseline_times_, self.baseline_cumhaz_ = breslow(time, event, log_risk)
        self.train_risk_sorted_ = np.sort(log_risk)

    def predict_risk(self, df: pd.DataFrame) -> np.ndarray:
        """(n,) log relative hazard; higher means shorter expected survival."""
        return self._log_risk_matrix(self.preprocessor.transform(df))

    def _not_fitted(self) -> DataError:
        return DataError(f"{self.kind}: the model is not fitted; fit it before predicting")

    def survival_from_risk(self, log_risk: np.ndarray, days: np.ndarray) -> np.ndarray:
        if self.baseline_times_ is None or self.baseline_cumhaz_ is None:
            raise self._not_fitted()
        return survival_at(self.baseline_times_, self.baseline_cumhaz_, log_risk, days)

    def predict_survival(self, df: pd.DataFrame, days: np.ndarray) -> np.ndarray:
        """(n, len(days)) survival probabilities."""
        return self.survival_from_risk(self.predict_risk(df), days)

    def risk_percentile(self, log_risk: np.ndarray) -> np.ndarray:
        """Share (0-100) of the training cohort with a lower or equal risk.

        "Equal" allows a relative 1e-9: the same patient's risk can differ in its last bits with the
        batch it was computed in (BLAS blocking), and must not move a rank because of it.
        """
        ref = self.train_risk_sorted_
        if ref is None:
            raise self._not_fitted()
        tol = 1e-9 * max(1.0, float(np.abs(ref).max())) if len(ref) else 0.0
        return 100.0 * np.searchsorted(ref, np.asarray(log_risk) + tol, side="right") / len(ref)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "n_features": self.preprocessor.n_features,
                "needs_latent": self.needs_latent}
