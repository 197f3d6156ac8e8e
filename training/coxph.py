"""Linear Cox proportional hazards on clinical covariates (scikit-survival)."""

from __future__ import annotations

import numpy as np

from training.base import SurvivalModel
from training.preprocess import Preprocessor


class CoxPHModel(SurvivalModel):
    kind = "coxph"
    penalised = False

    def __init__(self, preprocessor: Preprocessor, *, alpha: float, seed: int = 0) -> None:
        super().__init__(preprocessor, seed=seed)
        self.alpha = alpha
        self.coef_: np.ndarray | None = None

    def _fit_matrix(self, X: np.ndarray, time: np.ndarray, event: np.ndarray) -> None:
        from sksurv.linear_model import CoxPHSurvivalAnalysis
        from sksurv.util import Surv

        est = CoxPHSurvivalAnalysis(alpha=self.alpha, ties="efron", n_iter=200)
        try:
            est.fit(X, Surv.from_arrays(event, time))
        except (ValueError, np.linalg.LinAlgError) as exc:
            from ground.errors import DataError

            raise DataError(f"coxph: the Cox fit failed ({str(exc).splitlines()[0]}); "
                            "covariates may be collinear or separate the outcome: raise training.coxph_alpha "
                            "or drop covariates") from None
        self.coef_ = np.asarray(est.coef_, dtype=np.float64)

    def _log_risk_matrix(self, X: np.ndarray) -> np.ndarray:
        return X @ self.coef_
